"""Normalization layers: ``BatchNorm`` (with running statistics as state) and ``LayerNorm``.

Both normalize ``x_hat = (x - mean) / sqrt(var + eps)`` over some axes (the biased
variance) and scale and shift it, ``y = x_hat * weight + bias``. Their backward shares
one rule: with ``g = dy * weight`` and means over the normalized axes,

    dx = (g - mean(g) - x_hat * mean(g * x_hat)) / sqrt(var + eps)
"""

from __future__ import annotations

import numbers
from typing import TypedDict

import numpy as np

from funcnn import kernel, random
from funcnn.checks import check_input
from funcnn.errors import ParamsError, ShapeError
from funcnn.kernel import require_state, state_leaf
from funcnn.types import Layer

class BatchNormState(TypedDict):
    """A BatchNorm layer's state (torch's buffers, names and layouts)."""

    running_mean: np.ndarray  # (C,) the layer's dtype, starts at 0
    running_var: np.ndarray  # (C,) the layer's dtype, starts at 1 (unbiased batch variances)
    num_batches_tracked: np.ndarray  # 0-d int64: the training batches seen


STATE_KEYS = tuple(BatchNormState.__annotations__)


def BatchNorm(num_features: int, *, eps: float = 1e-5, momentum: float | None = 0.1,
              dtype=np.float32, sync=None) -> Layer:
    r"""Batch normalization over the channels on axis 1 (``torch.nn.BatchNorm1d/2d``).

    Inputs ``(N, C)``, ``(N, C, L)`` or ``(N, C, H, W)``. Params ``{"weight": (C,),
    "bias": (C,)}`` (ones and zeros); state a :class:`BatchNormState`
    ``{"running_mean": (C,), "running_var": (C,), "num_batches_tracked": ()}`` (zeros,
    ones, int64 0), torch's names and layouts.

    Training (``train=True``, the default of ``vjp`` and ``fit``'s steps): normalize with
    the batch's statistics over every axis but 1 (the biased variance), and update the
    running ones with the unbiased variance::

        running_mean = (1 - m) * running_mean + m * mean
        running_var  = (1 - m) * running_var  + m * var * n / (n - 1)

    with ``m = momentum``, or ``m = 1 / num_batches_tracked`` (a cumulative average) when
    ``momentum=None``; ``num_batches_tracked`` counts the updates. Evaluation
    (``train=False``, the default of ``apply``): normalize with the running statistics.
    The state goes in and out explicitly::

        y, state = model.apply(params, x, state=state)              # evaluation
        value, grads, state = fn.value_and_grad(model, loss)(params, x, y, state=state)

    Training needs more than one value per channel (``n = N * L`` or ``N * H * W``
    above 1), as in torch.

    Data-parallel training (``fn.fit(..., comm=comm)``): by default every rank normalizes
    with the statistics of its own slice of the batch (as torch DDP's plain BatchNorm).
    ``sync=comm`` (an mpi4py communicator) makes the statistics those of the whole global
    batch, as ``torch.nn.SyncBatchNorm``: the forward sums ``x`` and the squared
    deviations over all ranks, and the backward the two sums its ``dx`` needs (three
    small Allreduces per step), so the result equals a one-process run.

    Example:
        >>> bn = fn.layers.BatchNorm(3)
        >>> params, state = bn.init(0), bn.init_state()
        >>> y, pullback, state = bn.vjp(params, np.ones((4, 3), np.float32), state=state)
        >>> int(state["num_batches_tracked"])
        1
    """
    _check_count(num_features, "BatchNorm", "num_features")
    eps = _check_eps(eps, "BatchNorm")
    if momentum is not None:
        if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0 <= momentum <= 1:
            raise ValueError(f"BatchNorm: momentum must be a number in [0, 1] or None, got {momentum!r}")
        momentum = float(momentum)
    dtype = _check_dtype(dtype, "BatchNorm")
    if sync is not None and not callable(getattr(sync, "Allreduce", None)):
        raise TypeError(f"BatchNorm: sync must be an mpi4py communicator (e.g. MPI.COMM_WORLD) or "
                        f"None, got {type(sync).__name__}")
    name = f"BatchNorm({num_features}{', sync' if sync is not None else ''})"
    channels = (num_features,)

    def init(key):
        random.as_key(key)
        return {"weight": np.ones(channels, dtype), "bias": np.zeros(channels, dtype)}

    def init_state():
        return {"running_mean": np.zeros(channels, dtype), "running_var": np.ones(channels, dtype),
                "num_batches_tracked": np.array(0, np.int64)}

    def check(params, x, key, state, mode):
        _affine_params(params, name, channels)
        x = check_input(x, name)
        if x.ndim not in (2, 3, 4) or x.shape[1] != num_features:
            raise ShapeError(f"expected (N, {num_features}), (N, {num_features}, L) or "
                             f"(N, {num_features}, H, W) with the channels on axis 1, got {x.shape}",
                             layer=name)
        require_state(state, name, "running statistics: " + ", ".join(STATE_KEYS))

    def forward(params, x, key, state, mode):
        weight, bias = params["weight"], params["bias"]
        mean = state_leaf(state, "running_mean", name, channels, dtype)
        var = state_leaf(state, "running_var", name, channels, dtype)
        count = state_leaf(state, "num_batches_tracked", name, (), np.int64)
        x = x.astype(weight.dtype, copy=False)
        axes = (0, *range(2, x.ndim))
        shape = (1, num_features) + (1,) * (x.ndim - 2)
        if mode.train:
            n = float(_total(np.array([x.size // num_features], np.float64), sync)[0])
            if n <= 1:
                raise ShapeError(f"expected more than 1 value per channel when training, got input "
                                 f"of shape {x.shape}; use a bigger batch or train=False", layer=name)
            if sync is None:
                batch_mean = x.mean(axis=axes)
                centered = x - batch_mean.reshape(shape)
                batch_var = np.mean(centered * centered, axis=axes)
            else:  # the statistics of the global batch: sums over every rank
                batch_mean = (_total(x.sum(axis=axes), sync) / n).astype(x.dtype)
                centered = x - batch_mean.reshape(shape)
                batch_var = (_total(np.sum(centered * centered, axis=axes), sync) / n).astype(x.dtype)
            inv = 1.0 / np.sqrt(batch_var + eps)
            x_hat = centered * inv.reshape(shape)
            m = momentum if momentum is not None else 1.0 / (int(count) + 1)
            state = {"running_mean": (1 - m) * mean + m * batch_mean,
                     "running_var": (1 - m) * var + m * batch_var * (n / (n - 1)),
                     "num_batches_tracked": np.asarray(count + 1)}
        else:
            inv = 1.0 / np.sqrt(var + eps)
            x_hat = (x - mean.reshape(shape)) * inv.reshape(shape)
        y = x_hat * weight.reshape(shape) + bias.reshape(shape)
        n = n if mode.train else None  # the batch statistics' count: their dx needs it
        return y, state, (x_hat, inv.reshape(shape), weight.reshape(shape), axes, n)

    def backward(saved, dy, out, need_dx):
        x_hat, inv, weight, axes, n = saved
        dy = dy.astype(x_hat.dtype, copy=False)
        grads = _affine_grads(dy, x_hat, axes, out)
        if not need_dx:
            return grads, None
        g = dy * weight
        if n is None:  # evaluation: the running statistics are constants
            return grads, g * inv
        if sync is None:
            return grads, _normalized_backward(g, x_hat, inv, axes)
        sums = _total(np.concatenate([g.sum(axis=axes), np.sum(g * x_hat, axis=axes)]), sync)
        mean_g, mean_gx = (sums / n).astype(g.dtype).reshape(2, *inv.shape)
        return grads, inv * (g - mean_g - x_hat * mean_gx)

    rule = kernel.Kernel(check, forward, backward, stateful=True, dx_memory="new")
    return kernel.layer(rule, init, name, init_state=init_state)


def LayerNorm(normalized_shape: int | tuple[int, ...], *, eps: float = 1e-5,
              dtype=np.float32) -> Layer:
    r"""Layer normalization over the last ``len(normalized_shape)`` axes (``torch.nn.LayerNorm``).

    Params ``{"weight": normalized_shape, "bias": normalized_shape}`` (ones and zeros).
    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` with the mean and the biased
    variance over those axes, per sample; no state, the same in training and evaluation.

    Example:
        >>> ln = fn.layers.LayerNorm(4)
        >>> ln.apply(ln.init(0), np.arange(8, dtype=np.float32).reshape(2, 4)).round(3)
        array([[-1.342, -0.447,  0.447,  1.342],
               [-1.342, -0.447,  0.447,  1.342]], dtype=float32)
    """
    shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) else normalized_shape
    if not isinstance(shape, tuple) or not shape:
        raise TypeError(f"LayerNorm: normalized_shape must be an int or a non-empty tuple of ints, "
                        f"got {normalized_shape!r}")
    for size in shape:
        _check_count(size, "LayerNorm", "normalized_shape")
    shape = tuple(int(size) for size in shape)
    eps = _check_eps(eps, "LayerNorm")
    dtype = _check_dtype(dtype, "LayerNorm")
    name = f"LayerNorm({shape[0] if len(shape) == 1 else shape})"
    axes = tuple(range(-len(shape), 0))

    def init(key):
        random.as_key(key)
        return {"weight": np.ones(shape, dtype), "bias": np.zeros(shape, dtype)}

    def check(params, x, key, state, mode):
        _affine_params(params, name, shape)
        x = check_input(x, name)
        if x.shape[x.ndim - len(shape):] != shape:
            raise ShapeError(f"expected (..., {', '.join(map(str, shape))}), got {x.shape}", layer=name)

    def forward(params, x, key, state, mode):
        weight, bias = params["weight"], params["bias"]
        x = x.astype(weight.dtype, copy=False)
        centered = x - x.mean(axis=axes, keepdims=True)
        inv = 1.0 / np.sqrt(np.mean(centered * centered, axis=axes, keepdims=True) + eps)
        x_hat = centered * inv
        return x_hat * weight + bias, state, (x_hat, inv, weight)

    def backward(saved, dy, out, need_dx):
        x_hat, inv, weight = saved
        dy = dy.astype(x_hat.dtype, copy=False)
        grads = _affine_grads(dy, x_hat, tuple(range(dy.ndim - len(shape))), out)
        if not need_dx:
            return grads, None
        return grads, _normalized_backward(dy * weight, x_hat, inv, axes)

    return kernel.layer(kernel.Kernel(check, forward, backward, dx_memory="new"), init, name)


# --- the math both share ------------------------------------------------------------------


def _affine_grads(dy, x_hat, axes: tuple, out) -> dict:
    """``dweight = sum(dy * x_hat)``, ``dbias = sum(dy)`` over ``axes`` (into ``out``)."""
    dweight = np.sum(dy * x_hat, axis=axes, out=None if out is None else out["weight"])
    dbias = np.sum(dy, axis=axes, out=None if out is None else out["bias"])
    return out if out is not None else {"weight": dweight, "bias": dbias}


def _normalized_backward(g, x_hat, inv, axes: tuple):
    """``dx`` of ``x_hat = (x - mean) * inv`` for ``g = dL/dx_hat``, means over ``axes``:
    ``inv * (g - mean(g) - x_hat * mean(g * x_hat))``."""
    return inv * (g - g.mean(axis=axes, keepdims=True)
                  - x_hat * np.mean(g * x_hat, axis=axes, keepdims=True))


def _total(local: np.ndarray, sync) -> np.ndarray:
    """``local`` summed over every rank of the communicator ``sync`` (itself when None),
    in float64."""
    local = np.ascontiguousarray(local, dtype=np.float64)
    if sync is None:
        return local
    total = np.empty_like(local)
    sync.Allreduce(local, total)
    return total


# --- checks -------------------------------------------------------------------------------


def _affine_params(params, name: str, shape: tuple) -> None:
    try:
        weight, bias = params["weight"], params["bias"]
    except (KeyError, TypeError, IndexError):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ParamsError(f"params must be {{'weight', 'bias'}}, got {got}; were these params made "
                          "by this model's init?", layer=name) from None
    for leaf_name, leaf in (("weight", weight), ("bias", bias)):
        if not isinstance(leaf, np.ndarray) or leaf.shape != shape or leaf.dtype.kind != "f":
            got = f"{leaf.shape} {leaf.dtype}" if isinstance(leaf, np.ndarray) else type(leaf).__name__
            raise ParamsError(f"params {leaf_name!r} must be a float array of shape {shape}, got "
                              f"{got}; were these params made by this model's init?", layer=name)


def _check_count(n, layer: str, arg: str) -> None:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"{layer}: {arg} must be a positive int, got {n!r}")


def _check_eps(eps, layer: str) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
        raise ValueError(f"{layer}: eps must be a number > 0, got {eps!r}")
    return float(eps)


def _check_dtype(dtype, layer: str) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"{layer}: dtype must be a floating type, got {dtype}")
    return dtype
