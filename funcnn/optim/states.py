"""The optimizer states, typed: what each optimizer keeps, entry by entry.

Every state is a plain dict of ndarrays (it saves with :func:`funcnn.save` and resumes
exactly); these ``TypedDict`` s name its entries for readers and type checkers. Per-leaf
entries are trees shaped like params, with each params leaf's shape and dtype.

    >>> state: fn.optim.states.AdamState = fn.optim.adam(1e-3).init(params)
    >>> int(state["step"]), float(state["lr"])
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np

from funcnn.types import Params


class Counters(TypedDict):
    """The entries every built-in optimizer keeps."""

    step: np.ndarray  # 0-d int64: the updates done so far
    lr: np.ndarray  # 0-d float64: the learning rate the NEXT update uses, schedule(step)


class SgdState(Counters, total=False):
    """``fn.optim.sgd``: plus ``momentum`` (a tree like params) when ``momentum > 0``."""

    momentum: Params  # the velocity: momentum * velocity + grad (+ weight decay)


class RmspropState(Counters):
    """``fn.optim.rmsprop``."""

    nu: Params  # the running mean of squared grads: beta * nu + (1 - beta) * grad**2


class AdamState(Counters):
    """``fn.optim.adam`` and ``fn.optim.adamw``."""

    mu: Params  # the first moment: b1 * mu + (1 - b1) * grad
    nu: Params  # the second moment: b2 * nu + (1 - b2) * grad**2


__all__ = ["AdamState", "Counters", "RmspropState", "SgdState"]
