"""``accumulate``: gradient accumulation over micro-batches (optax's ``MultiSteps``)."""

from __future__ import annotations

import numbers

import numpy as np

from funcnn import tree
from funcnn.errors import StructureError
from funcnn.layout import layout_of
from funcnn.optim.base import (
    Optimizer,
    State,
    call_update,
    check_like_params,
    check_params,
    check_wrapper_state,
    flat_of,
    leafwise,
    lr_entry,
    of_kind,
)
from funcnn.types import Params


def accumulate(opt: Optimizer, *, every: int) -> Optimizer:
    r"""Update with the mean of the grads of ``every`` calls: gradient accumulation.

    The semantics of ``optax.MultiSteps(opt, every_k_schedule=every)``. Each call adds
    its grads to a running mean; every ``every``-th call hands the mean to ``opt``, and
    the calls in between return the params unchanged (the very arrays passed in)::

        n    = step % every                           (calls done in this cycle)
        acc  = acc + (grads - acc) / (n + 1)          (the mean of the cycle's grads)
        if n + 1 == every:   params, inner = opt.update(acc, inner, params);  acc = 0

    For a loss that is a mean over the batch (every funcnn loss), ``every``
    micro-batches of ``b`` samples then make the update of one batch of
    ``every * b`` samples, up to rounding, at the memory cost of a batch of ``b``.
    To clip the accumulated grads, accumulate a chain:
    ``accumulate(chain(clip_grad_norm(1.0), adam(1e-3)), every=4)``.

    The state is a plain dict::

        {"step":      calls so far (micro-batches), 0-d int64,
         "lr":        the read-out of opt's state["lr"] (the lr of its next update),
         "acc_grads": the running mean, shaped like params (zeros after an update),
         "inner":     opt's state; its "step" counts the real updates}

    Args:
        opt: The optimizer to update with the mean grads.
        every: Calls per update, an int >= 1 (1: ``opt`` itself, bit for bit).

    Returns:
        An :class:`Optimizer` (a :class:`DonatingOptimizer` if ``opt`` is one).

    Example:
        >>> import funcnn as fn, numpy as np
        >>> opt = fn.optim.accumulate(fn.optim.sgd(0.1), every=2)
        >>> params = {"w": np.array([1.0])}
        >>> state = opt.init(params)
        >>> same, state = opt.update({"w": np.array([1.0])}, state, params)
        >>> same is params
        True
        >>> params, state = opt.update({"w": np.array([3.0])}, state, params)
        >>> params["w"], int(state["step"]), int(state["inner"]["step"])
        (array([0.8]), 2, 1)
    """
    if not isinstance(opt, Optimizer):
        raise TypeError(f"accumulate: opt must be an fn.optim.Optimizer (e.g. "
                        f"fn.optim.adam(1e-3)), got {type(opt).__name__}")
    if isinstance(every, (bool, np.bool_)) or not isinstance(every, numbers.Integral):
        raise TypeError(f"accumulate: every must be an int >= 1, got {every!r} "
                        f"({type(every).__name__})")
    if every < 1:
        raise ValueError(f"accumulate: every must be an int >= 1, got {every}")
    every = int(every)
    memo: list = [None]  # the last grads layout seen (see flat_of)

    def init(params: Params) -> State:
        check_params("accumulate", params)
        inner = opt.init(params)
        return {"step": np.array(0, np.int64), **lr_entry(inner),
                "acc_grads": _zeros_like(params, memo), "inner": inner}

    def update(grads: Params, state: State, params: Params, donate: bool
               ) -> tuple[Params, State]:
        step = check_wrapper_state("accumulate", state, "acc_grads",
                                   "make it with fn.optim.accumulate(opt, every=...).init(params)")
        n, inner = step % every, state["inner"]
        keep = n + 1 < every  # not the cycle's last call: keep the mean, params unchanged
        acc = _running_mean(grads, state["acc_grads"], params, n, keep, memo)
        if keep:
            return params, {"step": np.array(step + 1, np.int64), **lr_entry(inner),
                            "acc_grads": acc, "inner": inner}
        try:
            params, inner = call_update(opt, acc, inner, params, donate)
        except StructureError as e:
            raise StructureError(f"accumulate: {e}") from None
        return params, {"step": np.array(step + 1, np.int64), **lr_entry(inner),
                        "acc_grads": _zeros_like(params, memo), "inner": inner}

    return of_kind(opt, init, update)


def _running_mean(grads: Params, acc: Params, params: Params, n: int, keep: bool,
                  memo: list) -> Params:
    """``acc + (grads - acc) / (n + 1)``, leaf by leaf, checked against ``params``.

    The mean of one (``n == 0``) is ``grads`` itself, or a copy of it to ``keep`` in the
    state (optax's ``0 + (grads - 0) / 1``, but for the sign of a zero)."""
    found = flat_of(grads, memo)
    if found is not None:
        layout, g = found
        a = layout.flat(acc, False)
        if a is not None and layout.match_any_order(params) is not None:
            if n == 0:
                return layout.views(g.copy()) if keep else grads
            out = np.subtract(g, a)
            np.divide(out, n + 1, out)
            return layout.views(np.add(a, out, out))
    check_params("accumulate", params)
    check_like_params("accumulate", "grads", grads, params)
    check_like_params("accumulate", "state['acc_grads']", acc, params)
    if n == 0:
        return tree.map(np.copy, grads) if keep else grads
    (mean,) = leafwise(lambda p, g, a: (a + (g - a) / (n + 1),), params, grads, acc, outputs=1)
    return mean


def _zeros_like(params: Params, memo: list) -> Params:
    """Zeros shaped like ``params``: views into one fresh buffer when they can be."""
    layout = memo[0]
    if layout is None or layout.match_any_order(params) is None:
        layout = layout_of(params)
    if layout is None:
        return tree.zeros_like(params)
    return layout.views(np.zeros(layout.size, layout.dtype))


__all__ = ["accumulate"]
