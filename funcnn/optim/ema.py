"""``ema``: an exponential moving average of the params, kept in the optimizer state."""

from __future__ import annotations

import numpy as np

from funcnn import tree
from funcnn.errors import StructureError
from funcnn.layout import layout_of
from funcnn.optim.base import (
    Optimizer,
    State,
    call_update,
    check_decay_rate,
    check_like_params,
    check_params,
    check_wrapper_state,
    flat_of,
    leafwise,
    lr_entry,
    of_kind,
)
from funcnn.types import Params


def ema(opt: Optimizer, decay: float) -> Optimizer:
    r"""``opt``, plus an exponential moving average of the params it makes, in its state.

    After update :math:`t = 1, 2, \dots` of ``opt`` gives params :math:`p_t`, the
    average is updated with the debiased weight :math:`w_t`::

        w_t   = (1 - decay) / (1 - decay**t)
        ema_t = ema_{t-1} * (1 - w_t) + p_t * w_t

    That is ``optax.ema(decay, debias=True)`` applied to the params: the weighted
    mean :math:`\sum_{i \le t} (1 - d) d^{t-i} p_i / (1 - d^t)` of the params after
    each update, in which the initial params carry no weight (``ema_1 = p_1``;
    ``w_t = 1 / t`` while ``decay**t`` is near 1, so early on it is the plain mean).
    Before the first update the average is a copy of the initial params.

    Where the average lives: ``state["ema"]``, a tree shaped like params (each leaf
    with its dtype); :func:`ema_params` returns it, also from a state that wraps this
    one (``accumulate(ema(...))``, ``chain(..., ema(...))``). The state is::

        {"step":  updates averaged so far (t), 0-d int64,
         "lr":    the read-out of opt's state["lr"],
         "ema":   the averaged params,
         "inner": opt's state}

    Evaluate with ``model.apply(fn.optim.ema_params(state), x)``; train on with the
    params ``update`` returns. Wrap ``ema`` inside :func:`accumulate` so that the
    average sees one value per real update.

    Args:
        opt: The optimizer whose params to average.
        decay: The decay :math:`d` in [0, 1); 0 keeps the latest params. Typical:
            0.99 to 0.9999 (an average over roughly ``1 / (1 - decay)`` updates).

    Returns:
        An :class:`Optimizer` (a :class:`DonatingOptimizer` if ``opt`` is one; with
        ``donate=True`` the average is also written over the old one).

    Example:
        >>> import funcnn as fn, numpy as np
        >>> opt = fn.optim.ema(fn.optim.sgd(1.0), decay=0.5)
        >>> params = {"w": np.array([0.0])}
        >>> state = opt.init(params)
        >>> for _ in range(3):
        ...     params, state = opt.update({"w": np.array([-1.0])}, state, params)
        >>> params["w"], fn.optim.ema_params(state)["w"].round(6)    # 1, 2, 3 weighted 1:2:4
        (array([3.]), array([2.428571]))
    """
    if not isinstance(opt, Optimizer):
        raise TypeError(f"ema: opt must be an fn.optim.Optimizer (e.g. fn.optim.adam(1e-3)), "
                        f"got {type(opt).__name__}")
    decay = check_decay_rate("ema", "decay", decay)
    memo: list = [None]  # the last params layout seen (see flat_of)

    def init(params: Params) -> State:
        check_params("ema", params)
        inner = opt.init(params)
        return {"step": np.array(0, np.int64), **lr_entry(inner), "ema": _copy(params),
                "inner": inner}

    def update(grads: Params, state: State, params: Params, donate: bool
               ) -> tuple[Params, State]:
        step = check_wrapper_state("ema", state, "ema",
                                   "make it with fn.optim.ema(opt, decay).init(params)")
        try:
            new_params, inner = call_update(opt, grads, state["inner"], params, donate)
        except StructureError as e:
            raise StructureError(f"ema: {e}") from None
        t = step + 1
        w = (1.0 - decay) / (1.0 - decay**t)
        average = _lerp(state["ema"], new_params, params, w, donate, memo)
        return new_params, {"step": np.array(t, np.int64), **lr_entry(inner), "ema": average,
                            "inner": inner}

    return of_kind(opt, init, update)


def ema_params(state: State) -> Params:
    """The averaged params of an :func:`ema` optimizer's state: its ``state["ema"]``.

    Also finds them when the ``ema`` state is wrapped, under ``"inner"``
    (``accumulate(ema(...))``) or as a chain's last step (``chain(..., ema(...))``).
    The arrays themselves, not a copy.

    Example:
        >>> import funcnn as fn, numpy as np
        >>> opt = fn.optim.accumulate(fn.optim.ema(fn.optim.adam(1e-3), 0.999), every=2)
        >>> state = opt.init({"w": np.ones(2)})
        >>> fn.optim.ema_params(state) is state["inner"]["ema"]
        True
    """
    found = state
    while isinstance(found, dict):
        if "ema" in found and "inner" in found:
            return found["ema"]
        if "inner" in found:  # a wrapper: look inside
            found = found["inner"]
            continue
        positions = [k for k in found if k != "lr"]
        if positions and positions == [str(i) for i in range(len(positions))]:  # a chain
            found = found[positions[-1]]
            continue
        break
    got = sorted(state) if isinstance(state, dict) else type(state).__name__
    raise StructureError(f"ema_params: this optimizer state holds no average of the params "
                         f"(keys {got}); make the optimizer with fn.optim.ema(opt, decay)")


def _copy(params: Params) -> Params:
    """A copy of ``params`` (views into one fresh buffer when they can be)."""
    layout = layout_of(params)
    if layout is None:
        return tree.map(np.copy, params)
    return layout.views(np.concatenate([np.ravel(leaf) for leaf in layout.leaves(params)]))


def _lerp(average: Params, new: Params, params: Params, w: float, donate: bool,
          memo: list) -> Params:
    """``average * (1 - w) + new * w``, leaf by leaf; over ``average`` if donated."""
    found = flat_of(new, memo)
    if found is not None:
        layout, p = found
        e = layout.flat(average, False)
        if e is not None:
            out = e if donate and e.flags.writeable and not np.may_share_memory(e, p) else None
            out = np.multiply(e, 1.0 - w, out)
            np.add(out, np.multiply(p, w), out)
            return layout.views(out)
    check_like_params("ema", "state['ema']", average, params)
    (mixed,) = leafwise(lambda p, e: (e * (1.0 - w) + p * w,), new, average, outputs=1)
    return mixed


__all__ = ["ema", "ema_params"]
