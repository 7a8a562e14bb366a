"""Gradient transforms: the steps of a :func:`funcnn.optim.chain` before its rule.

Each factory checks its arguments and returns a :class:`GradientTransform`, whose
``update(grads, state, params) -> (grads, state)`` returns new grads and never writes
the ones it is given. None of these keeps state: ``init`` returns ``{}``.

    >>> import funcnn as fn, numpy as np
    >>> opt = fn.optim.chain(fn.optim.clip_grad_norm(1.0), fn.optim.adam(1e-3))
    >>> params = {"w": np.array([1.0, -2.0])}
    >>> state = opt.init(params)
    >>> params, state = opt.update({"w": np.array([30.0, 40.0])}, state, params)

When the grads are one flat buffer (what ``fn.value_and_grad`` returns for built-in
layers), a transform works on the whole buffer at once and returns views into a fresh
one, so the rule after it still runs its fused flat update.
"""

from __future__ import annotations

import math

import numpy as np

from funcnn import tree
from funcnn.errors import StructureError
from funcnn.optim.base import (
    GradientTransform,
    Mask,
    State,
    check_like_params,
    check_mask_arg,
    check_nonnegative,
    decay_ranges,
    flat_of,
    l2,
    leafwise,
    with_decay,
)
from funcnn.optim.clip import clipped
from funcnn.optim.masks import decay_rates
from funcnn.types import Params


def clip_grad_norm(max_norm: float) -> GradientTransform:
    r"""The chain step that scales the grads so that their global l2 norm is at most ``max_norm``.

    The transform form of :func:`clip_by_global_norm` (which clips one grads tree now:
    ``clip_by_global_norm(grads, max_norm)``), with the same result bit for bit. With
    :math:`n = \sqrt{\sum_{\text{leaves}} \sum g^2}` (accumulated in float64)::

        grads' = grads * (max_norm / n)   if n > max_norm   else   grads

    ``optax.clip_by_global_norm(max_norm)``; like ``torch.nn.utils.clip_grad_norm_``
    but without torch's ``1e-6`` added to the norm. A non-finite norm is a ValueError
    naming the first bad key path.

    Args:
        max_norm: The largest allowed global norm, >= 0.

    Returns:
        A :class:`GradientTransform` with state ``{}``.

    Example:
        >>> import funcnn as fn
        >>> opt = fn.optim.chain(fn.optim.clip_grad_norm(1.0), fn.optim.adam(1e-3))
    """
    if isinstance(max_norm, dict):
        raise TypeError(
            "clip_grad_norm: max_norm must be a number, got a dict; clip_grad_norm(max_norm) "
            "makes a chain step: to clip a grads tree now, call "
            "fn.optim.clip_by_global_norm(grads, max_norm)"
        )
    max_norm = check_nonnegative("clip_grad_norm", "max_norm", max_norm)
    memo: list = [None]  # the last grads layout seen (see flat_of)

    def update(grads: Params, state: State, params: Params) -> tuple[Params, State]:
        check_empty("clip_grad_norm", state)
        found = flat_of(grads, memo)
        if found is None:
            return clipped("clip_grad_norm", grads, tree.global_norm(grads), max_norm), {}
        layout, flat = found
        # as fn.tree.global_norm: leaf by leaf, in float64, so the bits are the function's
        wide = flat.astype(np.float64, copy=False)
        total = 0.0
        for lo, hi in zip(layout.offsets, layout.offsets[1:]):
            part = wide[lo:hi]
            total += float(np.dot(part, part))
        norm = math.sqrt(total)
        if math.isfinite(norm) and norm > max_norm:  # one pass over the whole buffer
            return layout.views(np.multiply(flat, max_norm / norm)), {}
        return clipped("clip_grad_norm", grads, norm, max_norm), {}

    return GradientTransform(init_empty, update)


def clip_grad_value(max_value: float) -> GradientTransform:
    """The chain step that clips every gradient element to ``[-max_value, max_value]``.

    ``grads' = clip(grads, -max_value, max_value)``, element-wise; the same as
    ``torch.nn.utils.clip_grad_value_`` and ``optax.clip``. NaN stays NaN.

    Args:
        max_value: The largest allowed absolute value, >= 0.

    Returns:
        A :class:`GradientTransform` with state ``{}``.

    Example:
        >>> import funcnn as fn, numpy as np
        >>> clip = fn.optim.clip_grad_value(0.5)
        >>> clip.update({"w": np.array([-2.0, 0.1, 3.0])}, {}, None)[0]
        {'w': array([-0.5,  0.1,  0.5])}
    """
    max_value = check_nonnegative("clip_grad_value", "max_value", max_value)
    memo: list = [None]

    def update(grads: Params, state: State, params: Params) -> tuple[Params, State]:
        check_empty("clip_grad_value", state)
        found = flat_of(grads, memo)
        if found is None:
            if not isinstance(grads, dict):
                raise TypeError(f"clip_grad_value: grads must be a dict pytree, got "
                                f"{type(grads).__name__}")
            (clipped,) = leafwise(lambda g: (np.clip(g, -max_value, max_value),), grads,
                                  outputs=1)
            return clipped, {}
        layout, flat = found
        return layout.views(np.clip(flat, -max_value, max_value)), {}

    return GradientTransform(init_empty, update)


def add_decayed_weights(weight_decay: float, mask: Mask | None = None) -> GradientTransform:
    r"""The chain step that adds ``weight_decay * params`` to the grads: L2 weight decay.

    ::

        grads' = grads + weight_decay * params       (where ``mask`` is True)

    Before a rule this is *coupled* decay, as ``sgd(..., weight_decay=)`` and
    ``adam(..., weight_decay=)`` do it (and ``torch.optim``'s ``weight_decay=``): the
    rule rescales it like any gradient. ``chain(add_decayed_weights(wd), adam(lr))``
    is ``adam(lr, weight_decay=wd)`` bit for bit; use it to give weight decay to a rule
    that has none (``rmsprop``). For decoupled decay use :func:`adamw`. (In optax this
    step comes *after* ``scale_by_adam`` to make AdamW; here the rule is last.)

    Args:
        weight_decay: The L2 factor :math:`\lambda \ge 0`.
        mask: Which leaves decay: a bool pytree shaped like params or
            ``callable(path, leaf) -> bool``, e.g. ``fn.optim.ndim_at_least(2)``.
            Default: all leaves.

    Returns:
        A :class:`GradientTransform` with state ``{}``.

    Example:
        >>> import funcnn as fn
        >>> opt = fn.optim.chain(
        ...     fn.optim.add_decayed_weights(1e-4, mask=fn.optim.ndim_at_least(2)),
        ...     fn.optim.rmsprop(1e-3))
    """
    weight_decay = check_nonnegative("add_decayed_weights", "weight_decay", weight_decay)
    check_mask_arg("add_decayed_weights", "mask", mask)
    memo: list = [None]  # the last params layout seen (see flat_of)

    def update(grads: Params, state: State, params: Params) -> tuple[Params, State]:
        check_empty("add_decayed_weights", state)
        rates = weight_decay if mask is None else decay_rates(weight_decay, mask, params)
        found = flat_of(params, memo)
        g = None if found is None else found[0].flat(grads, False)
        if g is None:  # not one flat buffer (or grads unlike params: the check says where)
            check_like_params("add_decayed_weights", "grads", grads, params)
            if not isinstance(rates, dict):
                rates = tree.map(lambda p: weight_decay, params)
            (decayed,) = leafwise(lambda p, g, wd: (l2(g, p, wd),), params, grads, rates,
                                  outputs=1)
            return decayed, {}
        layout, p = found
        if isinstance(rates, dict):
            ranges = decay_ranges(layout, rates)
        else:
            ranges = ((0, layout.size, rates),) if rates else ()
        out = np.empty(layout.size, layout.dtype)
        decayed = with_decay(g, p, ranges, out)  # g itself when nothing decays
        return (layout.views(decayed) if decayed is out else grads), {}

    return GradientTransform(init_empty, update)


def init_empty(params: Params) -> State:
    """The state of a transform that keeps none: ``{}``."""
    return {}


def check_empty(where: str, state: State) -> None:
    """StructureError unless ``state`` is ``{}`` (the state of a stateless transform)."""
    if type(state) is not dict or state:
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise StructureError(f"{where}: state must be {{}} (it keeps none), got {got}")


__all__ = ["add_decayed_weights", "clip_grad_norm", "clip_grad_value"]
