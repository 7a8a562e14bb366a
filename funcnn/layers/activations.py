"""Activation layers: parameterless, element-wise (or along one axis), numerically stable.

Every activation keeps the input's float dtype and gives finite values and gradients
for |x| up to 1e4 without numpy warnings: exponentials only ever see non-positive
arguments. Each factory returns a :class:`funcnn.Layer` whose params are ``{}``.
"""

from __future__ import annotations

import math

import numpy as np

from funcnn import kernel
from funcnn.checks import check_input, check_no_params
from funcnn.errors import ShapeError
from funcnn.numerics import sigmoid
from funcnn.types import Layer


def _activation(name: str, forward, backward, uses_input: bool = True, check_x=None,
                dx_memory: str = "new", into_x: bool = False, into_dy: bool = False) -> Layer:
    """Build a parameterless layer from ``forward(x) -> y`` and ``backward(x, y, dy) -> dx``.

    ``uses_input=False`` says ``backward`` reads only ``y`` and ``dy``, so ``x`` is not
    kept for it. ``dy`` reaches ``backward`` cast to ``y``'s dtype. ``check_x(x)``
    checks more of the input (Softmax's axis). ``dx_memory`` is the kernel's (see
    :class:`funcnn.kernel.Kernel`; ``y`` is kept, so ``y_memory`` is None).
    ``into_x=True``: ``forward`` also takes ``out=`` (``into_dy``: ``backward`` does)
    and writes its result there; a program passes ``out=x`` (``out=dy``) when it owns
    that array. Only a backward that does not read ``x`` allows that.
    """
    assert not (into_x and uses_input), "the backward reads x: the forward cannot overwrite it"


    def check(params, x, key, state, mode):
        check_no_params(params, name)
        check_input(x, name)
        if check_x is not None:
            check_x(x)

    if uses_input:
        def kernel_forward(params, x, key, state, mode):
            y = forward(x)
            return y, state, (x, y)
    else:  # the backward reads only y: keep nothing else
        def kernel_forward(params, x, key, state, mode):
            y = forward(x)
            return y, state, y

    def forward_into_x(params, x, key, state, mode):  # into_x: the backward reads only y
        y = forward(x, out=x)
        return y, state, y

    def backward_rule(in_place: bool):
        def kernel_backward(saved, dy, out, need_dx):
            if not need_dx:
                return {}, None
            x, y = saved if uses_input else (None, saved)
            if dy.dtype is not y.dtype and dy.dtype != y.dtype:
                dy = dy.astype(y.dtype)
            return {}, (backward(x, y, dy, out=dy) if in_place else backward(x, y, dy))

        return kernel_backward

    rule = kernel.Kernel(check, kernel_forward, backward_rule(False), dx_memory=dx_memory,
                         forward_into_x=forward_into_x if into_x else None,
                         backward_into_dy=backward_rule(True) if into_dy else None)
    return kernel.layer(rule, kernel.no_params, name)


def ReLU() -> Layer:
    """``y = max(x, 0)``; ``dy/dx = 1 if x > 0 else 0``."""
    # y > 0 exactly where x > 0 (NaN included), so the backward needs only y
    return _activation("ReLU()", lambda x, out=None: np.maximum(x, _ZEROS.get(x.dtype, 0), out=out),
                       lambda x, y, dy, out=None: np.multiply(dy, y > _ZEROS.get(y.dtype, 0), out),
                       uses_input=False, into_x=True, into_dy=True)


def LeakyReLU(negative_slope: float = 0.01) -> Layer:
    """``y = x if x > 0 else negative_slope * x``."""
    slope = _check_number(negative_slope, "LeakyReLU", "negative_slope")
    return _activation(
        f"LeakyReLU(negative_slope={slope})",
        lambda x: np.where(x > 0, x, x * slope),
        lambda x, y, dy: np.where(x > 0, dy, dy * slope),
    )


def ELU(alpha: float = 1.0) -> Layer:
    """``y = x if x > 0 else alpha * (exp(x) - 1)``; ``dy/dx = y + alpha`` for ``x <= 0``."""
    a = _check_number(alpha, "ELU", "alpha")
    return _activation(
        f"ELU(alpha={a})",
        lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0)) * a),
        lambda x, y, dy: np.where(x > 0, dy, dy * (y + a)),
    )


def Sigmoid() -> Layer:
    """``y = 1 / (1 + exp(-x))``; ``dy/dx = y (1 - y)``. Stable for any x."""
    return _activation("Sigmoid()", sigmoid,
                       lambda x, y, dy, out=None: np.multiply(dy * y, 1 - y, out),
                       uses_input=False, into_dy=True)


def Tanh() -> Layer:
    """``y = tanh(x)``; ``dy/dx = 1 - y**2``."""
    return _activation("Tanh()", np.tanh,
                       lambda x, y, dy, out=None: np.multiply(dy, 1 - y * y, out),
                       uses_input=False, into_dy=True)


def Identity() -> Layer:
    """``y = x``. Returns ``x`` itself: layers never mutate their inputs."""
    return _activation("Identity()", lambda x: x, lambda x, y, dy: dy, uses_input=False,
                       dx_memory="dy")


_GELU_C = math.sqrt(2.0 / math.pi)


def GELU() -> Layer:
    """GELU, tanh form (as ``jax.nn.gelu`` by default, ``torch`` with ``approximate="tanh"``).

    ``y = x/2 * (1 + tanh(u))`` with ``u = sqrt(2/pi) * (x + 0.044715 x**3)``;
    ``dy/dx = (1 + t)/2 + x/2 * (1 - t**2) * sqrt(2/pi) * (1 + 3 * 0.044715 x**2)``.
    """

    def forward(x):
        return x * (0.5 + 0.5 * np.tanh(_GELU_C * (x + 0.044715 * x * x * x)))

    def backward(x, y, dy):
        t = np.tanh(_GELU_C * (x + 0.044715 * x * x * x))
        du = _GELU_C * (1 + 0.134145 * x * x)
        return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)

    return _activation("GELU()", forward, backward)


def SiLU() -> Layer:
    """SiLU (swish): ``y = x * sigmoid(x)``; ``dy/dx = s (1 + x (1 - s))``."""

    def backward(x, y, dy):
        s = sigmoid(x)
        return dy * s * (1 + x * (1 - s))

    return _activation("SiLU()", lambda x: x * sigmoid(x), backward)


def Softplus() -> Layer:
    """``y = log(1 + exp(x))`` (as ``logaddexp(x, 0)``); ``dy/dx = sigmoid(x)``."""
    return _activation(
        "Softplus()", lambda x: np.logaddexp(x, 0), lambda x, y, dy: dy * sigmoid(x)
    )


def Softmax(axis: int = -1) -> Layer:
    """``y = exp(x) / sum(exp(x))`` along ``axis``; ``dx = y * (dy - sum(dy * y))``."""
    _check_axis_arg(axis, "Softmax")
    name = f"Softmax(axis={axis})"

    def forward(x):
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)

    def backward(x, y, dy):
        return y * (dy - (dy * y).sum(axis=axis, keepdims=True))

    return _activation(name, forward, backward, check_x=lambda x: _check_axis(x, axis, name))


def LogSoftmax(axis: int = -1) -> Layer:
    """``y = x - logsumexp(x)`` along ``axis``; ``dx = dy - exp(y) * sum(dy)``."""
    _check_axis_arg(axis, "LogSoftmax")
    name = f"LogSoftmax(axis={axis})"

    def forward(x):
        z = x - x.max(axis=axis, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))

    def backward(x, y, dy):
        return dy - np.exp(y) * dy.sum(axis=axis, keepdims=True)

    return _activation(name, forward, backward, check_x=lambda x: _check_axis(x, axis, name))


# 0 in each float dtype: the same value as a Python 0 in a ufunc, with less overhead
_ZEROS = {np.dtype(t): np.zeros((), t) for t in (np.float16, np.float32, np.float64)}


def _check_number(value, layer: str, arg: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{layer}: {arg} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{layer}: {arg} must be finite, got {value!r}")
    return float(value)


def _check_axis_arg(axis, layer: str) -> None:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{layer}: axis must be an int, got {axis!r}")


def _check_axis(x, axis: int, name: str) -> None:
    if not -x.ndim <= axis < x.ndim:
        raise ShapeError(f"axis {axis} is out of range for an input of shape {x.shape}", layer=name)
