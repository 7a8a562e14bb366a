"""Embedding lookup (torch's ``F.embedding``): rows of a table picked by integer indices.

``y[..., :] = weight[indices[...], :]``; the gradient of ``weight`` sums ``dy`` over
every place an index occurs (repeated indices add up), and is zero for rows no index
picked. The sum is one of two exact reductions, by measurement (float32, numpy 2.4,
one core, best of 30 interleaved runs; sorting the indices + ``np.add.reduceat`` won
only at 1000 x 64 and 2048 indices, 0.62 vs 0.87 ms, and lost on every larger case):

- ``np.bincount`` over ``index * dim + column`` (one pass, accumulating in float64) when
  the table has at most as many rows as there are indices: 5000 x 64 table and 5000
  indices 1.20 ms (``np.add.at`` 2.25), 100 x 32 and 65536 indices 12.7 ms (14.9);
- ``np.add.at`` for larger tables, where bincount's full-size float64 output costs more:
  50000 x 128 and 8192 indices 8.7 ms (bincount 16.2), 30000 x 300 and 20000 indices
  47 ms (72).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from funcnn.errors import InputTypeError, InputValueError


class EmbeddingSaved(NamedTuple):
    """For :func:`embedding_backward`: the indices (as given) and the table's shape and dtype."""

    indices: np.ndarray
    weight_shape: tuple[int, int]
    dtype: np.dtype


def check_indices(indices, num_embeddings: int) -> np.ndarray:
    """Return ``indices`` if it is an integer array with every value in ``[0, num_embeddings)``.

    Raises:
        InputTypeError: not an ndarray, or not of an integer dtype (floats, bools).
        InputValueError: an index out of range, naming the first one and where it is.
        (The layer wrapping the op adds its name.)
    """
    if not isinstance(indices, np.ndarray) or indices.dtype.kind not in "iu":
        got = f"dtype {indices.dtype}" if isinstance(indices, np.ndarray) else type(indices).__name__
        raise InputTypeError(
            f"expected an integer array of indices, got {got}; convert it with x.astype(np.int64)"
        )
    if indices.size and (indices.min() < 0 or indices.max() >= num_embeddings):
        bad = np.flatnonzero((indices.ravel() < 0) | (indices.ravel() >= num_embeddings))[0]
        where = np.unravel_index(bad, indices.shape)
        raise InputValueError(
            f"index {indices.ravel()[bad]} at position {tuple(int(i) for i in where)} is out of "
            f"range for {num_embeddings} embeddings (0..{num_embeddings - 1})"
        )
    return indices


def embedding_forward(indices: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, EmbeddingSaved]:
    """``weight[indices]``: shape ``(*indices.shape, dim)``, ``weight``'s dtype.

    ``indices`` must already be checked (:func:`check_indices`).

    Example:
        >>> y, _ = embedding_forward(np.array([[2, 0]]), np.arange(6.0).reshape(3, 2))
        >>> y.tolist()
        [[[4.0, 5.0], [0.0, 1.0]]]
    """
    return np.take(weight, indices, axis=0), EmbeddingSaved(indices, weight.shape, weight.dtype)


def embedding_backward(saved: EmbeddingSaved, dy: np.ndarray, *,
                       dweight_out: np.ndarray | None = None) -> np.ndarray:
    """The gradient of the table: ``dweight[i] = sum of dy[p] over places p with indices[p] == i``.

    Written into ``dweight_out`` (the table's shape) when given, and returned.
    """
    indices, (rows, dim), dtype = saved
    index = indices.ravel()
    dy2 = dy.reshape(index.size, dim)
    out = np.empty((rows, dim), dtype) if dweight_out is None else dweight_out
    if out.shape != (rows, dim):
        raise ValueError(f"dweight_out must have the table's shape {(rows, dim)}, got {out.shape}")
    if rows <= index.size:
        flat = (index[:, None] * dim + np.arange(dim)).ravel()
        out[...] = np.bincount(flat, weights=dy2.ravel(), minlength=rows * dim).reshape(rows, dim)
    else:
        out[...] = 0
        np.add.at(out, index, dy2)
    return out
