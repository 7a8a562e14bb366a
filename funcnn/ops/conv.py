"""N-d convolution (torch's ``conv1d``/``conv2d``/``conv3d``) as GEMMs, forward and backward.

Shapes (torch's layouts): ``x (N, C, *spatial)``, ``weight (O, C / groups, *kernel)``,
``bias (O,)`` or None, ``y (N, O, *out)``; ``rows = N * prod(out)``, ``T = prod(kernel)``
taps, ``Cg = C / groups`` and ``Og = O / groups``. For each group::

    cols[r, (t, c)] = x_padded[n, c, o * stride + t * dilation]     (r = (n, o))
    y    = cols @ W.T + bias          W = weight as (Og, T * Cg): one GEMM
    dW.T = cols.T @ dy                                              one GEMM
    dx   = sum over taps t of  scatter_t(dy @ W_t)                  T GEMMs + T adds

``cols`` (im2col) is one copy of a strided view of the padded input; ``scatter_t``
adds into the strided slice of the padded ``dx`` that tap ``t`` read (col2im as a sum
over the kernel's taps, no loop over positions). Two layouts of ``cols``, whichever
copies faster (measured in ``benchmarks/conv_ops.py``):

- rows-major ``(rows, T * Cg)`` when ``Cg > K_MAJOR_MAX_CHANNELS``: the copy moves
  runs of ``Cg`` channels (contiguous in a channels-last input);
- taps-major ``(Cg * T, rows)`` for few channels (a first layer on images): the copy
  moves runs along the last spatial dim. Its GEMMs use it transposed (free in BLAS).

``cols`` is built for a chunk of samples at a time (``CHUNK_BYTES``), and a column of
ones appended to it makes the same GEMMs add the bias and give its gradient.

``y`` is computed channels-last, ``(rows, O)``, and returned as its transposed view
``(N, O, *out)`` (not C-contiguous): the next ReLU and pool keep that layout and the
next convolution copies its ``cols`` from it in long runs; ``dy`` of that layout is a
free view back to ``(rows, O)``. Any layout of ``x`` and ``dy`` is correct; these are
just the fast ones.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from funcnn.errors import ShapeError
from funcnn.ops.windows import (
    Pads,
    cached,
    conv_pads,
    int_tuple,
    interior,
    output_size,
    spatial_names,
    tap_slices,
)

K_MAJOR_MAX_CHANNELS = 6
"""Up to this many channels per group, ``cols`` is taps-major (see the module docstring).
Measured on 64 x C x 28 x 28, a 3x3 kernel to 32 channels, forward + weight gradient, one
thread: taps-major is 1.2-1.9x faster for C = 1..6 whether x is channels-first or -last;
at 8 each wins in one layout; at 16 rows-major is 1.1-1.2x faster."""

CHUNK_BYTES = 1 << 22
"""``cols`` are built for a chunk of samples at a time, about this big; when all of them fit in
one chunk, ``conv_forward`` keeps them for the backward, else the backward rebuilds them chunk
by chunk from the padded input (one more copy, instead of holding them all)."""


class ConvGeometry(NamedTuple):
    """Sizes, padding and the per-tap slices of one convolution (from :func:`conv_geometry`)."""

    batch: int
    in_channels: int
    out_channels: int
    groups: int
    spatial: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: Pads
    out: tuple[int, ...]
    padded: tuple[int, ...]
    taps_major: bool
    taps: tuple[tuple[slice, ...], ...]  # of a channels-last padded array (N, *padded, C)
    inner: tuple[slice, ...] | None  # where x sits in it; None without padding
    to_last: tuple[int, ...]  # axes: (N, C, *s) -> (N, *s, C)
    to_first: tuple[int, ...]  # axes: (N, *s, C) -> (N, C, *s)

    @property
    def rows(self) -> int:
        return self.batch * math.prod(self.out)

    @property
    def y_shape(self) -> tuple[int, ...]:
        return (self.batch, self.out_channels, *self.out)


class ConvSaved(NamedTuple):
    """What :func:`conv_backward` needs from :func:`conv_forward`.

    ``source`` is the zero-padded input, channels-last ``(N, *padded, C)``: a view of
    ``x`` when there is no padding, else a copy (x's size plus the border). ``cols`` is the
    im2col matrix when it fits in one chunk of ``CHUNK_BYTES`` (else None: the backward
    rebuilds it from ``source``, a chunk at a time). ``weight`` is the forward's weight (a
    reference, not a copy).
    """

    source: np.ndarray
    cols: np.ndarray | None
    weight: np.ndarray
    has_bias: bool
    geometry: ConvGeometry


def conv_geometry(x_shape: tuple[int, ...], weight_shape: tuple[int, ...], *, stride: Any = 1,
                  padding: Any = 0, dilation: Any = 1, groups: int = 1) -> ConvGeometry:
    """Check a convolution's arguments and shapes; return its geometry (cached per arguments).

    The number of spatial dims is ``len(weight_shape) - 2``. ``stride`` and ``dilation``
    are ints or tuples of ints; ``padding`` is as in :func:`funcnn.ops.windows.conv_pads`
    (ints, tuples, ``"same"``, ``"valid"``).

    Raises:
        ValueError: a bad hyperparameter or weight shape, naming the argument.
        ShapeError: ``x_shape`` does not fit the weight (ndim, channels) or is smaller than
            the dilated kernel; the layer wrapping the op adds its name.
    """
    return _geometry(tuple(x_shape), tuple(weight_shape), stride, padding, dilation, groups)


@cached
def _geometry(x_shape, weight_shape, stride, padding, dilation, groups) -> ConvGeometry:
    where = "conv"
    n = len(weight_shape) - 2
    if n < 1 or any(not isinstance(d, int) or d < 1 for d in weight_shape):
        raise ValueError(
            f"{where}: weight must have shape (out_channels, in_channels / groups, *kernel_size) "
            f"with every size >= 1, got {weight_shape}"
        )
    (groups,) = int_tuple(groups, 1, "groups", where)
    out_channels, group_channels, *kernel = weight_shape
    if out_channels % groups:
        raise ValueError(f"{where}: out_channels ({out_channels}) must be divisible by groups ({groups})")
    in_channels = group_channels * groups
    if len(x_shape) != n + 2 or x_shape[1] != in_channels:
        raise ShapeError(
            f"expected input of shape (N, {in_channels}, {spatial_names(n)}), got {x_shape}"
        )
    kernel = tuple(kernel)
    stride = int_tuple(stride, n, "stride", where)
    dilation = int_tuple(dilation, n, "dilation", where)
    pads = conv_pads(padding, kernel, stride, dilation, where)
    spatial = tuple(x_shape[2:])
    out = output_size(spatial, kernel, stride, pads, dilation)
    padded = tuple(size + lo + hi for size, (lo, hi) in zip(spatial, pads))
    everything = slice(None)
    taps = tuple((everything, *t, everything) for t in tap_slices(kernel, stride, dilation, out))
    has_pad = any(lo or hi for lo, hi in pads)
    return ConvGeometry(
        batch=x_shape[0], in_channels=in_channels, out_channels=out_channels, groups=groups,
        spatial=spatial, kernel=kernel, stride=stride, dilation=dilation, pads=pads, out=out,
        padded=padded, taps_major=group_channels <= K_MAJOR_MAX_CHANNELS, taps=taps,
        inner=(everything, *interior(pads, spatial), everything) if has_pad else None,
        to_last=(0, *range(2, n + 2), 1), to_first=(0, n + 1, *range(1, n + 1)),
    )


def conv_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, *, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1) -> tuple[np.ndarray, ConvSaved]:
    """``y = conv(x, weight) + bias`` exactly as torch's ``conv1d``/``conv2d`` (any N-d).

    Args:
        x: ``(N, C, *spatial)``, cast to ``weight.dtype``.
        weight: ``(O, C / groups, *kernel)``; its ndim sets the number of spatial dims.
        bias: ``(O,)`` or None.
        stride, padding, dilation, groups: as in torch (see :func:`conv_geometry`).

    Returns:
        ``(y, saved)``: ``y`` of shape ``(N, O, *out)`` and ``weight.dtype``, a transposed
        view of channels-last memory; ``saved`` for :func:`conv_backward`.

    Example:
        >>> y, saved = conv_forward(np.ones((2, 1, 5, 5)), np.ones((4, 1, 3, 3)), None, padding=1)
        >>> y.shape, float(y[0, 0, 0, 0]), float(y[0, 0, 2, 2])
        ((2, 4, 5, 5), 4.0, 9.0)
    """
    g = conv_geometry(x.shape, weight.shape, stride=stride, padding=padding, dilation=dilation,
                      groups=groups)
    has_bias = bias is not None
    source = _source(x.astype(weight.dtype, copy=False), g)
    matrix = _weight_matrix(weight, bias, g)
    y2 = np.empty((g.rows, g.out_channels), weight.dtype)
    y_groups = _by_group(y2, g.groups)
    chunks = _chunks(g, weight.dtype)
    store = _cols_store(g, chunks, weight.dtype, has_bias)  # one buffer for every chunk
    for samples, rows in chunks:
        cols = _cols(source[samples], g, store)
        np.matmul(cols, matrix, out=y_groups[:, rows])
    y = y2.reshape(g.batch, *g.out, g.out_channels).transpose(g.to_first)
    return y, ConvSaved(source, cols if len(chunks) == 1 else None, weight, has_bias, g)


def conv_backward(saved: ConvSaved, dy: np.ndarray, *, need_dx: bool,
                  dweight_out: np.ndarray | None = None, dbias_out: np.ndarray | None = None,
                  ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The pullback of :func:`conv_forward`: ``(dweight, dbias, dx)`` for ``dy (N, O, *out)``.

    ``dweight`` and ``dbias`` are written into ``dweight_out``/``dbias_out`` when given
    (arrays of the weight's and bias's shape, e.g. views into a flat grads buffer) and
    returned. ``dbias`` is None for a convolution without bias; ``dx`` is None unless
    ``need_dx`` (then ``(N, C, *spatial)``, a view of channels-last memory).
    """
    source, cols, weight, has_bias, g = saved
    dtype = weight.dtype
    dy2 = dy.astype(dtype, copy=False).transpose(g.to_last).reshape(g.rows, g.out_channels)
    dy_groups = _by_group(dy2, g.groups)  # (groups, rows, Og)
    chunks = _chunks(g, dtype)
    kept = cols if len(chunks) == 1 else None
    store = _cols_store(g, chunks, dtype, has_bias) if kept is None else None
    product = None  # (groups, T * Cg [+ 1], Og): dweight and, in the last row, dbias
    for samples, rows in chunks:
        cols = kept if kept is not None else _cols(source[samples], g, store)
        # cols.T @ dy, not dy.T @ cols: measured up to 1.45x faster (first layer: 1.27 vs 1.85 ms)
        part = np.matmul(cols.transpose(0, 2, 1), dy_groups[:, rows])
        if product is None:
            product = part
        else:
            product += part
    dweight = _into(dweight_out, _torch_weight_layout(product, g, weight.shape))
    dbias = _into(dbias_out, product[:, -1].reshape(-1)) if has_bias else None
    if not need_dx:
        return dweight, dbias, None
    dx = _input_grad(dy_groups, weight, g, store)
    return dweight, dbias, (dx if g.inner is None else dx[g.inner]).transpose(g.to_first)


def _input_grad(dy_groups: np.ndarray, weight: np.ndarray, g: ConvGeometry,
                scratch: np.ndarray | None) -> np.ndarray:
    """``dx`` (channels-last, padded): ``sum over taps t of scatter_t(dy @ W_t)``.

    Its GEMMs run over as many samples as ``scratch`` (the backward's ``cols`` buffer,
    done with) holds, not a ``cols`` chunk: longer GEMMs are faster (T6's second
    convolution, float32, 2 BLAS threads: its dx took 6.9 ms in one piece of 128 samples,
    7.8 ms in chunks of 29; on one thread 9.05 and 9.3 ms).
    Without ``scratch`` (the forward's ``cols`` were kept: they are small), a new buffer
    holds the products of the whole batch.
    """
    rows_per_sample = math.prod(g.out)
    per_sample = rows_per_sample * g.in_channels  # elements of dy @ W_t for one sample
    if scratch is None:
        scratch = np.empty(max(g.batch, 1) * per_sample, weight.dtype)
    step = max(1, scratch.size // per_sample)
    buffer = scratch.reshape(-1)[:step * per_sample].reshape(-1, g.in_channels)
    dx = np.zeros((g.batch, *g.padded, g.in_channels), weight.dtype)
    per_tap = _per_tap(weight, g)
    for start in range(0, g.batch, step):
        stop = min(start + step, g.batch)
        rows = slice(start * rows_per_sample, stop * rows_per_sample)
        _add_dx(dx[start:stop], dy_groups[:, rows], per_tap, g, buffer)
    return dx


def _torch_weight_layout(product: np.ndarray, g: ConvGeometry, shape: tuple[int, ...]) -> np.ndarray:
    """The weight rows of ``product`` ``(groups, T * Cg [+ 1], Og)`` as ``(O, Cg, *kernel)``."""
    cg = g.in_channels // g.groups
    per_weight = product[:, :cg * math.prod(g.kernel)].transpose(0, 2, 1)  # (groups, Og, T * Cg)
    if g.taps_major:  # columns (Cg, *kernel): torch's order
        return per_weight.reshape(shape)
    n = len(g.kernel)  # columns (*kernel, Cg)
    return per_weight.reshape(g.out_channels, *g.kernel, cg).transpose(0, n + 1, *range(1, n + 1))


def _per_tap(weight: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """``weight`` as ``(taps, groups, Og, Cg)``, contiguous (BLAS needs unit-stride rows)."""
    by_group = weight.reshape(g.groups, -1, g.in_channels // g.groups, len(g.taps))
    return np.ascontiguousarray(by_group.transpose(3, 0, 1, 2))


def _add_dx(dx: np.ndarray, dy_groups: np.ndarray, per_tap: np.ndarray, g: ConvGeometry,
            buffer: np.ndarray) -> None:
    """``dx += sum over taps t of scatter_t(dy @ W_t)`` for some samples (``dx`` channels-last
    and padded, ``dy_groups`` their rows), through ``buffer`` (at least ``(rows, C)``)."""
    product = buffer[:dy_groups.shape[1]]
    product_groups = _by_group(product, g.groups)
    image = product.reshape(dx.shape[0], *g.out, g.in_channels)
    for w_tap, where in zip(per_tap, g.taps):
        np.matmul(dy_groups, w_tap, out=product_groups)
        dx[where] += image


def _chunks(g: ConvGeometry, dtype: np.dtype) -> list[tuple[slice, slice]]:
    """Slices of samples, and of their rows, holding about ``CHUNK_BYTES`` of ``cols`` each
    (the first is the largest; one empty chunk for an empty batch)."""
    per_sample = math.prod(g.out)
    width = g.in_channels * math.prod(g.kernel) + g.groups
    step = max(1, CHUNK_BYTES // (per_sample * width * np.dtype(dtype).itemsize))
    starts = range(0, g.batch, step) if g.batch else [0]
    return [
        (slice(a, min(a + step, g.batch)), slice(a * per_sample, min(a + step, g.batch) * per_sample))
        for a in starts
    ]


def _source(x: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """``x`` zero-padded, as a channels-last view ``(N, *padded, C)``.

    The padded copy is laid out for the ``cols`` copy: channels-last for rows-major
    ``cols``, channels-first (spatial runs) for taps-major ones.
    """
    if g.inner is None:
        return x.transpose(g.to_last)
    if g.taps_major:
        padded = np.zeros((g.batch, g.in_channels, *g.padded), x.dtype).transpose(g.to_last)
    else:
        padded = np.zeros((g.batch, *g.padded, g.in_channels), x.dtype)
    padded[g.inner] = x.transpose(g.to_last)
    return padded


def _cols_store(g: ConvGeometry, chunks: list, dtype: np.dtype, ones: bool) -> np.ndarray:
    """The buffer :func:`_cols` fills, for the largest chunk (the first), with the column of
    ones (if ``ones``: then one GEMM adds the bias, and one gives its gradient) in place.

    One buffer serves every chunk of a call: fresh memory for each would cost a page fault
    every 4 KiB (measured: the im2col copies of T6's second convolution took 3.5 ms on
    fresh chunks, 1.4-1.9 ms on memory already mapped).
    """
    rows = chunks[0][1].stop
    width = g.in_channels // g.groups * math.prod(g.kernel)
    if g.taps_major:  # (groups, Cg * T [+ 1], rows); rows = (N, *out)
        store = np.empty((g.groups, width + ones, rows), dtype)
        if ones:
            store[:, width] = 1
    else:  # (rows, groups, T * Cg [+ 1]), columns (*kernel, Cg [, 1])
        store = np.empty((rows, g.groups, width + ones), dtype)
        if ones:
            store[..., width] = 1
    return store


def _cols(source: np.ndarray, g: ConvGeometry, store: np.ndarray) -> np.ndarray:
    """The im2col matrices of ``source`` (some of the samples), ``(groups, rows, T * Cg [+ 1])``:
    a view of ``store`` (from :func:`_cols_store`), filled here."""
    batch = source.shape[0]
    rows = batch * math.prod(g.out)
    batch_step, *space_steps, channel_step = source.strides
    steps = tuple(a * s for a, s in zip(space_steps, g.stride))
    reach = tuple(a * d for a, d in zip(space_steps, g.dilation))
    cg = g.in_channels // g.groups
    width = cg * math.prod(g.kernel)
    # Below, reshape only splits axes, which never copies: the copies land in `store`.
    if g.taps_major:
        cols = store[:, :, :rows]
        shape = (g.groups, cg, *g.kernel, batch, *g.out)
        strides = (cg * channel_step, channel_step, *reach, batch_step, *steps)
        np.copyto(cols[:, :width].reshape(shape), as_strided(source, shape, strides, writeable=False))
        return cols.transpose(0, 2, 1)
    cols = store[:rows]
    shape = (batch, *g.out, g.groups, *g.kernel, cg)
    strides = (batch_step, *steps, cg * channel_step, *reach, channel_step)
    np.copyto(cols[..., :width].reshape(shape), as_strided(source, shape, strides, writeable=False))
    return cols.transpose(1, 0, 2)


def _weight_matrix(weight: np.ndarray, bias: np.ndarray | None, g: ConvGeometry) -> np.ndarray:
    """``weight`` as ``(groups, T * Cg [+ 1], Og)`` (bias last), rows in the order of the
    columns of ``cols``."""
    cg = g.in_channels // g.groups
    taps = math.prod(g.kernel)
    by_group = weight.reshape(g.groups, -1, cg, taps)  # (groups, Og, Cg, T)
    matrix = np.empty((g.groups, cg * taps + (bias is not None), by_group.shape[1]), weight.dtype)
    if g.taps_major:
        matrix[:, :cg * taps].reshape(g.groups, cg, taps, -1)[...] = by_group.transpose(0, 2, 3, 1)
    else:
        matrix[:, :cg * taps].reshape(g.groups, taps, cg, -1)[...] = by_group.transpose(0, 3, 2, 1)
    if bias is not None:
        matrix[:, -1] = bias.reshape(g.groups, -1)
    return matrix


def _into(out: np.ndarray | None, value: np.ndarray) -> np.ndarray:
    """``value`` copied into ``out`` (which must have its shape), or into a new array."""
    if out is None:
        return np.array(value)
    if out.shape != value.shape:
        raise ValueError(f"a gradient output must have shape {value.shape}, got {out.shape}")
    np.copyto(out, value)
    return out


def _by_group(matrix: np.ndarray, groups: int) -> np.ndarray:
    """``(rows, groups * k)`` as the view ``(groups, rows, k)``."""
    return matrix.reshape(matrix.shape[0], groups, matrix.shape[1] // groups).transpose(1, 0, 2)
