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

Optimizers compose (see :func:`chain`, :func:`accumulate`, :func:`ema`)::

    opt = fn.optim.accumulate(fn.optim.ema(fn.optim.chain(
        fn.optim.clip_grad_norm(1.0), fn.optim.adam(1e-3)), decay=0.999), every=4)

A composite state nests its parts' states: by position in a chain (``state["1"]``),
under ``"inner"`` in a wrapper; each keeps ``"lr"`` on top as the same read-out, and
:func:`ema_params` finds the averaged params.
"""

from funcnn.optim import masks, schedules, states
from funcnn.optim.accumulate import accumulate
from funcnn.optim.adam import adam, adamw
from funcnn.optim.base import (
    DonatingOptimizer,
    ElementwiseOptimizer,
    ElementwiseRule,
    GradientTransform,
    Optimizer,
    Schedule,
    State,
)
from funcnn.optim.chain import chain
from funcnn.optim.clip import clip_by_global_norm
from funcnn.optim.ema import ema, ema_params
from funcnn.optim.masks import masked, ndim_at_least
from funcnn.optim.rmsprop import rmsprop
from funcnn.optim.sgd import sgd
from funcnn.optim.transforms import add_decayed_weights, clip_grad_norm, clip_grad_value

__all__ = [
    "DonatingOptimizer",
    "ElementwiseOptimizer",
    "ElementwiseRule",
    "GradientTransform",
    "Optimizer",
    "Schedule",
    "State",
    "accumulate",
    "adam",
    "adamw",
    "add_decayed_weights",
    "chain",
    "clip_by_global_norm",
    "clip_grad_norm",
    "clip_grad_value",
    "ema",
    "ema_params",
    "masked",
    "masks",
    "ndim_at_least",
    "rmsprop",
    "schedules",
    "sgd",
    "states",
]
