"""Losses: plain functions ``loss(pred, target) -> float`` that also know their gradient.

Each loss is a :class:`Loss`: calling it returns the value as a Python float, and
``loss.value_and_grad(pred, target)`` returns ``(value, dpred)`` where ``dpred`` is the
exact gradient of that value with respect to ``pred`` (no extra batch-size factors).
Losses compute in ``pred``'s dtype (targets are cast to it), and ``pred`` and
``target`` must have the same shape: a ``(N, 1)`` vs ``(N,)`` pair is a ShapeError,
never a silent broadcast to ``(N, N)``.

Custom losses: write ``f(pred, target) -> (value, dpred)`` and wrap it with
:func:`make_loss`; the wrapper adds the input checks and the dtype rule::

    @fn.losses.make_loss
    def log_cosh(pred, target):
        d = pred - target
        value = np.mean(np.logaddexp(d, -d) - np.log(2.0))
        return value, np.tanh(d) / d.size

    fn.testing.check_loss_grads(log_cosh, pred, target)  # verify dpred numerically

Options are keyword arguments, bound with ``functools.partial``:
``fn.value_and_grad(model, partial(fn.losses.huber, delta=0.5))``.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import numpy as np

from funcnn.errors import InputTypeError, IntegerTargetWarning, ShapeError
from funcnn.numerics import sigmoid

ValueAndGrad = Callable[..., tuple[float, np.ndarray]]


class Loss:
    """A loss function with its gradient rule. Build one with :func:`make_loss`."""

    def __init__(self, value_and_grad: ValueAndGrad, name: str, targets: str = "same_shape"):
        self._value_and_grad = value_and_grad
        self.name = name
        self._targets = targets
        self._regression = targets == "regression"
        functools.update_wrapper(self, value_and_grad)

    def __call__(self, pred: np.ndarray, target: np.ndarray, **options) -> float:
        return self.value_and_grad(pred, target, **options)[0]

    def value_and_grad(self, pred, target, **options) -> tuple[float, np.ndarray]:
        """``(loss value as float, d value / d pred with pred's shape and dtype)``."""
        pred = _check_pred(pred, self.name)
        if self._targets != "any":
            target = _check_same_shape_target(target, pred, self.name, self._regression)
        value, dpred = self._value_and_grad(pred, target, **options)
        dpred = np.asarray(dpred)
        if dpred.shape != pred.shape:
            raise ShapeError(
                f"the gradient has shape {dpred.shape}, but pred has shape {pred.shape}",
                layer=self.name,
            )
        return float(value), dpred.astype(pred.dtype, copy=False)

    def __repr__(self) -> str:
        return f"<funcnn loss {self.name}>"


def make_loss(value_and_grad: ValueAndGrad | None = None, *, name: str | None = None,
              targets: str = "same_shape"):
    """Turn ``f(pred, target, **options) -> (value, dpred)`` into a :class:`Loss`.

    Args:
        value_and_grad: the loss and its exact gradient with respect to ``pred``.
        name: shown in errors; defaults to the function's name.
        targets: ``"same_shape"`` (default) checks that ``target`` is an array of
            ``pred``'s shape and casts it to ``pred``'s dtype; ``"regression"`` does the
            same and warns (:class:`funcnn.errors.IntegerTargetWarning`) when the target
            is an integer array, which usually means class labels given to a regression
            loss (``mse``, ``l1``, ``huber``); ``"any"`` leaves the target to ``f`` (as
            ``softmax_cross_entropy`` does for int labels).

    Usable bare (``@make_loss``) or with arguments (``@make_loss(name="...")``).
    """
    if targets not in ("same_shape", "regression", "any"):
        raise ValueError(f"make_loss: targets must be 'same_shape', 'regression' or 'any', "
                         f"got {targets!r}")

    def wrap(f):
        return Loss(f, name or getattr(f, "__name__", "loss"), targets)

    return wrap if value_and_grad is None else wrap(value_and_grad)


def _check_pred(pred, name: str) -> np.ndarray:
    if not isinstance(pred, np.ndarray):
        raise InputTypeError(
            f"pred must be a numpy array, got {type(pred).__name__}", layer=name
        )
    if pred.dtype.kind != "f":
        raise InputTypeError(f"pred must be floating-point, got dtype {pred.dtype}", layer=name)
    if pred.size == 0:
        raise ShapeError(f"pred is empty (shape {pred.shape}); a mean over no elements is undefined",
                         layer=name)
    return pred


def _check_same_shape_target(target, pred: np.ndarray, name: str, regression: bool) -> np.ndarray:
    if not isinstance(target, np.ndarray):
        raise InputTypeError(
            f"target must be a numpy array, got {type(target).__name__}; use np.asarray(target)",
            layer=name,
        )
    if target.dtype.kind not in "fiub":
        raise InputTypeError(f"target must be real numbers, got dtype {target.dtype}", layer=name)
    if target.shape != pred.shape:
        raise ShapeError(
            f"pred has shape {pred.shape} but target has shape {target.shape}; they must be "
            "equal (reshape one, e.g. target.reshape(pred.shape))",
            layer=name,
        )
    if regression and target.dtype.kind in "iu":
        warnings.warn(
            f"{name}: target has integer dtype {target.dtype} (cast to {pred.dtype}); integer "
            "targets look like class labels: for classification use "
            "fn.losses.softmax_cross_entropy; for integer-valued regression targets pass "
            f"target.astype(np.{pred.dtype}) to silence this", IntegerTargetWarning, stacklevel=3)
    return target.astype(pred.dtype, copy=False)


def _mean(a: np.ndarray):
    """``np.mean(a)`` bit for bit (sum in ``a``'s dtype, then the division, which in
    float64 rounds to the same float32), without ``np.mean``'s generic overhead."""
    if a.dtype.char not in "fd":
        return np.mean(a)  # e.g. float16, which np.mean accumulates in float32
    total = np.add.reduce(a, None)
    return total.dtype.type(float(total) / a.size)


@make_loss(targets="regression")
def mse(pred, target):
    """Mean squared error with the tutorial's 1/2: ``mean(0.5 * (pred - target)**2)``.

    Gradient: ``(pred - target) / pred.size``.
    """
    d = pred - target
    return 0.5 * _mean(d * d), d * (1.0 / d.size)


@make_loss(targets="regression")
def l1(pred, target):
    """Mean absolute error ``mean(|pred - target|)``; gradient ``sign(pred - target) / size``
    (0 where they are equal)."""
    d = pred - target
    return _mean(np.abs(d)), np.sign(d) * (1.0 / d.size)


@make_loss(targets="regression")
def huber(pred, target, delta: float = 1.0):
    """Huber loss, mean over elements: ``0.5 d**2`` for ``|d| <= delta``, else
    ``delta * (|d| - delta/2)``, with ``d = pred - target``.

    Gradient: ``clip(d, -delta, delta) / size``.
    """
    if isinstance(delta, (bool, np.bool_)) or not isinstance(delta, (int, float, np.number)):
        raise TypeError(f"huber: delta must be a number > 0, got {delta!r} ({type(delta).__name__})")
    if not delta > 0:
        raise ValueError(f"huber: delta must be > 0, got {delta!r}")
    d = pred - target
    a = np.abs(d)
    per_element = np.where(a <= delta, 0.5 * d * d, delta * (a - 0.5 * delta))
    return _mean(per_element), np.clip(d, -delta, delta) * (1.0 / d.size)


@functools.partial(make_loss, targets="any")
def softmax_cross_entropy(logits, labels):
    """Cross-entropy of ``softmax(logits)`` against labels, mean over rows.

    ``logits`` has shape ``(..., C)``. ``labels`` are either int class indices of shape
    ``logits.shape[:-1]`` with values in ``[0, C)``, or probabilities of ``logits``'
    shape. ``value = mean over rows of -sum(p * log_softmax(logits))``;
    gradient ``(softmax(logits) * sum(p) - p) / rows`` (``sum(p) = 1`` for proper
    distributions). Stable for any logits.
    """
    name = "softmax_cross_entropy"
    if logits.ndim < 1:
        raise ShapeError(f"logits must have a class axis, got shape {logits.shape}", layer=name)
    if not isinstance(labels, np.ndarray):
        raise InputTypeError(
            f"labels must be a numpy array, got {type(labels).__name__}", layer=name
        )
    z = logits - logits.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=-1, keepdims=True))
    log_probs = z - log_norm
    rows = logits.size // logits.shape[-1]
    if labels.dtype.kind in "iu":
        classes = logits.shape[-1]
        if labels.shape != logits.shape[:-1]:
            raise ShapeError(
                f"int labels must have shape {logits.shape[:-1]} (logits without the class "
                f"axis), got {labels.shape}",
                layer=name,
            )
        if labels.size and (labels.min() < 0 or labels.max() >= classes):
            raise ValueError(
                f"{name}: labels must be in [0, {classes}), got values in "
                f"[{labels.min()}, {labels.max()}]"
            )
        picked = np.take_along_axis(log_probs, labels[..., None], axis=-1)
        grad = np.exp(log_probs)
        np.put_along_axis(grad, labels[..., None], np.exp(picked) - 1, axis=-1)
        return -np.sum(picked) / rows, grad * (1.0 / rows)
    if labels.dtype.kind != "f":
        raise InputTypeError(
            f"labels must be int class indices or float probabilities, got dtype {labels.dtype}",
            layer=name,
        )
    if labels.shape != logits.shape:
        raise ShapeError(
            f"probability labels must have the logits' shape {logits.shape}, got {labels.shape}",
            layer=name,
        )
    probs = labels.astype(logits.dtype, copy=False)
    mass = probs.sum(axis=-1, keepdims=True)  # 1 for proper distributions; exact either way
    grad = np.exp(log_probs) * mass - probs
    return -np.sum(probs * log_probs) / rows, grad * (1.0 / rows)


@make_loss
def sigmoid_binary_cross_entropy(logits, targets):
    """Binary cross-entropy of ``sigmoid(logits)`` against targets in [0, 1], mean over
    all elements: ``max(x, 0) - x t + log(1 + exp(-|x|))``; gradient
    ``(sigmoid(x) - t) / size``. Stable for any logits.
    """
    x, t = logits, targets
    per_element = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
    return _mean(per_element), (sigmoid(x) - t) * (1.0 / x.size)
