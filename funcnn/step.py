"""One training step in one call: ``fn.train_step(model, loss, optimizer)``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from funcnn.grad import value_and_grad
from funcnn.optim.base import DonatingOptimizer, Optimizer, State
from funcnn.types import Layer, Params

Step = Callable[..., tuple]
"""``step(params, opt_state, x, y, *, key=None, state=None) -> (loss value, new params,
new opt_state)``, plus the new model state when ``state=`` is passed."""


def train_step(model: Layer, loss, optimizer: Optimizer, *, donate: bool = False) -> Step:
    """Return ``step(params, opt_state, x, y, *, key=None, state=None)``: one step of
    training, ``-> (value, params, opt_state)`` (``+ new_state`` when ``state=`` is passed).

    ``step`` is exactly::

        value, grads = fn.value_and_grad(model, loss)(params, x, y, key=key)
        params, opt_state = optimizer.update(grads, opt_state, params)

    (with ``state=``: ``value, grads, new_state = ...(params, x, y, key=key, state=state)``)
    with the grads never leaving it. ``value`` is the loss on the batch *before* the
    update. The model runs in training mode; ``key`` feeds its random layers.

    ``donate=True`` gives the step the memory of the ``params``, ``opt_state`` and model
    ``state`` passed
    in, like ``jax.jit(..., donate_argnums=...)``: the update is written over them, in
    place, instead of into new arrays. That saves allocating and filling three fresh
    buffers per step (params, ``mu``, ``nu`` for Adam): on the 1.9M-parameter T4
    benchmark a third of the step's peak memory and about 12% of its time (see
    ``benchmarks/RESULTS.md``). The price: after the call, the ``params`` and ``state``
    you passed in are consumed; their arrays may hold the new values or (if the update
    raised half way) a mix; the new model state is written into the arrays of the state
    passed in (where shapes and dtypes allow). Keep using only what the step returned, and copy
    (``fn.tree.map(np.copy, params)``) anything you want to keep, such as a best model.

    Donation is a permission, not a promise: the built-in ``sgd``, ``rmsprop``, ``adam``
    and ``adamw`` reuse the buffers of params and state trees that are one flat buffer
    (what every step returns; a tree of separate arrays, such as ``model.init``'s, is
    gathered into fresh memory first), and never a buffer that is read only or shared
    with another argument. Other optimizers (``fn.optim.masked``, your own) run their
    usual, pure update. Results are bitwise the same either way.

    Example:
        >>> step = fn.train_step(model, fn.losses.mse, fn.optim.adam(1e-3), donate=True)
        >>> for xb, yb in fn.data.batches(x, y, 64, key=key):
        ...     loss, params, state = step(params, state, xb, yb)
    """
    if not isinstance(model, Layer):
        raise TypeError(f"train_step: model must be a funcnn Layer, got {type(model).__name__}")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"train_step: optimizer must be an fn.optim.Optimizer (e.g. fn.optim.adam(1e-3)), "
            f"got {type(optimizer).__name__}"
        )
    if not isinstance(donate, (bool, np.bool_)):
        raise TypeError(f"train_step: donate must be a bool, got {donate!r}")
    value_and_grad_fn = value_and_grad(model, loss)
    update = optimizer.update
    if donate and isinstance(optimizer, DonatingOptimizer):
        def apply_update(grads, state, params):
            return update(grads, state, params, donate=True)
    else:
        apply_update = update

    def step(params: Params, opt_state: State, x: np.ndarray, y: np.ndarray, *, key=None,
             state=None) -> tuple:
        if state is None:
            value, grads = value_and_grad_fn(params, x, y, key=key)
            params, opt_state = apply_update(grads, opt_state, params)
            return value, params, opt_state
        value, grads, new_state = value_and_grad_fn(params, x, y, key=key, state=state)
        params, opt_state = apply_update(grads, opt_state, params)
        if donate:
            new_state = _write_over(state, new_state)
        return value, params, opt_state, new_state

    return step


def _write_over(old, new):
    """``new`` written into the arrays of ``old`` where they are writable and alike (a
    donated model state); entries that differ in kind stay ``new``'s."""
    if isinstance(old, dict) and isinstance(new, dict):
        return {k: _write_over(old.get(k), v) for k, v in new.items()}
    if (isinstance(old, np.ndarray) and isinstance(new, np.ndarray) and old is not new
            and old.shape == new.shape and old.dtype == new.dtype and old.flags.writeable):
        np.copyto(old, new)
        return old
    return new


__all__ = ["Step", "train_step"]
