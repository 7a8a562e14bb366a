"""Sliding windows: the argument checks and the index arithmetic convolutions and pools share.

A window op slides a kernel of ``kernel`` taps over the spatial dims of an input
``(N, C, *spatial)`` padded by ``pads`` (one ``(before, after)`` pair a dim), moving
``stride`` a step, with taps ``dilation`` apart. Along one dim of size ``L``::

    out = (L + before + after - dilation * (kernel - 1) - 1) // stride + 1

and tap ``i`` of output ``o`` reads padded position ``o * stride + i * dilation``, so
tap ``i`` of all outputs is the strided slice ``i * dilation :: stride`` (``out`` long).
The ops loop over the taps (9 for a 3x3 kernel), never over output positions.
"""

from __future__ import annotations

import functools
import itertools
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from funcnn.errors import ShapeError

Pads = tuple[tuple[int, int], ...]


def cached(function: Callable) -> Callable:
    """``function`` (pure, positional arguments) memoised on its arguments, lists read as
    tuples; arguments that cannot key the cache (arrays) skip it: same checks, same result.

    The key holds each argument's type as well as its value, so ``True`` or ``1.0`` never
    finds the result cached for ``1`` (and is rejected by the checks as it should be).
    Geometry is computed once per shape and hyperparameters, so a layer called every step
    pays a few microseconds for it instead of its checks and index arithmetic.
    """

    @functools.lru_cache(maxsize=256)
    def memo(types, *args):
        return function(*args)

    @functools.wraps(function)
    def call(*args):
        if any(type(a) is list for a in args):
            args = tuple(_hashable(a) for a in args)
        try:
            return memo(_types(args), *args)
        except TypeError:  # unhashable
            return function(*args)

    return call


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


def _types(value: Any) -> Any:
    if type(value) is not tuple:
        return type(value)
    return tuple(_types(v) if type(v) is tuple else type(v) for v in value)


def int_tuple(value: Any, n: int, arg: str, where: str, *, minimum: int = 1) -> tuple[int, ...]:
    """``value`` (an int, or a sequence of ``n`` ints) as a tuple of ``n`` ints ``>= minimum``.

    Raises:
        ValueError: naming ``arg`` and ``where``, e.g. ``Conv2d: stride must be an int >= 1
            or a tuple of 2 such ints, got (1, 0)``.
    """
    items = (value,) * n if _is_int(value) else value
    if (isinstance(items, (tuple, list)) and len(items) == n
            and all(_is_int(v) and v >= minimum for v in items)):
        return tuple(int(v) for v in items)
    raise ValueError(
        f"{where}: {arg} must be an int >= {minimum} or a tuple of {n} such ints, got {value!r}"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def conv_pads(padding: Any, kernel: tuple[int, ...], stride: tuple[int, ...],
              dilation: tuple[int, ...], where: str) -> Pads:
    """A convolution's ``padding`` argument as ``(before, after)`` pairs, one a spatial dim.

    ``padding`` is an int or a tuple of ints (the same on both sides, as in torch),
    ``"valid"`` (none), ``"same"`` (the output keeps the input's size; torch's rule: only
    with stride 1, and an odd total ``dilation * (kernel - 1)`` puts the extra zero
    after), or a tuple of ``(before, after)`` pairs (an extension: asymmetric padding).
    """
    n = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * n
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(
                    f"{where}: padding='same' needs stride 1 (as in torch), got stride={stride}; "
                    "pass explicit padding for a strided convolution"
                )
            totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
            return tuple((t // 2, t - t // 2) for t in totals)
        raise ValueError(f"{where}: padding must be an int, a tuple, 'same' or 'valid', got {padding!r}")
    if isinstance(padding, (tuple, list)) and len(padding) == n and all(
        isinstance(p, (tuple, list)) for p in padding
    ):
        pairs = tuple(int_tuple(p, 2, "padding", where, minimum=0) for p in padding)
        return pairs
    return tuple((p, p) for p in int_tuple(padding, n, "padding", where, minimum=0))


def pool_pads(padding: Any, kernel: tuple[int, ...], where: str) -> Pads:
    """A pool's ``padding`` (an int or tuple, both sides), at most half the kernel (torch's rule)."""
    pads = int_tuple(padding, len(kernel), "padding", where, minimum=0)
    if any(2 * p > k for p, k in zip(pads, kernel)):
        raise ValueError(
            f"{where}: padding must be at most half the kernel size (as in torch), got "
            f"padding={_short(pads)} for kernel_size={_short(kernel)}"
        )
    return tuple((p, p) for p in pads)


def output_size(spatial: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
                pads: Pads, dilation: tuple[int, ...], what: str = "dilated kernel") -> tuple[int, ...]:
    """The output's spatial size (see the module docstring).

    Raises:
        ShapeError: the padded input is smaller than the dilated kernel, e.g.
            ``input spatial size (2, 2) with padding 0 is smaller than the dilated kernel (3, 3)``
            (``what`` names the kernel).
    """
    reach = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    padded = tuple(size + lo + hi for size, (lo, hi) in zip(spatial, pads))
    if any(p < r for p, r in zip(padded, reach)):
        raise ShapeError(
            f"input spatial size {spatial} with padding {padding_text(pads)} is smaller than the "
            f"{what} {reach}"
        )
    return tuple((p - r) // s + 1 for p, r, s in zip(padded, reach, stride))


def padding_text(pads: Pads) -> str:
    """``0``, ``(1, 2)`` (both sides) or ``((0, 1), (0, 1))`` (before, after), for messages."""
    if all(lo == hi for lo, hi in pads):
        return _short(tuple(lo for lo, _ in pads))
    return str(pads)


def _short(values: tuple[int, ...]) -> str:
    return str(values[0]) if len(set(values)) == 1 else str(values)


def tap_slices(kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...],
               out: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """For each tap (row-major over the kernel), the slices of the padded spatial dims it reads."""
    per_dim = [
        [slice(i * d, i * d + s * (o - 1) + 1, s) for i in range(k)]
        for k, s, d, o in zip(kernel, stride, dilation, out)
    ]
    return list(itertools.product(*per_dim))


def interior(pads: Pads, spatial: tuple[int, ...]) -> tuple[slice, ...]:
    """The slices of the padded spatial dims that hold the input."""
    return tuple(slice(lo, lo + size) for (lo, _), size in zip(pads, spatial))


def spatial_names(n: int) -> str:
    """``L``, ``H, W`` or ``D, H, W``: the spatial dims in shape messages."""
    return {1: "L", 2: "H, W", 3: "D, H, W"}.get(n, ", ".join(f"S{i}" for i in range(n)))


def memory_order(a: np.ndarray) -> tuple[int, ...]:
    """The axes of ``a`` from the slowest-varying in memory to the fastest (``(0, 2, 3, 1)``
    for a channels-last view of ``(N, C, H, W)``)."""
    return tuple(sorted(range(a.ndim), key=lambda i: -abs(a.strides[i])))


def empty_ordered(shape: tuple[int, ...], dtype: Any, order: tuple[int, ...]) -> np.ndarray:
    """An uninitialised array of ``shape`` whose memory runs in axis ``order``
    (see :func:`memory_order`): element-wise ops between arrays of one order are fastest."""
    return np.empty([shape[i] for i in order], dtype).transpose(np.argsort(order))
