"""Pytrees: nested dicts with string keys and array leaves.

Params, gradients and optimizer state are all pytrees. A key path is the dotted
string of keys from the root to a leaf, e.g. ``"2.weight"``; that is why keys may not
contain ``"."`` (or be empty). Anything that is not a dict is a leaf. Dicts keep
insertion order; structure comparisons go by key paths, not by order.

    >>> import funcnn as fn, numpy as np
    >>> params = {"0": {"weight": np.ones((2, 3)), "bias": np.zeros(2)}}
    >>> fn.tree.flatten(params).keys()
    dict_keys(['0.weight', '0.bias'])
    >>> halved = fn.tree.map(lambda p: p / 2, params)
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from funcnn.errors import StructureError

Tree = Any


# --- structure -------------------------------------------------------------------


def map(f: Callable[..., Any], tree: Tree, *rest: Tree) -> Tree:
    """Apply ``f`` leaf-wise: ``f(leaf, *matching_leaves_of_rest)``, same structure.

    Every tree in ``rest`` must have the same key paths as ``tree``; otherwise a
    :class:`StructureError` names the first differing key path.
    """
    for i, other in enumerate(rest, start=1):
        assert_same_structure(tree, other, names=("tree", f"rest[{i - 1}]"))
    return _map(f, tree, rest)


def _map(f, tree, rest):
    if isinstance(tree, dict):
        return {k: _map(f, v, [r[k] for r in rest]) for k, v in tree.items()}
    return f(tree, *rest)


def map_with_path(f: Callable[[str, Any], Any], tree: Tree) -> Tree:
    """Apply ``f(path, leaf)`` leaf-wise, where ``path`` is the dotted key path."""
    return _map_with_path(f, tree, "")


def _map_with_path(f, tree, prefix):
    if isinstance(tree, dict):
        return {k: _map_with_path(f, v, _join(prefix, k)) for k, v in tree.items()}
    return f(prefix, tree)


def leaves(tree: Tree) -> list:
    """The leaves in insertion (depth-first) order."""
    return [leaf for _, leaf in _items(tree, "")]


def paths(tree: Tree) -> list[str]:
    """The dotted key paths of the leaves, in the order of :func:`leaves`."""
    return [path for path, _ in _items(tree, "")]


def _items(tree, prefix) -> Iterator[tuple[str, Any]]:
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _items(v, _join(prefix, k))
    else:
        yield prefix, tree


def flatten(tree: Tree) -> dict[str, Any]:
    """Flatten to ``{"a.b.c": leaf}`` in insertion order.

    An empty dict below the root is kept as the entry ``{"a.b": {}}`` so that
    :func:`unflatten` restores it exactly. Keys must be non-empty strings without ".".
    """
    if not isinstance(tree, dict):
        raise TypeError(f"flatten: expected a dict at the root, got {type(tree).__name__}")
    flat: dict[str, Any] = {}
    _flatten_into(flat, tree, "")
    return flat


def _flatten_into(flat, tree, prefix):
    for k, v in tree.items():
        check_key(k, prefix)
        path = _join(prefix, k)
        if isinstance(v, dict) and v:
            _flatten_into(flat, v, path)
        else:
            flat[path] = {} if isinstance(v, dict) else v


def unflatten(flat: dict[str, Any]) -> Tree:
    """Inverse of :func:`flatten`: ``unflatten(flatten(t)) == t``, empty dicts included."""
    tree: dict[str, Any] = {}
    for path, leaf in flat.items():
        if not isinstance(path, str) or not path or "" in path.split("."):
            raise ValueError(f"unflatten: invalid key path {path!r}")
        *parents, last = path.split(".")
        node = tree
        for depth, k in enumerate(parents):
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                clash = ".".join(parents[: depth + 1])
                raise StructureError(f"unflatten: {clash!r} is a leaf and also a parent of {path!r}")
        if last in node:
            raise StructureError(f"unflatten: key path {path!r} given twice")
        node[last] = {} if isinstance(leaf, dict) else leaf
    return tree


def check_key(k: Any, prefix: str = "") -> None:
    """Raise a clear error unless ``k`` is a usable pytree key (non-empty str, no ".")."""
    where = f" under {prefix!r}" if prefix else ""
    if not isinstance(k, str):
        raise TypeError(f"pytree keys must be str, got {k!r} ({type(k).__name__}){where}")
    if not k or "." in k:
        raise ValueError(
            f"pytree key {k!r}{where} is invalid: keys must be non-empty and must not "
            "contain '.', which separates key paths (rename it, e.g. with '_')"
        )


def assert_same_structure(a: Tree, b: Tree, names: tuple[str, str] = ("a", "b")) -> None:
    """Raise :class:`StructureError` naming the first key path where ``a`` and ``b`` differ.

    Order of keys does not matter; leaves are not compared.
    """
    problem = _first_difference(a, b, "")
    if problem is not None:
        path, what = problem
        at = f" at {path!r}" if path else " at the root"
        raise StructureError(f"{names[0]} and {names[1]} differ{at}: {what}")


def _first_difference(a, b, prefix):
    a_dict, b_dict = isinstance(a, dict), isinstance(b, dict)
    if a_dict != b_dict:
        kinds = ["a dict" if d else "a leaf" for d in (a_dict, b_dict)]
        return prefix, f"{kinds[0]} vs {kinds[1]}"
    if not a_dict:
        return None
    if a.keys() != b.keys():
        missing = [k for k in a if k not in b]
        extra = [k for k in b if k not in a]
        if missing:
            return _join(prefix, missing[0]), "missing from the second"
        return _join(prefix, extra[0]), "unexpected in the second"
    for k, v in a.items():
        found = _first_difference(v, b[k], _join(prefix, k))
        if found is not None:
            return found
    return None


def _join(prefix: str, k: str) -> str:
    return f"{prefix}.{k}" if prefix else k


# --- math ------------------------------------------------------------------------


def zeros_like(tree: Tree) -> Tree:
    """A tree of zeros with each leaf's shape and dtype."""
    return _map(np.zeros_like, tree, ())


def full_like(tree: Tree, value) -> Tree:
    """A tree filled with ``value`` with each leaf's shape and dtype."""
    return _map(lambda x: np.full_like(x, value), tree, ())


def astype(tree: Tree, dtype) -> Tree:
    """Cast every floating leaf to ``dtype`` (other leaves are kept)."""
    return _map(lambda x: _cast_float(x, dtype), tree, ())


def _cast_float(x, dtype):
    x = np.asarray(x)
    return x.astype(dtype) if np.issubdtype(x.dtype, np.floating) else x


def add(a: Tree, b: Tree) -> Tree:
    """Leaf-wise ``a + b``."""
    return map(np.add, a, b)


def sub(a: Tree, b: Tree) -> Tree:
    """Leaf-wise ``a - b``."""
    return map(np.subtract, a, b)


def scale(tree: Tree, s: float) -> Tree:
    """Leaf-wise ``s * tree``; floating leaves keep their dtype (also 0-d on NumPy 1.x)."""
    return _map(lambda x: _keep_float_dtype(x * s, x), tree, ())


def _keep_float_dtype(result, like):
    dtype = np.asarray(like).dtype
    return result.astype(dtype, copy=False) if dtype.kind == "f" else result


def vdot(a: Tree, b: Tree) -> float:
    """The inner product ``sum over leaves of sum(a * b)``."""
    return float(builtins.sum(np.vdot(x, y) for x, y in zip(leaves(a), leaves(map(_pair, a, b)))))


def _pair(x, y):
    return y


def sum_of_squares(tree: Tree) -> float:
    """``sum over leaves of sum(leaf**2)``, accumulated in float64."""
    total = 0.0
    for x in leaves(tree):
        flat = np.ravel(x).astype(np.float64, copy=False)
        total += float(np.dot(flat, flat))
    return total


def global_norm(tree: Tree) -> float:
    """The l2 norm of all leaves taken together, ``sqrt(sum_of_squares(tree))``."""
    return math.sqrt(sum_of_squares(tree))


def size(tree: Tree) -> int:
    """Total number of elements over all leaves."""
    return builtins.sum(int(np.size(x)) for x in leaves(tree))


def equal(a: Tree, b: Tree) -> bool:
    """True when the structures match and every leaf is bitwise equal (same dtype)."""
    if _first_difference(a, b, "") is not None:
        return False
    return all(
        np.asarray(x).dtype == np.asarray(y).dtype
        and np.array_equal(x, y, equal_nan=np.asarray(x).dtype.kind in "fc")
        for x, y in zip(leaves(a), leaves(map(_pair, a, b)))
    )


def allclose(a: Tree, b: Tree, rtol: float = 1e-7, atol: float = 0.0) -> bool:
    """True when the structures match and every leaf pair is ``np.allclose``."""
    if _first_difference(a, b, "") is not None:
        return False
    return all(
        np.allclose(x, y, rtol=rtol, atol=atol)
        for x, y in zip(leaves(a), leaves(map(_pair, a, b)))
    )
