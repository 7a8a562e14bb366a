"""Flat layouts: a pytree whose leaves are views into one 1-D buffer.

The hot paths (``fn.value_and_grad`` on built-in layers, every optimizer's ``update``)
work on whole buffers instead of leaf by leaf: one ufunc call per step of the rule,
whatever the number of leaves. Users still see nested dicts of ndarrays: the trees
these paths return are views into one *fresh* buffer per tree, so nothing a caller
holds is ever written.

A :class:`Layout` is the key paths, shapes and dtype of such a tree, with
straight-line functions generated from them (no tree walks on the hot path):

- ``match(tree)``: the leaves in layout order if ``tree`` has exactly this layout
  (same keys in the same order, ndarray leaves of these shapes and this dtype), else
  None. Callers fall back to their full checks, whose messages name the key path.
  ``match_any_order`` accepts the keys of each dict in any order;
- ``views(flat)``: a fresh nested dict of views into ``flat``;
- ``gather(leaves)``: the buffer ``leaves`` are views of if they are the very views
  ``views`` made (object identity), else a new concatenated copy.

Layouts are cached by signature (key paths, shapes, dtype): a small, bounded,
thread-safe cache of immutable objects. The only mutable shared state is each layout's
note of the buffers its ``views`` made recently (a bounded dict; big buffers are only
weakly referenced), which changes nothing but speed.
"""

from __future__ import annotations

import itertools
import operator
import threading
import weakref
from collections.abc import Callable

import numpy as np

_LAYOUTS: dict = {}  # signature -> Layout
_LAYOUTS_MAX = 64
_SMALL_BYTES = 1 << 18  # buffers up to this size are remembered by strong reference
_RECENT = 16  # buffers remembered per layout
_LOCK = threading.Lock()


class Layout:
    """The flat layout of one pytree shape: key paths, shapes, offsets and one dtype.

    Build it with :func:`layout_of` (cached); the tree it describes has float leaves of
    one dtype and at least one leaf. Empty dict subtrees are part of the layout.
    """

    def __init__(self, entries: tuple, dtype: np.dtype):
        # entries: ((keys, shape) for a leaf, (keys, None) for an empty dict), in order
        self.dtype = dtype
        self.keys = tuple(keys for keys, shape in entries if shape is not None)
        self.shapes = tuple(shape for _, shape in entries if shape is not None)
        self.paths = tuple(".".join(keys) for keys in self.keys)
        offsets = [0]
        for shape in self.shapes:
            offsets.append(offsets[-1] + int(np.prod(shape, dtype=np.int64)))
        self.offsets = tuple(offsets)
        self.size = offsets[-1]
        self.nested = nested = _nest(entries)  # the tree, with leaf indices at the leaves
        self.match = _generate_match(nested, self.shapes, dtype, ordered=True)
        self.match_any_order = _generate_match(nested, self.shapes, dtype, ordered=False)
        self.by_path = _generate_get(self.keys)
        # The buffers views() made and their views, to know them again (gather). Small
        # buffers are held (the last _RECENT of them: at most a few MiB), big ones only
        # weakly (their memory goes as soon as the caller lets it go).
        self._small = self.size * dtype.itemsize <= _SMALL_BYTES
        self._live: dict = {}  # id(buffer) -> (buffer, views) or their weakrefs
        self.views = _generate_views(nested, self.shapes, self.offsets, self, with_leaves=False)
        self.views_and_leaves = _generate_views(nested, self.shapes, self.offsets, self,
                                                with_leaves=True)
        # The walks of match without the leaf checks, then an identity check of the leaves
        # against the views views() made: ``known_*(tree)`` -> the buffer (or the leaves)
        # if ``tree`` is made of exactly those views, else None.
        self.known_leaves = _generate_known(nested, True, "leaves", self)
        self._known_flat = _generate_known(nested, True, "flat", self)
        self._known_flat_any_order = _generate_known(nested, False, "flat", self)

    def __repr__(self) -> str:
        return f"Layout({len(self.keys)} leaves, {self.size} x {self.dtype})"

    def leaves(self, tree) -> tuple:
        """The leaves of ``tree`` in layout order (it must have these key paths)."""
        found = self.match(tree)
        return found if found is not None else self.by_path(tree)

    # views(flat) -> tree and views_and_leaves(flat) -> (tree, views in layout order) are
    # generated in __init__ (see _generate_views): a new nested dict of views into
    # ``flat`` (a buffer the caller just made), remembered for known() and gather().

    def _remember(self, flat: np.ndarray, leaves: tuple) -> None:
        live = self._live
        if self._small:
            live.pop(id(flat), None)  # the same buffer again (a donated update): now newest
            live[id(flat)] = (flat, leaves)  # a dict insert is atomic
            if len(live) > _RECENT:
                self._forget_oldest()
        else:
            live.pop(id(flat), None)  # the same buffer again, or a dead one's id: now newest
            live[id(flat)] = (weakref.ref(flat), tuple(map(weakref.ref, leaves)))
            if len(live) > _RECENT:
                self._forget_dead()

    def _forget_oldest(self) -> None:
        """Drop the oldest entries of a small layout, down to half of _RECENT."""
        live = self._live
        with _LOCK:
            for key in list(itertools.islice(live, max(len(live) - _RECENT // 2, 0))):
                live.pop(key, None)

    def _forget_dead(self) -> None:
        """Drop the oldest entries of a big layout whose buffer is gone, down to half
        of _RECENT (entries whose buffers are alive stay)."""
        with _LOCK:
            for key, entry in list(self._live.items()):
                if len(self._live) <= _RECENT // 2:
                    break
                if entry[0]() is None:
                    self._live.pop(key, None)

    def known(self, leaves: tuple) -> np.ndarray | None:
        """The buffer behind ``leaves`` if they are exactly the views :meth:`views` made
        (object identity), else None."""
        base = getattr(leaves[0], "base", None)
        entry = self._live.get(id(base))
        if entry is not None:
            if self._small:
                if entry[0] is base and all(map(operator.is_, entry[1], leaves)):
                    return base
            elif entry[0]() is base:
                for ref, leaf in zip(entry[1], leaves):
                    if ref() is not leaf:
                        return None
                return base
        return None

    def gather(self, leaves: tuple) -> np.ndarray:
        """``leaves`` as one flat buffer: :meth:`known`, or a new copy. Read only."""
        flat = self.known(leaves)
        if flat is not None:
            return flat
        return np.concatenate([np.ravel(leaf) for leaf in leaves]).astype(self.dtype, copy=False)

    def flat(self, tree, ordered: bool = True) -> np.ndarray | None:
        """``tree`` as one flat buffer (read only) if it has exactly this layout, else None.

        Our own views are recognised by identity, without checking each leaf again.
        ``ordered=False`` accepts each dict's keys in any order."""
        flat = (self._known_flat if ordered else self._known_flat_any_order)(tree)
        if flat is not None:
            return flat
        leaves = (self.match if ordered else self.match_any_order)(tree)
        return None if leaves is None else self.gather(leaves)


def layout_of(tree) -> Layout | None:
    """The (cached) layout of ``tree``, or None if it cannot be one flat buffer.

    That is when a leaf is not a floating ndarray (or numpy scalar), leaves have
    different dtypes, a key is not a valid pytree key, or there are no leaves.
    """
    entries: list = []
    dtypes: set = set()
    if not isinstance(tree, dict) or not _signature(tree, (), entries, dtypes):
        return None
    if len(dtypes) != 1 or not any(shape is not None for _, shape in entries):
        return None
    dtype = dtypes.pop()
    if dtype.kind != "f":
        return None
    signature = (tuple(entries), dtype)
    layout = _LAYOUTS.get(signature)
    if layout is None:
        layout = Layout(signature[0], dtype)
        with _LOCK:
            if len(_LAYOUTS) >= _LAYOUTS_MAX:
                _LAYOUTS.pop(next(iter(_LAYOUTS)))
            layout = _LAYOUTS.setdefault(signature, layout)
    return layout


def _signature(tree: dict, prefix: tuple, entries: list, dtypes: set) -> bool:
    for k, v in tree.items():
        if not isinstance(k, str) or not k or "." in k:
            return False
        keys = (*prefix, k)
        if isinstance(v, dict):
            if not v:
                entries.append((keys, None))
            elif not _signature(v, keys, entries, dtypes):
                return False
        elif isinstance(v, (np.ndarray, np.generic)):
            entries.append((keys, tuple(v.shape)))
            dtypes.add(v.dtype)
        else:
            return False
    return True


# --- generated straight-line code ---------------------------------------------------------
# Generated from a layout's own keys (non-empty str without ".", checked in _signature,
# emitted with repr()) and shapes: no tree walks and no loops on the hot path.


def _nest(entries) -> dict:
    nested: dict = {}
    leaf = 0
    for keys, shape in entries:
        node = nested
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        if shape is None:
            node[keys[-1]] = {}
        else:
            node[keys[-1]] = leaf
            leaf += 1
    return nested


def _generate_match(nested: dict, shapes: tuple, dtype, ordered: bool) -> Callable:
    """``match(t)``: the leaves, or None. ``ordered``: every dict's keys in this order;
    else in any order (a missing key is a KeyError, caught: same length, same keys)."""
    lines = _match_source(nested, shapes, ordered, leaves=True).splitlines()
    lines += ["  except KeyError:", "    return None"]
    scope = {"D": dict, "A": np.ndarray, "DT": dtype}
    exec("\n".join(lines), scope)
    return scope["match"]


def _match_source(nested: dict, shapes, ordered: bool, leaves: bool) -> str:
    """The body of ``match`` up to its ``return`` of the leaves (inside a ``try:``);
    ``leaves=False`` leaves out the checks of the leaves' type, shape and dtype."""
    lines = ["def match(t):", "  try:"]
    counter = [0]

    def emit(node: dict, var: str, indent: str) -> None:
        keys = tuple(node)
        lines.append(f"{indent}if type({var}) is not D or len({var}) != {len(keys)}: return None")
        if ordered and len(keys) > 1:
            lines.append(f"{indent}if tuple({var}) != {keys!r}: return None")
        for k, child in node.items():
            name = f"n{counter[0]}"
            counter[0] += 1
            lines.append(f"{indent}{name} = {var}[{k!r}]")
            if isinstance(child, dict):
                emit(child, name, indent)
            else:
                if leaves:
                    lines.append(f"{indent}if type({name}) is not A or {name}.shape != {shapes[child]!r}: "
                                 "return None")
                    lines.append(f"{indent}if {name}.dtype is not DT and {name}.dtype != DT: return None")
                leaf_names[child] = name

    leaf_names: dict = {}
    emit(nested, "t", "    ")
    lines.append("    return (" + "".join(f"{leaf_names[i]}, " for i in range(len(leaf_names))) + ")")
    return "\n".join(lines)


def _generate_known(nested: dict, ordered: bool, result: str, layout: Layout) -> Callable:
    """``known(t)``: for a tree made of exactly the views ``layout.views`` made, their
    buffer (``result="flat"``) or the views (``"leaves"``); else None."""
    source = _match_source(nested, None, ordered, leaves=False).splitlines()
    names = source.pop()[len("    return ("):-1]  # the leaves, as "n1, n2, "
    first = names.split(",")[0]
    lines = source + ["  except KeyError:", "    return None"]
    lines += [f"  entry = live.get(id(getattr({first}, 'base', None)))", "  if entry is None:",
              "    return None"]
    if layout._small:  # the entry holds the buffer and its views
        same = " and ".join(f"views[{i}] is {n.strip()}" for i, n in enumerate(names.split(",")[:-1]))
        lines += ["  views = entry[1]", f"  if {same}:",
                  f"    return {'entry[0]' if result == 'flat' else '(' + names + ')'}", "  return None"]
    else:
        lines += [f"  leaves = ({names})", "  flat = known(leaves)",
                  f"  return {'flat' if result == 'flat' else 'None if flat is None else leaves'}"]
    scope = {"D": dict, "live": layout._live, "known": layout.known}
    exec("\n".join(lines), scope)
    return scope["match"]


def _generate_views(nested: dict, shapes: tuple, offsets: tuple, layout: Layout,
                    with_leaves: bool) -> Callable:
    lines = ["def views(f):"]
    for i, shape in enumerate(shapes):
        a, b = offsets[i], offsets[i + 1]
        view = f"f[{a}:{b}]" if len(shape) == 1 else f"f[{a}:{b}].reshape({shape!r})"
        lines.append(f"    v{i} = {view}")

    def literal(node) -> str:
        if isinstance(node, int):
            return f"v{node}"
        return "{" + ", ".join(f"{k!r}: {literal(v)}" for k, v in node.items()) + "}"

    leaves = "(" + "".join(f"v{i}, " for i in range(len(shapes))) + ")"
    if layout._small:  # as Layout._remember, inline
        lines += ["    live.pop(id(f), None)", f"    live[id(f)] = (f, {leaves})",
                  "    if len(live) > RECENT:", "        forget()"]
    else:
        lines.append(f"    remember(f, {leaves})")
    lines.append(f"    return {literal(nested)}" + (f", {leaves}" if with_leaves else ""))
    scope = {"live": layout._live, "remember": layout._remember, "RECENT": _RECENT,
             "forget": layout._forget_oldest}
    exec("\n".join(lines), scope)
    return scope["views"]


def _generate_get(keys: tuple) -> Callable:
    body = "".join("t" + "".join(f"[{k!r}]" for k in path) + ", " for path in keys)
    scope: dict = {}
    exec(f"def get(t):\n    return ({body})", scope)
    return scope["get"]


__all__ = ["Layout", "layout_of"]
