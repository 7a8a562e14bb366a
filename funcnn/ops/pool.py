"""N-d max and average pooling (torch's ``max_pool*d`` and ``avg_pool*d``), forward and backward.

Torch's semantics with ``ceil_mode=False``: ``stride`` defaults to ``kernel_size``;
``padding`` is at most half the kernel and pads with ``-inf`` for max (a padded place
never wins) and zeros for average, whose divisor is always ``prod(kernel_size)``
(``count_include_pad=True``). Both loop over the kernel's taps (4 for 2x2), never
over output positions, and keep the memory layout of ``x`` (a channels-last view
stays channels-last).

Max pooling's gradient goes, in each window, to the first maximum in row-major order
over the window, as torch's CPU kernels do (so of a window of equal values, the
top-left one gets it). ``saved`` is the winning tap of each output, one byte each.
A window holding NaN gives NaN, as in torch; its gradient goes to one element of
the window, not necessarily a NaN (torch: to the last NaN).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from funcnn.errors import ShapeError
from funcnn.ops.windows import (
    cached,
    empty_ordered,
    int_tuple,
    interior,
    memory_order,
    output_size,
    pool_pads,
    spatial_names,
    tap_slices,
)

BLOCK_BYTES = 1 << 20
"""Pools run all their passes over one block of samples (about this much input) before the
next, with scratch for one block: a 2x2 max pool over T6's 128 x 32 x 26 x 26 floats took
2.7 ms forward and 2.1 ms backward in blocks of 8 samples (0.7 MB), 3.2 and 2.4 ms in one
(11 MB), 2.6 and 2.2 ms in blocks of 0.5 MB, 3.1 and 2.4 ms in blocks of 2 MB (one thread)."""


class PoolGeometry(NamedTuple):
    """Sizes and per-tap slices of one pooling (from :func:`pool_geometry`)."""

    x_shape: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    y_shape: tuple[int, ...]
    padded_shape: tuple[int, ...]
    taps: tuple[tuple[slice, ...], ...]  # of the padded input (N, C, *padded)
    inner: tuple[slice, ...] | None  # where x sits in it; None without padding
    overlapping: bool  # whether windows share inputs (a stride smaller than the kernel)
    tiled: bool  # whether the windows cover the padded input exactly once (stride = kernel, no rest)


class MaxPoolSaved(NamedTuple):
    """For :func:`max_pool_backward`: the winning tap of each output (uint8 for up to 256
    taps, in the layout of ``y``) and the input's dtype."""

    winner: np.ndarray
    dtype: np.dtype
    geometry: PoolGeometry


class AvgPoolSaved(NamedTuple):
    """For :func:`avg_pool_backward`: the input's dtype and memory order (of its axes)."""

    dtype: np.dtype
    order: tuple[int, ...]
    geometry: PoolGeometry


def pool_geometry(x_shape: tuple[int, ...], kernel_size: Any, stride: Any = None,
                  padding: Any = 0) -> PoolGeometry:
    """Check a pooling's arguments and input shape; return its geometry (cached).

    The number of spatial dims is ``len(x_shape) - 2`` (at least 1); ``kernel_size``,
    ``stride`` and ``padding`` are ints or tuples of that many ints.

    Raises:
        ValueError: a bad hyperparameter, naming it.
        ShapeError: ``x_shape`` is not ``(N, C, *spatial)`` or is smaller than the kernel.
    """
    return _geometry(tuple(x_shape), kernel_size, stride, padding)


@cached
def _geometry(x_shape, kernel_size, stride, padding) -> PoolGeometry:
    where = "pool"
    n = len(x_shape) - 2
    if isinstance(kernel_size, tuple) and len(kernel_size) >= 1:
        n_kernel = len(kernel_size)
        if n != n_kernel:
            raise ShapeError(f"expected input of shape (N, C, {spatial_names(n_kernel)}), got {x_shape}")
    if n < 1:
        raise ShapeError(f"expected input of shape (N, C, *spatial), got {x_shape}")
    kernel = int_tuple(kernel_size, n, "kernel_size", where)
    stride = kernel if stride is None else int_tuple(stride, n, "stride", where)
    pads = pool_pads(padding, kernel, where)
    ones = (1,) * n
    out = output_size(x_shape[2:], kernel, stride, pads, ones, what="kernel")
    padded = tuple(size + lo + hi for size, (lo, hi) in zip(x_shape[2:], pads))
    everything = slice(None)
    return PoolGeometry(
        x_shape=x_shape, kernel=kernel, stride=stride, pads=pads, y_shape=(*x_shape[:2], *out),
        padded_shape=(*x_shape[:2], *padded),
        taps=tuple((everything, everything, *t) for t in tap_slices(kernel, stride, ones, out)),
        inner=(everything, everything, *interior(pads, x_shape[2:])) if any(p for p, _ in pads) else None,
        overlapping=any(s < k for s, k in zip(stride, kernel)),
        tiled=stride == kernel and all(o * k == p for o, k, p in zip(out, kernel, padded)),
    )


def max_pool_forward(x: np.ndarray, kernel_size: Any, stride: Any = None,
                     padding: Any = 0) -> tuple[np.ndarray, MaxPoolSaved]:
    """Max over each window: torch's ``max_pool1d/2d/3d`` (``ceil_mode=False``, no dilation).

    Returns:
        ``(y, saved)``: ``y`` of shape ``(N, C, *out)``, ``x``'s dtype and memory layout.

    Example:
        >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
        >>> max_pool_forward(x, 2)[0].tolist()
        [[[[5.0, 7.0], [13.0, 15.0]]]]
    """
    g = pool_geometry(x.shape, kernel_size, stride, padding)
    source = _padded(x, g, -np.inf)
    y = np.empty_like(x, shape=g.y_shape)
    winner = np.empty_like(y, dtype=np.min_scalar_type(len(g.taps) - 1))
    blocks = _blocks(source)
    beats = np.empty_like(y[blocks[0]], dtype=bool)  # scratch for one block, reused by each
    tagged = np.empty_like(winner[blocks[0]])
    for b in blocks:  # all the passes over a block, while it is in cache
        n = len(y[b])
        _max_taps([source[b][where] for where in g.taps], y[b], winner[b], beats[:n], tagged[:n])
    return y, MaxPoolSaved(winner, x.dtype, g)


def _max_taps(taps: list[np.ndarray], y: np.ndarray, winner: np.ndarray, beats: np.ndarray,
              tagged: np.ndarray) -> None:
    """``y`` = the max over ``taps``, ``winner`` = the first tap that holds it."""
    if len(taps) == 1:
        np.copyto(y, taps[0])
        winner[...] = 0
        return
    np.greater(taps[1], taps[0], out=beats)  # strictly: the first of equal maxima wins
    np.maximum(taps[0], taps[1], out=y)
    np.copyto(winner, beats)
    for t, view in enumerate(taps[2:], start=2):
        np.greater(view, y, out=beats)
        np.maximum(y, view, out=y)
        # winner = t where beats (t grows, so a max): masked writes (copyto where=) are 80x slower
        np.multiply(beats, t, out=tagged, dtype=winner.dtype)
        np.maximum(winner, tagged, out=winner)


def max_pool_backward(saved: MaxPoolSaved, dy: np.ndarray) -> np.ndarray:
    """The pullback of :func:`max_pool_forward`: ``dy`` routed to each window's winner.

    Selection multiplies the bits of ``dy`` (as unsigned integers) by 1 where a tap won
    and 0 elsewhere, so winners get ``dy`` bit for bit and losers exactly +0.0 whatever
    ``dy`` holds (a float ``dy * won`` would turn an inf into NaN). One integer multiply a
    tap was measured 1.2x faster than ``dy & mask`` with an all-ones mask made from
    ``won`` (T6's first pool, float32: 1.9 vs 2.3 ms, one thread).
    """
    winner, dtype, g = saved
    bits = np.dtype(f"u{dtype.itemsize}")
    if dy.dtype != dtype or memory_order(dy) != memory_order(winner):  # ops across layouts: slow
        dy_ordered = empty_ordered(dy.shape, dtype, memory_order(winner))
        np.copyto(dy_ordered, dy, casting="same_kind")
        dy = dy_ordered
    dy_bits = dy.view(bits)
    dx = (np.empty_like if g.tiled else np.zeros_like)(winner, dtype=dtype, shape=g.padded_shape)
    blocks = _blocks(dx)
    won = np.empty_like(winner[blocks[0]], dtype=bool)  # scratch for one block, reused by each
    picked = np.empty_like(won, dtype=bits) if g.overlapping else None
    for b in blocks:
        n = len(dx[b])
        for t, where in enumerate(g.taps):
            np.equal(winner[b], t, out=won[:n])
            if g.overlapping:
                np.multiply(dy_bits[b], won[:n], out=picked[:n], dtype=bits)
                dx[b][where] += picked[:n].view(dtype)
            else:
                np.multiply(dy_bits[b], won[:n], out=dx[b][where].view(bits), dtype=bits)
    return dx if g.inner is None else dx[g.inner]


def avg_pool_forward(x: np.ndarray, kernel_size: Any, stride: Any = None,
                     padding: Any = 0) -> tuple[np.ndarray, AvgPoolSaved]:
    """Mean over each window, padding counted: torch's ``avg_pool1d/2d/3d`` defaults.

    Example:
        >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
        >>> avg_pool_forward(x, 2)[0].tolist()
        [[[[2.5, 4.5], [10.5, 12.5]]]]
    """
    g = pool_geometry(x.shape, kernel_size, stride, padding)
    source = _padded(x, g, 0.0)
    y = np.empty_like(x, shape=g.y_shape)
    for b in _blocks(source):
        np.copyto(y[b], source[b][g.taps[0]])
        for where in g.taps[1:]:
            y[b] += source[b][where]
        y[b] /= len(g.taps)
    return y, AvgPoolSaved(x.dtype, memory_order(x), g)


def avg_pool_backward(saved: AvgPoolSaved, dy: np.ndarray) -> np.ndarray:
    """The pullback of :func:`avg_pool_forward`: each window's ``dy / prod(kernel)`` spread over it."""
    dtype, order, g = saved
    share = np.divide(dy, len(g.taps), out=empty_ordered(g.y_shape, dtype, order), dtype=dtype)
    dx = (np.empty_like if g.tiled else np.zeros_like)(share, shape=g.padded_shape)
    for b in _blocks(dx):
        for where in g.taps:
            if g.overlapping:
                dx[b][where] += share[b]
            else:
                dx[b][where] = share[b]
    return dx if g.inner is None else dx[g.inner]


def _blocks(a: np.ndarray) -> list[slice]:
    """Slices of the samples (first axis) of ``a``, about ``BLOCK_BYTES`` each, the first the
    largest (one empty slice for an empty batch)."""
    step = max(1, BLOCK_BYTES * len(a) // max(a.nbytes, 1))
    return [slice(start, start + step) for start in range(0, max(len(a), 1), step)]


def _padded(x: np.ndarray, g: PoolGeometry, fill: float) -> np.ndarray:
    if g.inner is None:
        return x
    padded = np.full_like(x, fill, shape=g.padded_shape)
    padded[g.inner] = x
    return padded

