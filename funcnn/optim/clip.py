"""Gradient clipping of one grads tree (the chain step is ``transforms.clip_grad_norm``)."""

from __future__ import annotations

import math

import numpy as np

from funcnn import tree
from funcnn.optim.base import check_nonnegative
from funcnn.types import Params


def clip_by_global_norm(grads: Params, max_norm: float) -> Params:
    r"""Scale ``grads`` down so that their global l2 norm is at most ``max_norm``.

    With :math:`n = \sqrt{\sum_{\text{leaves}} \sum g^2}` (accumulated in float64)::

        clipped = grads * (max_norm / n)   if n > max_norm   else   grads

    Below the threshold (zero norm included) the same tree is returned, unchanged; no
    division happens, so there is no NaN. Each leaf keeps its dtype. A non-finite norm
    (an inf or NaN gradient) is a ValueError naming the first bad key path, since no
    scaling can fix it.

    This clips one tree now. Its chain step, the same rule bit for bit, is
    :func:`funcnn.optim.clip_grad_norm`: ``fn.optim.chain(fn.optim.clip_grad_norm(1.0),
    fn.optim.adam(1e-3))``.

    Args:
        grads: A gradient pytree.
        max_norm: The largest allowed global norm, >= 0.

    Returns:
        A pytree shaped like ``grads``.

    Example:
        >>> import funcnn as fn, numpy as np
        >>> grads = {"a": np.array([3.0]), "b": {"c": np.array([4.0])}}
        >>> fn.optim.clip_by_global_norm(grads, 1.0)
        {'a': array([0.6]), 'b': {'c': array([0.8])}}
    """
    max_norm = check_nonnegative("clip_by_global_norm", "max_norm", max_norm)
    return clipped("clip_by_global_norm", grads, tree.global_norm(grads), max_norm)


def clipped(where: str, grads: Params, norm: float, max_norm: float) -> Params:
    """``grads``, whose global norm is ``norm``, scaled down to ``max_norm`` if above it."""
    if not math.isfinite(norm):
        raise ValueError(f"{where}: the global norm of grads is {norm}; {non_finite_reason(grads)}")
    if norm <= max_norm:
        return grads
    scale = max_norm / norm
    # Not fn.tree.scale: NumPy 1.x computes 0-d float32 * Python float in float64.
    return tree.map(lambda g: np.asarray(g * scale, dtype=g.dtype), grads)


def non_finite_reason(grads: Params) -> str:
    """Why the global norm of ``grads`` is not finite: the first bad key path."""
    for path, g in zip(tree.paths(grads), tree.leaves(grads)):
        if not np.all(np.isfinite(g)):
            return f"grads at {path!r} are not finite (inf or NaN)"
    return "the sum of squares overflows float64"
