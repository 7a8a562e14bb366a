"""Branching layers: ``FanOut`` makes a tuple of branches, ``FanInSum`` and ``FanInConcat``
join one (stax's set, with ``fn.parallel`` mapping a layer over the branches).

    inception = fn.serial(
        fn.layers.FanOut(2),
        fn.parallel(fn.layers.Linear(8, 4), fn.serial(fn.layers.Linear(8, 4), fn.layers.ReLU())),
        fn.layers.FanInConcat(axis=-1),
    )
"""

from __future__ import annotations

import numbers

import numpy as np

from funcnn import kernel, random
from funcnn.checks import check_input, check_no_params
from funcnn.errors import InputTypeError, ShapeError
from funcnn.types import Layer


def _no_params(key):
    random.as_key(key)
    return {}


def FanOut(n: int) -> Layer:
    """``x -> (x, x, ..., x)``: ``n`` branches of the same array; ``dx = sum of the dys``."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"FanOut: n must be a positive int, got {n!r}")
    n = int(n)
    name = f"FanOut({n})"

    def check(params, x, key, state, mode):
        check_no_params(params, name)
        check_input(x, name)

    def forward(params, x, key, state, mode):
        return (x,) * n, state, None

    def backward(saved, dy, out, need_dx):
        if not need_dx:
            return {}, None
        total = dy[0]
        for branch in dy[1:]:
            total = total + branch
        return {}, total

    return kernel.layer(kernel.Kernel(check, forward, backward), _no_params, name)


def FanInSum() -> Layer:
    """``(x_0, ..., x_{n-1}) -> x_0 + ... + x_{n-1}`` (equal shapes, not broadcast);
    each branch's ``dx`` is ``dy``."""
    name = "FanInSum()"

    def check(params, x, key, state, mode):
        check_no_params(params, name)
        _check_branches(x, name)
        for i, branch in enumerate(x[1:], start=1):
            if branch.shape != x[0].shape:
                raise ShapeError(f"branch 0 has shape {x[0].shape} but branch {i} has shape "
                                 f"{branch.shape}; a sum needs equal shapes", layer=name)

    def forward(params, x, key, state, mode):
        total = x[0]
        for branch in x[1:]:
            total = total + branch
        return total, state, len(x)

    def backward(n, dy, out, need_dx):
        return {}, ((dy,) * n if need_dx else None)

    return kernel.layer(kernel.Kernel(check, forward, backward), _no_params, name)


def FanInConcat(axis: int = -1) -> Layer:
    """``(x_0, ..., x_{n-1}) -> concatenate(xs, axis)`` (shapes equal but along ``axis``);
    the pullback splits ``dy`` back into the branches' sizes."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"FanInConcat: axis must be an int, got {axis!r}")
    axis = int(axis)
    name = f"FanInConcat(axis={axis})"

    def check(params, x, key, state, mode):
        check_no_params(params, name)
        _check_branches(x, name)
        ndim = x[0].ndim
        if not -ndim <= axis < ndim:
            raise ShapeError(f"axis {axis} is out of range for branches of {ndim} dimensions "
                             f"(branch 0 has shape {x[0].shape})", layer=name)
        for i, branch in enumerate(x[1:], start=1):
            if branch.ndim != ndim or _without(branch.shape, axis) != _without(x[0].shape, axis):
                raise ShapeError(f"branch 0 has shape {x[0].shape} but branch {i} has shape "
                                 f"{branch.shape}; they must agree on every axis but {axis}",
                                 layer=name)

    def forward(params, x, key, state, mode):
        sizes = [branch.shape[axis] for branch in x]
        return np.concatenate(x, axis=axis), state, np.cumsum(sizes)[:-1]

    def backward(cuts, dy, out, need_dx):
        return {}, (tuple(np.split(dy, cuts, axis=axis)) if need_dx else None)

    return kernel.layer(kernel.Kernel(check, forward, backward), _no_params, name)


def _check_branches(x, name: str) -> None:
    if not isinstance(x, tuple) or not x:
        got = "an empty tuple" if isinstance(x, tuple) else type(x).__name__
        raise InputTypeError(f"expected a tuple of branches (from FanOut or parallel), got {got}",
                             layer=name)
    for i, branch in enumerate(x):
        check_input(branch, f"{name} branch {i}")


def _without(shape: tuple, axis: int) -> tuple:
    axis = axis % len(shape)
    return shape[:axis] + shape[axis + 1:]


__all__ = ["FanInConcat", "FanInSum", "FanOut"]
