"""``chain``: gradient transforms, then a rule, as one optimizer (optax's ``chain``)."""

from __future__ import annotations

from typing import Any

from funcnn.errors import StructureError
from funcnn.optim.base import (
    GradientTransform,
    Optimizer,
    State,
    call_update,
    lr_entry,
    of_kind,
)
from funcnn.types import Params


def chain(*steps: GradientTransform | Optimizer) -> Optimizer | GradientTransform:
    """Run gradient transforms one after the other, then (last) an optimizer, as one optimizer.

    ::

        grads_0 = grads
        grads_i = steps[i - 1].update(grads_{i-1}, state[str(i - 1)], params)[0]
        params', state[str(n - 1)] = steps[n - 1].update(grads_{n-1}, ..., params)

    The steps before the last are :class:`GradientTransform` s (``clip_grad_norm``,
    ``clip_grad_value``, ``add_decayed_weights``, or your own); the last is the rule
    that makes new params (``adam``, ``sgd``, ..., or a wrapped one such as ``masked``
    or ``ema``). A chain whose last step is an optimizer is an :class:`Optimizer` that
    ``fit`` and ``train_step`` take; it is a :class:`DonatingOptimizer` when its rule is
    one, and the rule still runs its fused flat update. A chain of transforms only is a
    :class:`GradientTransform` (a step for another chain).

    The state is a plain dict keyed by position, like ``serial``'s params::

        {"lr": <the rule's state["lr"]>,      # a read-out: the lr its next update uses
         "0": {}, ...,                          # each step's own state
         "<n-1>": {"step", "lr", "mu", "nu"}}   # the rule's state, with its step count

    so it saves with ``fn.save`` and resumes exactly. An error in step ``i`` names
    ``chain[i]``.

    Args:
        *steps: Zero or more gradient transforms, then an optimizer (or only transforms).

    Returns:
        An :class:`Optimizer` (a :class:`DonatingOptimizer` if the last step is one), or
        a :class:`GradientTransform` when every step is one.

    Example:
        >>> import funcnn as fn, numpy as np
        >>> opt = fn.optim.chain(fn.optim.clip_grad_norm(1.0), fn.optim.adam(0.1))
        >>> params = {"w": np.array([1.0, -2.0])}
        >>> state = opt.init(params)
        >>> list(state), list(state["1"])
        (['lr', '0', '1'], ['step', 'lr', 'mu', 'nu'])
        >>> params, state = opt.update({"w": np.array([30.0, -40.0])}, state, params)
        >>> params["w"].round(6), int(state["1"]["step"])
        (array([ 0.9, -1.9]), 1)
    """
    if not steps:
        raise TypeError("chain: give at least one step, e.g. "
                        "chain(fn.optim.clip_grad_norm(1.0), fn.optim.adam(1e-3))")
    for i, step in enumerate(steps):
        if isinstance(step, Optimizer) and i < len(steps) - 1:
            raise TypeError(
                f"chain: step {i} is an optimizer, which returns params, not grads; only the "
                "last step may be one (put the gradient transforms first, e.g. "
                "chain(fn.optim.clip_grad_norm(1.0), fn.optim.adam(1e-3)))"
            )
        if not isinstance(step, (Optimizer, GradientTransform)):
            raise TypeError(f"chain: step {i} must be a GradientTransform or, last, an "
                            f"Optimizer; got {_describe(step)}")
    keys = tuple(str(i) for i in range(len(steps)))
    names = tuple(f"chain[{i}]" for i in range(len(steps)))
    parts = tuple(zip(keys, steps, names))
    rule = steps[-1] if isinstance(steps[-1], Optimizer) else None
    transforms = parts[:-1] if rule is not None else parts
    last = keys[-1]
    lr = " and the read-out 'lr'" if rule is not None else ""

    def init(params: Params) -> State:
        state = {key: step.init(params) for key, step, _ in parts}
        return {**lr_entry(state[last]), **state}

    def transform(grads: Params, state: State, params: Params) -> tuple[Params, State]:
        """Check the chain's state and run the transforms: new grads, their new states."""
        if type(state) is not dict or len(state) - ("lr" in state) != len(keys) or any(
                key not in state for key in keys):
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise StructureError(
                f"chain: state must be a dict with the keys {list(keys)} (one per step){lr}, "
                f"got {got} (make it with this chain's init(params))"
            )
        new: dict = {}
        for key, step, name in transforms:
            try:
                grads, new[key] = step.update(grads, state[key], params)
            except StructureError as e:
                raise StructureError(f"{name} {e}") from None
        return grads, new

    if rule is None:
        return GradientTransform(init, transform)

    def update(grads: Params, state: State, params: Params, donate: bool
               ) -> tuple[Params, State]:
        grads, new = transform(grads, state, params)
        try:
            params, new[last] = call_update(rule, grads, state[last], params, donate)
        except StructureError as e:
            raise StructureError(f"{names[-1]} {e}") from None
        return params, {**lr_entry(new[last]), **new}

    return of_kind(rule, init, update)


def _describe(step: Any) -> str:
    """What a wrong chain step is, with the likely fix."""
    name = getattr(step, "__name__", None)
    if name == "clip_by_global_norm":
        return ("the function fn.optim.clip_by_global_norm, which clips one grads tree; "
                "its chain step is fn.optim.clip_grad_norm(max_norm)")
    if callable(step) and name:
        return f"the function {name} (call it to make the step, e.g. {name}(...))"
    return f"{type(step).__name__}"


__all__ = ["chain"]
