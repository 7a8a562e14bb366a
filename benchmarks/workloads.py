"""The benchmark workloads (T1-T6) and one builder per implementation.

An architecture is a small nested tuple ("spec") that every implementation is built
from, so all of them train the same network:

    ("linear", in, out) | ("relu",) | ("serial", *children)
    | ("residual", child) | ("block", features)      # the seed's ResNetBlock
    | ("conv2d", in, out, kernel, padding)           # square kernel, stride 1, NCHW/OIHW
    | ("maxpool2d", kernel) | ("flatten",)           # pool: stride = kernel, as torch
    | ("user",)                                      # funcnn only: a user-written identity

Every implementation starts from the same initial weights (funcnn's ``init`` with
key 0, copied across) and sees the same batches. A builder returns an :class:`Impl`:

- ``step(xb, yb)`` runs one training step (forward + loss + backward + update) on a
  batch already in the implementation's own format and returns the loss (in that
  format); it has returned only once the work is done (JAX is synchronised).
- ``convert(x, y)`` turns a numpy batch into that format (done once, before timing).
- ``epoch(rng)`` runs one epoch: shuffle + every batch (the last one may be short).
- ``reset()`` puts the weights and the optimizer state back to where they started, so
  every timed block covers the same training steps in every implementation (long runs
  drift into float32 denormals, which cost numpy and torch but not XLA: see PROFILE.md).

Missing rivals (torch, jax) are reported by :func:`rival_status` and skipped.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import FUNCNN_DONATED, FUNCNN_USER_LAYER, before_name

REPO_ROOT = Path(__file__).resolve().parent.parent
AIRFOIL_PATH = REPO_ROOT.parent / "shared" / "data" / "airfoil_self_noise.dat"

# --- architectures --------------------------------------------------------------------

RELU = ("relu",)
FLATTEN = ("flatten",)
USER = ("user",)  # an identity layer written as a user writes one (funcnn only)


def lin(n_in: int, n_out: int) -> tuple:
    return ("linear", n_in, n_out)


def serial(*children: tuple) -> tuple:
    return ("serial", *children)


def residual(child: tuple) -> tuple:
    return ("residual", child)


def block(features: int) -> tuple:
    return ("block", features)


def conv2d(n_in: int, n_out: int, kernel: int, padding: int = 0) -> tuple:
    return ("conv2d", n_in, n_out, kernel, padding)


def maxpool2d(kernel: int) -> tuple:
    return ("maxpool2d", kernel)


def mlp(widths: list[int]) -> tuple:
    """Linear-ReLU-...-Linear through ``widths`` (no activation after the last)."""
    layers: list[tuple] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        if i:
            layers.append(RELU)
        layers.append(lin(a, b))
    return serial(*layers)


def expand(spec: tuple) -> tuple:
    """Replace every ``block(f)`` by the residual(serial(Linear, ReLU, Linear)) it is."""
    kind = spec[0]
    if kind == "block":
        f = spec[1]
        return residual(serial(lin(f, f), RELU, lin(f, f)))
    if kind == "serial":
        return serial(*(expand(c) for c in spec[1:]))
    if kind == "residual":
        return residual(expand(spec[1]))
    return spec


def leaves(spec: tuple) -> list[tuple]:
    """The layers of ``spec`` (blocks expanded) in forward order, without serial/residual."""
    spec = expand(spec)
    kind = spec[0]
    if kind == "serial":
        return [leaf for c in spec[1:] for leaf in leaves(c)]
    if kind == "residual":
        return leaves(spec[1])
    return [spec]


def weight_shape(leaf: tuple) -> tuple[int, ...] | None:
    """torch's weight shape of a Linear ``(out, in)`` or Conv2d ``(out, in, k, k)``, else None."""
    if leaf[0] == "linear":
        return leaf[2], leaf[1]
    if leaf[0] == "conv2d":
        return leaf[2], leaf[1], leaf[3], leaf[3]
    return None


def weight_shapes(spec: tuple) -> list[tuple[int, ...]]:
    """The weight shape of every Linear and Conv2d, in forward order."""
    return [w for w in map(weight_shape, leaves(spec)) if w is not None]


def n_params(spec: tuple) -> int:
    return sum(math.prod(w) + w[0] for w in weight_shapes(spec))


def is_cnn(spec: tuple) -> bool:
    return any(leaf[0] == "conv2d" for leaf in leaves(spec))


def output_shape(leaf: tuple, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of ``leaf``'s output for an input of ``shape``."""
    kind = leaf[0]
    if kind == "linear":
        return (*shape[:-1], leaf[2])
    if kind == "conv2d":
        _, _, n_out, k, pad = leaf
        return (shape[0], n_out, *(size + 2 * pad - k + 1 for size in shape[2:]))
    if kind == "maxpool2d":
        return (*shape[:2], *(size // leaf[1] for size in shape[2:]))
    if kind == "flatten":
        return shape[0], math.prod(shape[1:])
    return shape  # relu, user


def layer_shapes(spec: tuple, shape: tuple[int, ...]) -> list[tuple[tuple, tuple, tuple]]:
    """``(leaf, input shape, output shape)`` of every layer for a batch of ``shape``
    (a residual's inner layers keep the shape, so threading it through the leaves is right)."""
    out = []
    for leaf in leaves(spec):
        out.append((leaf, shape, output_shape(leaf, shape)))
        shape = out[-1][2]
    return out


# --- workloads -------------------------------------------------------------------------


@dataclass
class Workload:
    key: str
    title: str
    spec: tuple
    loss: str  # "mse" or "ce"
    lr: float
    weight_decay: float
    batch: int
    make_data: Callable[[int | None], tuple[np.ndarray, np.ndarray, str]]
    n_samples: int | None = None  # None: the workload's own default
    extras: dict = field(default_factory=dict)
    sample_shape: tuple[int, ...] | None = None  # None: (the first Linear's in,)

    def data(self):
        return self.make_data(self.n_samples)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self.batch, *(self.sample_shape or weight_shapes(self.spec)[0][1:])

    @property
    def desc(self) -> str:
        """The architecture in a line: its Linears' widths for an MLP, every layer for a CNN."""
        if not is_cnn(self.spec):
            return "Linears " + " ".join(f"{i}-{o}" for o, i in weight_shapes(self.spec)) + ", ReLU"
        return "-".join(_leaf_desc(leaf) for leaf in leaves(self.spec))


def _leaf_desc(leaf: tuple) -> str:
    kind = leaf[0]
    if kind == "conv2d":
        return f"Conv2d({leaf[1]},{leaf[2]},{leaf[3]}" + (f",padding={leaf[4]})" if leaf[4] else ")")
    if kind == "linear":
        return f"Linear({leaf[1]},{leaf[2]})"
    if kind == "maxpool2d":
        return f"MaxPool2d({leaf[1]})"
    return {"relu": "ReLU", "flatten": "Flatten", "user": "UserIdentity"}[kind]


def sine_data(n: int | None):
    n = 5000 if n is None else n
    x = np.linspace(0, 2 * np.pi, n).reshape(-1, 1)
    return x, np.sin(x), f"sin(x) on {n} points of [0, 2pi] (as the tutorial)"


def airfoil_data(n: int | None):
    """The seed's airfoil split (50% train = 751 rows), standardized with train stats.

    The seed trains on raw features (frequency up to 20 kHz); we standardize x and y so
    that no implementation spends the benchmark on huge or non-finite numbers.
    """
    rng = np.random.default_rng(0)
    if AIRFOIL_PATH.exists():
        data = np.loadtxt(AIRFOIL_PATH)
        source = f"{AIRFOIL_PATH.name}, the tutorial's split: 50% train"
    else:
        m = 1503
        x = rng.standard_normal((m, 5))
        y = np.sin(x @ rng.standard_normal(5)) + 0.1 * rng.standard_normal(m)
        data = np.column_stack([x, y])
        source = "synthetic (airfoil file not found), 1503 rows, 50% train"
    idx = rng.permutation(data.shape[0])
    train = data[idx[: int(0.5 * data.shape[0])]]
    if n is not None:
        train = train[:n]
    x, y = train[:, :-1], train[:, -1:]
    x = (x - x.mean(0)) / x.std(0)
    y = (y - y.mean(0)) / y.std(0)
    return x, y, f"{source} -> {x.shape[0]} x {x.shape[1]}, standardized"


def wide_data(n: int | None):
    n = 8192 if n is None else n
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 784), dtype=np.float32).astype(np.float64)
    y = rng.integers(0, 10, n)
    return x, y, f"synthetic: {n} samples, N(0,1) features, uniform labels in [0, 10)"


def digits_data(n: int | None):
    import funcnn as fn

    x, y = fn.datasets.digits("train")
    x, y = (x, y) if n is None else (x[:n], y[:n])
    return x, y, f"fn.datasets.digits('train'): {x.shape[0]} UCI digits, 1 x 8 x 8, pixels / 16"


def mnist_like_data(n: int | None):
    n = 1024 if n is None else n
    rng = np.random.default_rng(0)
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, n)
    return x, y, (f"synthetic: {n} images 1 x 28 x 28, uniform pixels in [0, 1), uniform labels "
                  "in [0, 10)")


def workloads() -> dict[str, Workload]:
    return {
        "T1": Workload("T1", "sine-mlp", mlp([1, 16, 16, 1]), "mse", 0.01, 1e-6, 64, sine_data),
        "T2": Workload(
            "T2", "sine-resnet",
            serial(lin(1, 16), RELU, block(16), block(16), block(16), lin(16, 1)),
            "mse", 0.01, 1e-6, 64, sine_data,
        ),
        "T3": Workload(
            "T3", "airfoil",
            serial(
                lin(5, 8), RELU,
                residual(serial(lin(8, 16), RELU, block(16), RELU, lin(16, 8))),
                RELU, lin(8, 1),
            ),
            "mse", 1e-3, 1e-6, 16, airfoil_data,
        ),
        "T4": Workload(
            "T4", "wide-mlp", mlp([784, 1024, 1024, 10]), "ce", 1e-3, 0.0, 256, wide_data,
        ),
        "T5": Workload(
            "T5", "digits-cnn",
            serial(conv2d(1, 16, 3, 1), RELU, maxpool2d(2), conv2d(16, 32, 3, 1), RELU, maxpool2d(2),
                   FLATTEN, lin(128, 10)),
            "ce", 1e-3, 0.0, 64, digits_data, sample_shape=(1, 8, 8),
        ),
        "T6": Workload(
            "T6", "mnist-cnn",
            serial(conv2d(1, 32, 3), RELU, maxpool2d(2), conv2d(32, 64, 3), RELU, maxpool2d(2),
                   FLATTEN, lin(1600, 128), RELU, lin(128, 10)),
            "ce", 1e-3, 0.0, 128, mnist_like_data, sample_shape=(1, 28, 28),
        ),
    }


def scaling_workload(batch: int, width: int, n_batches: int = 4) -> Workload:
    """T4's shape with another batch size or hidden width (for the scaling sweep)."""
    return Workload(
        "scaling", f"784-{width}-{width}-10 batch {batch}", mlp([784, width, width, 10]), "ce",
        1e-3, 0.0, batch, wide_data, n_samples=batch * n_batches,
    )


# --- implementations -------------------------------------------------------------------


@dataclass
class Impl:
    name: str
    dtype: str
    step: Callable[[Any, Any], Any] | None
    convert: Callable[[np.ndarray, np.ndarray], tuple[Any, Any]]
    epoch: Callable[[np.random.Generator], None] | None
    to_float: Callable[[Any], float] = float
    note: str = ""
    reset: Callable[[], None] | None = None  # back to the initial weights and optimizer state


def initial_params(wl: Workload, seed: int = 0):
    """funcnn's params for the workload (float32), and its Linears' and Conv2ds' (W, b)
    in forward order (torch's layouts: every rival copies them from here)."""
    import funcnn as fn

    model = build_funcnn_model(wl.spec, np.float32)
    params = model.init(fn.random.key(seed))
    return params, list(_funcnn_weights(expand(wl.spec), params))


def _funcnn_weights(spec, params):
    kind = spec[0]
    if weight_shape(spec) is not None:
        yield params["weight"], params["bias"]
    elif kind == "serial":
        for i, child in enumerate(spec[1:]):
            yield from _funcnn_weights(child, params.get(str(i), {}))
    elif kind == "residual":
        yield from _funcnn_weights(spec[1], params)


def _epoch_numpy(step, x, y, batch):
    """A numpy epoch: permute, then every batch (slices are views, no copies)."""
    n = x.shape[0]

    def epoch(rng):
        perm = rng.permutation(n)
        xs, ys = x[perm], y[perm]
        for s in range(0, n, batch):
            step(xs[s:s + batch], ys[s:s + batch])

    return epoch


# funcnn ---------------------------------------------------------------------------------


def build_funcnn_model(spec, dtype, fn=None):
    """The spec's model from funcnn, or from ``fn`` (another revision's funcnn package)."""
    if fn is None:
        import funcnn as fn

    kind = spec[0]
    if kind == "linear":
        return fn.layers.Linear(spec[1], spec[2], dtype=dtype)
    if kind == "conv2d":
        return fn.layers.Conv2d(spec[1], spec[2], spec[3], padding=spec[4], dtype=dtype)
    if kind == "maxpool2d":
        return fn.layers.MaxPool2d(spec[1])
    if kind == "flatten":
        return fn.layers.Flatten()
    if kind == "relu":
        return fn.layers.ReLU()
    if kind == "user":
        return identity_user_layer(fn)
    if kind == "serial":
        return fn.serial(*(build_funcnn_model(c, dtype, fn) for c in spec[1:]))
    if kind == "residual":
        return fn.residual(build_funcnn_model(spec[1], dtype, fn))
    if kind == "block":
        return fn.layers.ResNetBlock(spec[1], dtype=dtype)
    raise ValueError(f"unknown spec {spec!r}")


def identity_user_layer(fn):
    """A do-nothing layer written as a user writes one: ``fn.Layer(init, apply, vjp)``
    with two-argument ``apply``/``vjp`` and no params (funcnn runs it as one opaque step)."""

    def init(key):
        return {}

    def apply(params, x):
        return x

    def vjp(params, x):
        def pullback(dy):
            return {}, dy
        return x, pullback

    return fn.Layer(init, apply, vjp, name="UserIdentity")


def with_user_layer(spec: tuple) -> tuple:
    """The serial ``spec`` with an identity user layer inserted after its first ReLU."""
    at = spec.index(RELU) + 1
    return (*spec[:at], USER, *spec[at:])


def funcnn_impl(wl: Workload, x, y, params0, *, donate: bool = False) -> Impl:
    """funcnn's step: ``fn.train_step`` (value_and_grad, then opt.update).

    ``donate=True`` lets each step write over the params and state it was given (the
    loop never reuses them); params0 itself is never written: the first update
    gathers it into fresh buffers, and only those are reused."""
    import funcnn as fn

    model = build_funcnn_model(wl.spec, np.float32)
    name, note = ("funcnn", "") if not donate else (
        FUNCNN_DONATED, "fn.train_step(..., donate=True): the update is written over the old params and state")
    return _train_step_impl(name, note, fn, model, wl, x, y, params0, donate=donate)


def funcnn_user_layer_impl(wl: Workload, x, y, params0) -> Impl:
    """funcnn's step on the same network with :func:`identity_user_layer` after the first
    ReLU: the same training run (the Linears keep their weights under shifted keys)."""
    import funcnn as fn

    model = build_funcnn_model(with_user_layer(wl.spec), np.float32)
    keys = fn.tree.flatten(model.init(fn.random.key(0)))
    params = fn.tree.unflatten(dict(zip(keys, fn.tree.flatten(params0).values(), strict=True)))
    note = "an identity fn.Layer(init, apply, vjp) (two-argument, {} params) after the first ReLU"
    return _train_step_impl(FUNCNN_USER_LAYER, note, fn, model, wl, x, y, params)


def funcnn_before_impl(wl: Workload, x, y, params0, before) -> Impl:
    """``fn.train_step`` of another revision's funcnn (:mod:`benchmarks.before`)."""
    model = build_funcnn_model(wl.spec, np.float32, before.fn)
    note = f"fn.train_step of commit {before.rev}'s funcnn (git archive, imported as {before.fn.__name__})"
    return _train_step_impl(before_name(before.rev), note, before.fn, model, wl, x, y, params0)


def funcnn_loss(fn, wl: Workload):
    """The workload's loss from the funcnn package ``fn``."""
    return fn.losses.mse if wl.loss == "mse" else fn.losses.softmax_cross_entropy


def _train_step_impl(name, note, fn, model, wl: Workload, x, y, params0, *, donate: bool = False) -> Impl:
    """One row: ``fn.train_step`` of the funcnn package ``fn`` on ``model``."""
    opt = fn.optim.adam(wl.lr, weight_decay=wl.weight_decay)
    train_step = fn.train_step(model, funcnn_loss(fn, wl), opt, donate=donate)
    state0 = opt.init(params0)
    params, state = params0, state0

    def step(xb, yb):
        nonlocal params, state
        value, params, state = train_step(params, state, xb, yb)
        return value

    def reset():
        nonlocal params, state
        params, state = params0, state0  # never written (see funcnn_impl)

    def convert(xb, yb):
        return xb.astype(np.float32), _targets(wl, yb, np.float32)

    xc, yc = convert(x, y)
    return Impl(name, "float32", step, convert, _epoch_numpy(step, xc, yc, wl.batch),
                reset=reset, note=note)


def _targets(wl, y, dtype):
    return y.astype(np.int64) if wl.loss == "ce" else y.astype(dtype)


# the seed's OOP code --------------------------------------------------------------------


def build_seed_model(spec):
    from benchmarks import seed_oop as S

    kind = spec[0]
    if kind == "linear":
        return S.Linear(spec[1], spec[2])
    if kind == "relu":
        return S.ReLU()
    if kind == "serial":
        return S.Sequential(*(build_seed_model(c) for c in spec[1:]))
    if kind == "residual":
        return S.SkipConnection(build_seed_model(spec[1]))
    if kind == "block":
        return S.ResNetBlock(spec[1])  # default activation: the seed's shared ReLU()
    raise ValueError(f"unknown spec {spec!r}")


def seed_impl(wl: Workload, x, y, weights) -> Impl:
    from benchmarks import seed_oop as S

    model = build_seed_model(wl.spec)
    params = model.parameters()
    for (w, b), (pw, pb) in zip(weights, zip(params[0::2], params[1::2])):
        pw.data = w.astype(np.float64)
        pb.data = b.astype(np.float64).reshape(1, -1)
    loss_fn = S.MSELoss() if wl.loss == "mse" else S.SoftmaxCrossEntropyLoss()
    optimizer = S.Adam(params, lr=wl.lr, weight_decay=wl.weight_decay)
    saved = [p.data.copy() for p in params]

    def reset():
        nonlocal optimizer
        for p, data in zip(params, saved):
            p.data = data.copy()
        optimizer = S.Adam(params, lr=wl.lr, weight_decay=wl.weight_decay)

    def step(xb, yb):  # the seed's training-loop body
        predictions = model.forward(xb)
        loss = loss_fn.forward(predictions, yb)
        grad_loss = loss_fn.backward()
        model.backward(grad_loss)
        optimizer.step()
        optimizer.zero_grad()
        return loss

    def convert(xb, yb):
        return xb.astype(np.float64), _targets(wl, yb, np.float64)

    xc, yc = convert(x, y)
    return Impl("tutorial OOP", "float64", step, convert, _epoch_numpy(step, xc, yc, wl.batch),
                note="gradients 1/batch too small (a bug of the tutorial), kept", reset=reset)


# torch ----------------------------------------------------------------------------------


def rival_status() -> dict[str, str | None]:
    """``{"torch": version or None, "jax": version or None}`` (imports them)."""
    status: dict[str, str | None] = {}
    try:
        import torch

        status["torch"] = torch.__version__
    except Exception:  # noqa: BLE001 - any import failure means "skip torch"
        status["torch"] = None
    try:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        import jax
        from jax.example_libraries import optimizers, stax  # noqa: F401

        status["jax"] = jax.__version__
    except Exception:  # noqa: BLE001
        status["jax"] = None
    return status


def build_torch_model(spec):
    import torch

    class Residual(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return x + self.inner(x)

    def build(spec):
        kind = spec[0]
        if kind == "linear":
            return torch.nn.Linear(spec[1], spec[2])
        if kind == "conv2d":
            return torch.nn.Conv2d(spec[1], spec[2], spec[3], padding=spec[4])
        if kind == "maxpool2d":
            return torch.nn.MaxPool2d(spec[1])
        if kind == "flatten":
            return torch.nn.Flatten()
        if kind == "relu":
            return torch.nn.ReLU()
        if kind == "serial":
            return torch.nn.Sequential(*(build(c) for c in spec[1:]))
        if kind == "residual":
            return Residual(build(spec[1]))
        raise ValueError(f"unknown spec {spec!r}")

    return build(expand(spec))


def torch_impl(wl: Workload, x, y, weights, *, fused: bool = False) -> Impl:
    import torch

    model = build_torch_model(wl.spec)
    params = list(model.parameters())
    with torch.no_grad():
        for (w, b), pw, pb in zip(weights, params[0::2], params[1::2]):
            pw.copy_(torch.from_numpy(w))
            pb.copy_(torch.from_numpy(b))
    kwargs = {"fused": True} if fused else {}
    opt = torch.optim.Adam(params, lr=wl.lr, weight_decay=wl.weight_decay, **kwargs)
    saved = [p.detach().clone() for p in params]

    def reset():
        nonlocal opt
        with torch.no_grad():
            for p, data in zip(params, saved):
                p.copy_(data)
        opt = torch.optim.Adam(params, lr=wl.lr, weight_decay=wl.weight_decay, **kwargs)
    if wl.loss == "mse":
        def loss_fn(pred, target):
            return 0.5 * torch.nn.functional.mse_loss(pred, target)
    else:
        loss_fn = torch.nn.functional.cross_entropy

    def step(xb, yb):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        return loss.detach()

    def convert(xb, yb):
        xt = torch.from_numpy(np.ascontiguousarray(xb, dtype=np.float32))
        yt = torch.from_numpy(_targets(wl, yb, np.float32))
        return xt, yt

    xt, yt = convert(x, y)
    n = xt.shape[0]

    def epoch(rng):
        perm = torch.randperm(n)
        xs, ys = xt[perm], yt[perm]
        for s in range(0, n, wl.batch):
            step(xs[s:s + wl.batch], ys[s:s + wl.batch])

    name = "torch eager, fused Adam" if fused else "torch eager"
    return Impl(name, "float32", step, convert, epoch, to_float=lambda v: float(v.item()),
                reset=reset)


# jax ------------------------------------------------------------------------------------


def build_stax(spec, weights_iter):
    """``(apply_fun, params)`` for the spec, params taken from funcnn's (W, b) in order."""
    import jax.numpy as jnp
    from jax.example_libraries import stax

    kind = spec[0]
    if kind == "linear":
        w, b = next(weights_iter)
        _, apply_fun = stax.Dense(spec[2])
        return apply_fun, (jnp.asarray(w.T), jnp.asarray(b))
    if kind == "conv2d":
        w, b = next(weights_iter)
        pad = [(spec[4], spec[4])] * 2
        _, apply_fun = stax.GeneralConv(("NCHW", "OIHW", "NCHW"), spec[2], (spec[3], spec[3]),
                                        padding=pad)
        return apply_fun, (jnp.asarray(w), jnp.asarray(b.reshape(1, -1, 1, 1)))
    if kind == "maxpool2d":
        window = (spec[1], spec[1])
        return stax.MaxPool(window, strides=window, spec="NCHW")[1], ()
    if kind == "flatten":
        return stax.Flatten[1], ()
    if kind == "relu":
        return stax.Relu[1], ()
    if kind == "serial":
        children = [build_stax(c, weights_iter) for c in spec[1:]]
        _, apply_fun = stax.serial(*((lambda rng, shape: (shape, ()), f) for f, _ in children))
        return apply_fun, tuple(p for _, p in children)
    if kind == "residual":
        inner_apply, inner_params = build_stax(spec[1], weights_iter)
        _, apply_fun = stax.serial(
            stax.FanOut(2),
            stax.parallel((lambda rng, shape: (shape, ()), inner_apply), stax.Identity),
            stax.FanInSum,
        )
        return apply_fun, ((), (inner_params, ()), ())
    raise ValueError(f"unknown spec {spec!r}")


def _jax_parts(wl: Workload, weights):
    import jax
    import jax.numpy as jnp
    from jax.example_libraries import optimizers

    apply_fun, params = build_stax(expand(wl.spec), iter(weights))
    if wl.loss == "mse":
        def loss(p, xb, yb):
            d = apply_fun(p, xb) - yb
            return 0.5 * jnp.mean(d * d)
    else:
        def loss(p, xb, yb):
            logp = jax.nn.log_softmax(apply_fun(p, xb))
            return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))

    opt_init, opt_update, get_params = optimizers.adam(wl.lr)
    wd = wl.weight_decay

    def step_body(i, opt_state, xb, yb):
        p = get_params(opt_state)
        value, g = jax.value_and_grad(loss)(p, xb, yb)
        if wd:  # coupled L2, as the seed, torch and funcnn
            g = jax.tree_util.tree_map(lambda gi, pi: gi + wd * pi, g, p)
        return opt_update(i, g, opt_state), value

    def convert(xb, yb):
        yt = yb.astype(np.int32) if wl.loss == "ce" else yb.astype(np.float32)
        return jnp.asarray(xb, dtype=jnp.float32), jnp.asarray(yt)

    return opt_init(params), step_body, convert


def jax_impl(wl: Workload, x, y, weights) -> Impl:
    import jax

    opt_state, step_body, convert = _jax_parts(wl, weights)
    opt_state0 = opt_state
    jit_step = jax.jit(step_body)
    i = 0

    def reset():
        nonlocal opt_state, i
        opt_state, i = opt_state0, 0

    def step(xb, yb):
        nonlocal opt_state, i
        opt_state, value = jit_step(i, opt_state, xb, yb)
        i += 1
        # One executable computes every output, and they become ready together; waiting
        # on the loss alone avoids walking the state tree (~25 µs for T2's 48 arrays).
        value.block_until_ready()
        return value

    # The epoch feeds numpy slices (what a numpy data pipeline hands over).
    xn = x.astype(np.float32)
    yn = y.astype(np.int32) if wl.loss == "ce" else y.astype(np.float32)
    return Impl("jax.jit step", "float32", step, convert, _epoch_numpy(step, xn, yn, wl.batch),
                note="stax + example_libraries.optimizers.adam, step under jax.jit", reset=reset)


def jax_scan_impl(wl: Workload, x, y, weights) -> Impl:
    """A whole epoch (gather, every full batch under lax.scan, the short tail) in one jit."""
    import jax
    import jax.numpy as jnp

    opt_state, step_body, convert = _jax_parts(wl, weights)
    xj, yj = convert(x, y)
    n, b = xj.shape[0], wl.batch
    full = n // b

    def run_epoch(i, state, perm):
        xs, ys = xj[perm], yj[perm]
        xf = xs[: full * b].reshape(full, b, *xs.shape[1:])
        yf = ys[: full * b].reshape(full, b, *ys.shape[1:])

        def body(carry, batch):
            j, s = carry
            s, value = step_body(j, s, *batch)
            return (j + 1, s), value

        (i, state), _ = jax.lax.scan(body, (i, state), (xf, yf))
        if n % b:
            state, _ = step_body(i, state, xs[full * b:], ys[full * b:])
            i = i + 1
        return i, state

    jit_epoch = jax.jit(run_epoch)
    counter = jnp.asarray(0, dtype=jnp.int32)
    opt_state0, counter0 = opt_state, counter

    def reset():
        nonlocal opt_state, counter
        opt_state, counter = opt_state0, counter0

    def epoch(rng):
        nonlocal opt_state, counter
        counter, opt_state = jit_epoch(counter, opt_state, rng.permutation(n).astype(np.int32))
        jax.block_until_ready(opt_state)

    return Impl("jax lax.scan epoch", "float32", None, convert, epoch,
                note="whole epoch compiled: one dispatch per epoch", reset=reset)


# the GEMM floor -------------------------------------------------------------------------


def gemm_dims(wl: Workload) -> list[tuple[int, int, int]]:
    """``(rows, inner, out)`` of every Linear and Conv2d, in forward order: its forward
    product is ``(rows, inner) @ (inner, out)``. A Linear: ``(batch, in, out)``; a Conv2d
    as im2col: ``(batch * out_h * out_w, in * k * k, out)``."""
    dims = []
    for leaf, _, y_shape in layer_shapes(wl.spec, wl.batch_shape):
        w = weight_shape(leaf)
        if w is not None:
            dims.append((math.prod(y_shape) // w[0], math.prod(w[1:]), w[0]))
    return dims


def gemm_floor_impl(wl: Workload, dtype=np.float32) -> Impl:
    """The GEMMs one step needs, at the same shapes and dtype, with numpy.

    Per Linear or Conv2d of :func:`gemm_dims` ``(rows, inner, out)``: forward
    ``(rows,inner)@(inner,out)`` and weight grad ``(out,rows)@(rows,inner)``; input grad
    ``(rows,out)@(out,inner)`` for every layer except the first (nobody needs d loss /
    d data). A convolution's are its im2col GEMMs, without building or scattering the
    columns. Results go into preallocated ``out=`` buffers, so this is the BLAS time
    alone: what no numpy implementation can beat.
    """
    rng = np.random.default_rng(1)
    dims = gemm_dims(wl)
    ws = [rng.standard_normal((o, i)).astype(dtype) for r, i, o in dims]
    xs = [rng.standard_normal((r, i)).astype(dtype) for r, i, o in dims]
    dys = [rng.standard_normal((r, o)).astype(dtype) for r, i, o in dims]
    ys = [np.empty((r, o), dtype) for r, i, o in dims]
    dws = [np.empty((o, i), dtype) for r, i, o in dims]
    dxs = [np.empty((r, i), dtype) for r, i, o in dims]
    matmul = np.matmul

    def step(xb=None, yb=None):
        for k in range(len(ws)):
            matmul(xs[k], ws[k].T, out=ys[k])
        for k in reversed(range(len(ws))):
            matmul(dys[k].T, xs[k], out=dws[k])
            if k:
                matmul(dys[k], ws[k], out=dxs[k])
        return 0.0

    n_gemms = 3 * len(dims) - 1
    return Impl("numpy GEMM floor", np.dtype(dtype).name, step, lambda xb, yb: (None, None), None,
                note=f"{n_gemms} GEMMs per step, BLAS only")


def gemm_flops(wl: Workload) -> float:
    """Floating-point operations of the GEMMs of one step (2 per multiply-add)."""
    macs = sum(r * i * o * (3 if k else 2) for k, (r, i, o) in enumerate(gemm_dims(wl)))
    return 2.0 * macs


def saved_activations(wl: Workload) -> int:
    """How many activations a step must keep for its backward: the input of every Linear,
    Conv2d and MaxPool2d (a ReLU's mask follows from its output, the next layer's
    input), and the logits (for the loss gradient)."""
    shapes = layer_shapes(wl.spec, wl.batch_shape)
    kept = sum(math.prod(x_shape) for leaf, x_shape, _ in shapes
               if leaf[0] in ("linear", "conv2d", "maxpool2d"))
    return kept + math.prod(shapes[-1][2])


def n_batches(n: int, batch: int) -> int:
    return math.ceil(n / batch)
