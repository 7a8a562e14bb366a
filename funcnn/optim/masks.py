"""Masks: choose leaves for weight decay (``weight_decay_mask=``) or training (``masked``).

A mask is either a bool pytree shaped like params or a ``callable(path, leaf) -> bool``
where ``path`` is the dotted key path, e.g. ``"2.weight"``.

    >>> import funcnn as fn, numpy as np
    >>> params = {"0": {"weight": np.ones((2, 3)), "bias": np.zeros(2)}}
    >>> fn.optim.masks.resolve(fn.optim.ndim_at_least(2), params)
    {'0': {'weight': True, 'bias': False}}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from funcnn import tree
from funcnn.optim.base import Mask, Optimizer, State, check_mask_arg
from funcnn.types import Params


def ndim_at_least(n: int) -> Callable[[str, np.ndarray], bool]:
    """The mask that selects leaves with ``ndim >= n``.

    ``ndim_at_least(2)`` selects weight matrices and conv kernels but not biases or norm
    scales: the usual choice for ``weight_decay_mask``.

    Example:
        >>> import funcnn as fn
        >>> opt = fn.optim.adamw(1e-3, weight_decay_mask=fn.optim.ndim_at_least(2))
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"ndim_at_least: n must be an int >= 0, got {n!r}")
    n = int(n)

    def mask(path: str, leaf: np.ndarray) -> bool:
        return np.ndim(leaf) >= n

    mask.__qualname__ = f"ndim_at_least({n})"
    return mask


def resolve(mask: Mask, params: Params, name: str = "mask") -> Params:
    """The bool pytree shaped like ``params`` that ``mask`` stands for.

    A callable is called as ``mask(path, leaf)`` at every leaf; a tree must have the key
    paths of ``params`` (else :class:`~funcnn.errors.StructureError`). Every value must
    be a bool (``np.bool_`` included), else TypeError naming the key path.
    """
    if callable(mask):
        resolved = tree.map_with_path(lambda path, leaf: mask(path, leaf), params)
    else:
        tree.assert_same_structure(params, mask, names=("params", name))
        resolved = tree.map(lambda p, m: m, params, mask)
    return tree.map_with_path(lambda path, m: _as_bool(name, path, m), resolved)


def _as_bool(name: str, path: str, m: Any) -> bool:
    if not isinstance(m, (bool, np.bool_)):
        raise TypeError(f"{name} at {path!r} must be a bool, got {m!r} ({type(m).__name__})")
    return bool(m)


def decay_rates(weight_decay: float, mask: Mask | None, params: Params) -> Params:
    """Per-leaf weight decay: ``weight_decay`` where ``mask`` is True, else ``0.0``."""
    if mask is None:
        return tree.map(lambda p: weight_decay, params)
    selected = resolve(mask, params, "weight_decay_mask")
    return tree.map(lambda m: weight_decay if m else 0.0, selected)


def decay_rule(weight_decay: float, mask: Mask | None) -> Callable[[Params], float | Params]:
    """``decay_of(params)``: ``weight_decay`` for every leaf without a mask, else the
    per-leaf :func:`decay_rates` (an :class:`~funcnn.optim.base.ElementwiseRule`'s)."""
    if mask is None:
        return lambda params: weight_decay
    return lambda params: decay_rates(weight_decay, mask, params)


def masked(opt: Optimizer, trainable: Mask) -> Optimizer:
    """Train only the leaves where ``trainable`` is True; freeze the rest.

    A frozen leaf gets no update, no weight decay and no change to its moments: the
    returned params and state hold exactly the values (the same arrays) that were
    passed in. The state is ``opt``'s state, so ``masked(opt, ...)`` and ``opt`` share
    one state layout and a state can move between them (freeze, then unfreeze). The
    step count is shared, so a leaf unfrozen later has Adam bias corrections for the
    total step count.

    Grads must still cover every leaf (zeros are fine for frozen ones). For now the
    inner update is computed for all leaves and the frozen results are dropped.
    ``opt`` may be composite (``chain``, ``accumulate``, ``ema``): every per-leaf entry
    of its nested states keeps its frozen leaves too. A ``clip_grad_norm`` step inside
    sees every leaf's grads: pass zeros for the frozen ones to clip by the norm of the
    trainable grads alone.

    Args:
        opt: The optimizer to apply to the trainable leaves.
        trainable: A bool pytree shaped like params, or ``callable(path, leaf) -> bool``.

    Returns:
        An :class:`Optimizer` with the same ``init`` as ``opt``.

    Example:
        >>> import funcnn as fn, numpy as np
        >>> params = {"body": {"w": np.ones((2, 2))}, "head": {"w": np.ones((2, 1))}}
        >>> opt = fn.optim.masked(fn.optim.adam(1e-2), lambda path, leaf: path.startswith("head"))
        >>> state = opt.init(params)
        >>> new, state = opt.update(fn.tree.full_like(params, 1.0), state, params)
        >>> new["body"]["w"] is params["body"]["w"], bool(new["head"]["w"][0, 0] < 1)
        (True, True)
    """
    if not isinstance(opt, Optimizer):
        raise TypeError(f"masked: opt must be an fn.optim.Optimizer, got {type(opt).__name__}")
    if trainable is None:
        raise TypeError(
            "masked: trainable must be a bool pytree or a callable(path, leaf) -> bool, got None"
        )
    check_mask_arg("masked", "trainable", trainable)

    def update(grads: Params, state: State, params: Params) -> tuple[Params, State]:
        keep_new = resolve(trainable, params, "trainable")
        new_params, new_state = opt.update(grads, state, params)
        pick = _picker(keep_new)
        paths = set(tree.paths(params))
        return pick(new_params, params), _pick_state(pick, new_state, state, paths)

    return Optimizer(opt.init, update)


def _picker(keep_new: Params) -> Callable[[Params, Params], Params]:
    """``pick(new, old)``: per leaf, ``new`` where ``keep_new`` is True, else ``old``."""
    return lambda new, old: tree.map(lambda m, n, o: n if m else o, keep_new, new, old)


def _pick_state(pick: Callable, new: State, old: State, paths: set) -> State:
    """``new`` with ``pick`` applied to each per-leaf entry (a dict with the key paths of
    params); other dicts are nested states (a chain's steps, a wrapper's ``"inner"``)."""
    picked = {}
    for k, v in new.items():
        if isinstance(v, dict) and v and set(tree.paths(v)) == paths:
            picked[k] = pick(v, old[k])
        elif isinstance(v, dict):
            picked[k] = _pick_state(pick, v, old[k], paths)
        else:
            picked[k] = v
    return picked
