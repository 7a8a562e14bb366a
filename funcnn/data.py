"""Feeding data to a model: mini-batches, train/val/test splits, standardization.

Everything random takes an explicit key (funcnn has no global RNG), so the same key
always gives the same batches and the same split.

    >>> import funcnn as fn, numpy as np
    >>> x, y = np.arange(20.0).reshape(10, 2), np.arange(10.0).reshape(10, 1)
    >>> train, val, test = fn.data.split(0, x, y)           # 50/20/30, like the tutorial
    >>> x_train, y_train = train
    >>> stats = fn.data.fit_standardizer(x_train)           # from the training split only
    >>> for epoch in range(3):
    ...     for xb, yb in fn.data.batches(x_train, y_train, 2, key=fn.random.fold_in(0, epoch)):
    ...         pass
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from funcnn.errors import NonFiniteDataError, StructureError
from funcnn.random import Key, permutation

# --- mini-batches ----------------------------------------------------------------


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many batches :func:`batches` yields for ``n`` samples.

    ``ceil(n / batch_size)``, or ``floor(n / batch_size)`` with ``drop_last``.

    Example:
        >>> num_batches(10, 4), num_batches(10, 4, drop_last=True)
        (3, 2)
    """
    n = _count(n, "num_batches", "n", minimum=0)
    batch_size = _count(batch_size, "num_batches", "batch_size", minimum=1)
    return n // batch_size if drop_last else -(-n // batch_size)


def batches(
    x: Any,
    y: Any,
    batch_size: int,
    *,
    key: Key | int | None = None,
    shuffle: bool = True,
    drop_last: bool = False,
) -> Iterator[Any]:
    """Yield mini-batches ``(xb, yb)`` that together hold every sample exactly once.

    With ``shuffle=True`` the order is ``fn.random.permutation(key, n)`` cut into
    consecutive pieces of ``batch_size``: it depends on the key and ``n`` only, so the
    same key gives the same batches. funcnn has no global RNG, so a shuffled epoch
    needs ``key=``; for a fresh order every epoch pass
    ``key=fn.random.fold_in(key, epoch)``. With ``shuffle=False`` the samples come in
    their stored order, ``key`` is not used, and the batches are views of ``x`` and
    ``y`` (shuffled batches are copies).

    The last batch is shorter when ``batch_size`` does not divide ``n``;
    ``drop_last=True`` drops it (and only it). Arguments are checked when ``batches``
    is called, not when the first batch is taken.

    Args:
        x: Inputs; samples along the first axis. Its dtype is kept.
        y: Targets with as many samples as ``x``, or ``None`` to yield ``xb`` alone.
        batch_size: Positive int.
        key: Random key or int seed; required when ``shuffle`` is true.
        shuffle: Whether to permute the samples.
        drop_last: Whether to drop a final batch shorter than ``batch_size``.

    Yields:
        ``(xb, yb)``, or ``xb`` when ``y`` is ``None``.

    Raises:
        ValueError: ``x`` and ``y`` differ in length, the data is empty, ``batch_size``
            is not positive, ``shuffle`` without ``key``, or ``drop_last`` leaves no
            batch at all.
        TypeError: ``batch_size`` is not an int.

    Example:
        >>> x = np.arange(5.0)[:, None]
        >>> [xb.shape[0] for xb, yb in batches(x, 2 * x, 2, key=0)]
        [2, 2, 1]
    """
    batch_size = _count(batch_size, "batches", "batch_size", minimum=1)
    _flag(shuffle, "batches", "shuffle")
    _flag(drop_last, "batches", "drop_last")
    x = _samples(x, "x")
    n = x.shape[0]
    if y is not None:
        y = _samples(y, "y")
        if y.shape[0] != n:
            raise ValueError(
                "batches: x and y must hold the same number of samples (first axis), "
                f"got len(x)={n} and len(y)={y.shape[0]}"
            )
    if shuffle and key is None:
        raise ValueError(
            "batches: shuffle=True needs key= (funcnn has no global RNG); pass "
            "key=fn.random.fold_in(key, epoch) for a new order each epoch, or shuffle=False"
        )
    count = num_batches(n, batch_size, drop_last)
    if count == 0:
        raise ValueError(
            f"batches: drop_last=True with {n} samples and batch_size={batch_size} "
            "leaves no batch; use a smaller batch_size or drop_last=False"
        )
    order = permutation(key, n) if shuffle else None
    return _batches(x, y, batch_size, count, order)


def _batches(x, y, batch_size, count, order):
    for i in range(count):
        piece = slice(i * batch_size, (i + 1) * batch_size)
        index = piece if order is None else order[piece]
        yield x[index] if y is None else (x[index], y[index])


# --- splits ----------------------------------------------------------------------


def split_indices(
    key: Key | int, n: int, fractions: Sequence[float] = (0.5, 0.2, 0.3)
) -> tuple[np.ndarray, ...]:
    """Cut a random permutation of ``range(n)`` into parts of the given fractions.

    Part ``i`` (all but the last) gets ``int(fractions[i] * n)`` samples and the last
    part gets the rest: for the tutorial's 50/20/30 split of the 1503 airfoil rows that is
    751, 300 and 452. Fractions must be positive and sum to 1, and no part may be empty.

    Example:
        >>> [len(part) for part in split_indices(0, 10)]
        [5, 2, 3]
    """
    n = _count(n, "split", "n", minimum=1)
    fractions = _fractions(fractions)
    sizes = [int(f * n) for f in fractions[:-1]]
    sizes.append(n - sum(sizes))
    if min(sizes) == 0:
        raise ValueError(
            f"split: {n} samples cut by fractions {fractions} gives parts of sizes "
            f"{tuple(sizes)}; part {sizes.index(0)} would be empty (use more samples or "
            "larger fractions)"
        )
    order = permutation(key, n)
    return tuple(np.split(order, np.cumsum(sizes)[:-1]))


def split(
    key: Key | int, *arrays: Any, fractions: Sequence[float] = (0.5, 0.2, 0.3)
) -> tuple[tuple[np.ndarray, ...], ...]:
    """Split arrays along their first axis into random parts (train/val/test).

    The same permutation is used for every array, so rows stay paired. Sizes follow
    :func:`split_indices` (the tutorial's ``int(0.5 * n)``, ``int(0.2 * n)``, rest).

    Args:
        key: Random key or int seed.
        *arrays: One or more arrays with the same number of samples.
        fractions: The share of each part, positive and summing to 1.

    Returns:
        One tuple per part, holding that part of each array in the order given.

    Example:
        >>> x, y = np.zeros((10, 3)), np.zeros((10, 1))
        >>> (x_train, y_train), (x_val, y_val), (x_test, y_test) = split(0, x, y)
        >>> x_train.shape, x_val.shape, x_test.shape
        ((5, 3), (2, 3), (3, 3))
    """
    if not arrays:
        raise TypeError("split(key, *arrays): give at least one array to split")
    arrays = tuple(_samples(a, f"arrays[{i}]") for i, a in enumerate(arrays))
    lengths = [a.shape[0] for a in arrays]
    if len(set(lengths)) > 1:
        raise ValueError(
            "split: all arrays must hold the same number of samples (first axis), got "
            + ", ".join(f"len(arrays[{i}])={m}" for i, m in enumerate(lengths))
        )
    parts = split_indices(key, lengths[0], fractions)
    return tuple(tuple(a[index] for a in arrays) for index in parts)


def _fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise TypeError(f"split: fractions must be a sequence of numbers, got {fractions!r}")
    if len(values) < 2 or not all(math.isfinite(f) and f > 0 for f in values):
        raise ValueError(
            f"split: fractions must be two or more positive numbers, got {fractions!r} "
            "(e.g. (0.5, 0.2, 0.3) for train/val/test)"
        )
    if abs(math.fsum(values) - 1.0) > 1e-9:
        raise ValueError(f"split: fractions must sum to 1, got {fractions!r} (sum {sum(values)!r})")
    return values


# --- standardization -------------------------------------------------------------


def fit_standardizer(x: Any) -> dict[str, np.ndarray]:
    """Per-feature mean and standard deviation of ``x`` (over the first axis).

    Fit it on the training split only and apply it to every split. A feature whose
    values are all equal gets ``mean`` equal to that value and ``std`` 1, so it
    standardizes to exactly 0 instead of dividing by zero. Statistics are computed in
    float64 and stored in ``x``'s float dtype (float64 for integer ``x``).

    The result is a pytree ``{"mean": ..., "std": ...}`` of plain arrays of shape
    ``x.shape[1:]``, so it saves like params:
    ``np.savez(f, **fn.tree.flatten(stats))``.

    Math:
        ``std = sqrt(mean((x - mean)**2))`` (population std, ``ddof=0``).

    Example:
        >>> stats = fit_standardizer(np.array([[1.0, 5.0], [3.0, 5.0]]))
        >>> stats["mean"], stats["std"]
        (array([2., 5.]), array([1., 1.]))
    """
    x = _float_samples(x, "fit_standardizer", "x")
    x64 = x.astype(np.float64, copy=False)
    mean = x64.mean(axis=0)
    std = x64.std(axis=0)
    constant = np.all(x64 == x64[:1], axis=0)
    mean = np.where(constant, x64[0], mean)
    std = np.where(constant, 1.0, std)
    return {"mean": mean.astype(x.dtype), "std": std.astype(x.dtype)}


def standardize(stats: dict[str, np.ndarray], x: Any) -> np.ndarray:
    """``(x - stats["mean"]) / stats["std"]``, in ``x``'s float dtype.

    Example:
        >>> stats = {"mean": np.array([2.0]), "std": np.array([4.0])}
        >>> standardize(stats, np.array([[6.0]]))
        array([[1.]])
    """
    x, mean, std = _with_stats(stats, x, "standardize")
    return (x - mean) / std


def unstandardize(stats: dict[str, np.ndarray], z: Any) -> np.ndarray:
    """The inverse of :func:`standardize`: ``z * stats["std"] + stats["mean"]``.

    Use it to bring predictions of a standardized target back to its units.

    Example:
        >>> stats = {"mean": np.array([2.0]), "std": np.array([4.0])}
        >>> unstandardize(stats, np.array([[1.0]]))
        array([[6.]])
    """
    z, mean, std = _with_stats(stats, z, "unstandardize")
    return z * std + mean


def _with_stats(stats, x, where):
    if not isinstance(stats, dict) or set(stats) != {"mean", "std"}:
        got = sorted(stats) if isinstance(stats, dict) else type(stats).__name__
        raise StructureError(
            f"{where}: stats must be the dict {{'mean', 'std'}} from fit_standardizer, got {got}"
        )
    x = _float_samples(x, where, "x")
    leaves = [np.asarray(stats[name]) for name in ("mean", "std")]
    for name, leaf in zip(("mean", "std"), leaves):
        if leaf.shape != x.shape[1:]:
            raise ValueError(
                f"{where}: stats[{name!r}] has shape {leaf.shape} but x has samples of "
                f"shape {x.shape[1:]} (x.shape={x.shape}); fit the stats on data with "
                "the same features"
            )
    mean, std = (leaf.astype(x.dtype, copy=False) for leaf in leaves)
    return x, mean, std


# --- argument checks -------------------------------------------------------------


def require_finite(a: np.ndarray, name: str, where: str = "fit") -> None:
    """Raise :class:`NonFiniteDataError` naming ``name`` and the first rows with NaN or Inf.

    Only floating and complex arrays are checked (other dtypes cannot hold NaN). Costs one
    pass over ``a``; ``fit`` calls it once per array, before training.

    Example:
        >>> require_finite(np.array([[1.0], [np.nan]]), "train x")
        Traceback (most recent call last):
        NonFiniteDataError: fit: train x has NaN or Inf in 1 row [1] (x[1] = [nan]); ...
    """
    a = np.atleast_1d(a)
    if a.dtype.kind not in "fc" or np.isfinite(a).all():
        return
    bad = np.flatnonzero(~np.isfinite(a).reshape(a.shape[0], -1).all(axis=1))
    first, label = int(bad[0]), name.split()[-1]
    rows = f"{bad[:10].tolist()}"[:-1] + (", ...]" if len(bad) > 10 else "]")
    raise NonFiniteDataError(
        f"{where}: {name} has NaN or Inf in {len(bad)} row{'s' if len(bad) > 1 else ''} {rows} "
        f"({label}[{first}] = {a[first].ravel()[:6].tolist()}); drop or repair them before "
        f"training, e.g. keep = np.isfinite({label}).reshape(len({label}), -1).all(axis=1)",
        name=name, rows=bad[:10].tolist(),
    )


def _flag(value: Any, where: str, name: str) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: {name} must be True or False, got {value!r}")


def _count(value: Any, where: str, name: str, *, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        bound = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{where}: {name} must be {bound}, got {value}")
    return int(value)


def _samples(a: Any, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 0:
        raise ValueError(f"{name} must have a first (sample) axis, got a scalar {a!r}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has 0 samples (shape {a.shape})")
    return a


def _float_samples(x: Any, where: str, name: str) -> np.ndarray:
    x = _samples(x, f"{where}: {name}")
    if x.dtype.kind in "biu":
        x = x.astype(np.float64)
    elif x.dtype.kind != "f":
        raise TypeError(f"{where}: {name} must hold real numbers, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
        raise ValueError(f"{where}: {name} must be finite, got {x[bad]} at index {bad}")
    return x
