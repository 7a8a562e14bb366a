"""Explicit random keys: no global RNG anywhere in funcnn.

A key is a ``uint32`` array of shape ``(2,)``, so it prints, compares and saves in a
checkpoint like any other array. The same key always gives the same numbers;
``split`` derives independent child keys (via :class:`numpy.random.SeedSequence`).
Every function here also accepts a plain int seed ``s``, meaning ``key(s)``.

    >>> import funcnn as fn
    >>> k = fn.random.key(0)
    >>> k_init, k_data = fn.random.split(k)
"""

from __future__ import annotations

import numbers

import numpy as np

Key = np.ndarray

_KEY_SHAPE = (2,)


def key(seed: int) -> Key:
    """Return the key for an integer seed (any non-negative int, up to 64 bits)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"key(seed): seed must be an int, got {type(seed).__name__}")
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"key(seed): seed must be in [0, 2**64), got {seed}")
    return np.array([seed >> 32, seed & 0xFFFFFFFF], dtype=np.uint32)


def as_key(key_or_seed: Key | int) -> Key:
    """Accept a key or an int seed; return a key. Raises a clear error otherwise."""
    if isinstance(key_or_seed, numbers.Integral) and not isinstance(key_or_seed, bool):
        return key(key_or_seed)
    if isinstance(key_or_seed, np.ndarray) and key_or_seed.shape == _KEY_SHAPE:
        if key_or_seed.dtype == np.uint32:
            return key_or_seed
    raise TypeError(
        "expected a key from fn.random.key(seed) (uint32 array of shape (2,)) or an "
        f"int seed, got {_describe(key_or_seed)}"
    )


def split(key: Key | int, num: int = 2) -> Key:
    """Split a key into ``num`` new independent keys, shape ``(num, 2)``.

    Iterate or unpack the result: ``k1, k2 = split(k)``.
    """
    if not isinstance(num, numbers.Integral) or num < 1:
        raise ValueError(f"split(key, num): num must be a positive int, got {num!r}")
    words = _seed_sequence(as_key(key)).generate_state(2 * int(num), dtype=np.uint32)
    return words.reshape(int(num), 2)


def fold_in(key: Key | int, data: int) -> Key:
    """Derive a new key from ``key`` and an int (an epoch or step number, say)."""
    entropy = [int(w) for w in as_key(key)] + [int(data) & 0xFFFFFFFF, int(data) >> 32]
    return np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)


def generator(key: Key | int) -> np.random.Generator:
    """A NumPy Generator seeded by ``key``: a private stream, not a global one."""
    return np.random.Generator(np.random.PCG64(_seed_sequence(as_key(key))))


def normal(key: Key | int, shape: tuple[int, ...], dtype=np.float64) -> np.ndarray:
    """Standard normal samples of ``shape`` and ``dtype``."""
    return generator(key).standard_normal(shape).astype(dtype, copy=False)


def uniform(key: Key | int, shape: tuple[int, ...], low=0.0, high=1.0, dtype=np.float64):
    """Uniform samples in ``[low, high)`` of ``shape`` and ``dtype``."""
    return generator(key).uniform(low, high, shape).astype(dtype, copy=False)


def permutation(key: Key | int, n: int) -> np.ndarray:
    """A random permutation of ``range(n)`` (int64)."""
    return generator(key).permutation(n)


def _seed_sequence(k: Key) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(k[0]), int(k[1])])


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    return type(value).__name__
