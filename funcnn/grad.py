"""Gradients of a loss through a model: ``value_and_grad`` and ``grad``."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from funcnn import plan
from funcnn.losses import Loss
from funcnn.types import Layer, Params


def value_and_grad(model: Layer, loss) -> Callable[..., tuple[float, Params]]:
    """Return ``f(params, x, y) -> (value, grads)`` for ``loss(model.apply(params, x), y)``.

    ``value`` is exactly the float the loss returns for this batch and ``grads`` is its
    exact gradient with respect to ``params`` (same structure and dtypes). ``loss`` is a
    funcnn loss (see :mod:`funcnn.losses`) or a ``functools.partial`` of one.

    Example:
        >>> f = fn.value_and_grad(model, fn.losses.mse)
        >>> loss_value, grads = f(params, x_batch, y_batch)
    """
    if not isinstance(model, Layer):
        raise TypeError(f"value_and_grad: model must be a funcnn Layer, got {type(model).__name__}")
    loss_value_and_grad = loss_gradient_rule(loss)
    compiled = plan.Compiled(model)  # built-in layers: one fused pass, grads in one buffer

    def value_and_grad_fn(params: Params, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
        fast = plan.value_and_grad(compiled, params, x, y, loss_value_and_grad, model.vjp)
        if fast is not None:
            return fast
        pred, pullback = model.vjp(params, x)
        value, dpred = loss_value_and_grad(pred, y)
        grads, _ = pullback(dpred)
        return value, grads

    return value_and_grad_fn


def grad(model: Layer, loss) -> Callable[..., Params]:
    """Like :func:`value_and_grad`, returning only the grads."""
    value_and_grad_fn = value_and_grad(model, loss)

    def grad_fn(params: Params, x: np.ndarray, y: np.ndarray) -> Params:
        return value_and_grad_fn(params, x, y)[1]

    return grad_fn


def loss_gradient_rule(loss) -> Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]:
    """``(pred, target) -> (value, dpred)`` for a Loss or a keyword ``partial`` of one."""
    if isinstance(loss, Loss):
        return loss.value_and_grad
    if isinstance(loss, functools.partial) and isinstance(loss.func, Loss) and not loss.args:
        return functools.partial(loss.func.value_and_grad, **loss.keywords)
    raise TypeError(
        f"expected a funcnn loss (e.g. fn.losses.mse), got {loss!r}; a plain function has no "
        "gradient rule: wrap f(pred, target) -> (value, dpred) with fn.losses.make_loss"
    )
