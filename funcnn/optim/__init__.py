"""Optimizers as ``(init, update)`` pairs over params pytrees, plus schedules and clipping.

    >>> import funcnn as fn, numpy as np
    >>> params = {"w": np.ones(3)}
    >>> opt = fn.optim.adam(1e-3)
    >>> state = opt.init(params)
    >>> params, state = opt.update({"w": np.full(3, 0.5)}, state, params)
    >>> int(state["step"]), float(state["lr"])
    (1, 0.001)

The state is a plain nested dict of ndarrays with named entries: ``"step"`` (0-d int64,
the number of updates done), ``"lr"`` (0-d float64, the learning rate the *next* update
will use, i.e. ``schedule(step)``; read it with ``float(state["lr"])``) and per-leaf
entries shaped like params (``"mu"``, ``"nu"``, ``"momentum"``) with each leaf's dtype.
``state["lr"]`` is recomputed by every update from the schedule: it is a read-out, and
editing it has no effect. Save the state with params and resume exactly. Each
optimizer's entries are typed in :mod:`funcnn.optim.states` (``AdamState``, ...).
"""

from funcnn.optim import masks, schedules, states
from funcnn.optim.adam import adam, adamw
from funcnn.optim.base import DonatingOptimizer, Optimizer, Schedule, State
from funcnn.optim.clip import clip_by_global_norm
from funcnn.optim.masks import masked, ndim_at_least
from funcnn.optim.rmsprop import rmsprop
from funcnn.optim.sgd import sgd

__all__ = [
    "DonatingOptimizer",
    "Optimizer",
    "Schedule",
    "State",
    "adam",
    "adamw",
    "clip_by_global_norm",
    "masked",
    "masks",
    "ndim_at_least",
    "rmsprop",
    "schedules",
    "sgd",
    "states",
]
