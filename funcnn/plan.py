"""Compiled plans: a model of built-in layers as two straight-line functions.

``model.vjp`` is the definition: each layer checks its input, combinators wrap errors
with index paths, and every pullback builds its own dict of grads. On a small model
that bookkeeping is most of a step. A *plan* runs the same arithmetic (the same numpy
calls in the same order, so the same bits; tests hold it to that) as generated
straight-line code, with the grads written straight into views of one flat buffer
(see :mod:`funcnn.layout`):

- it is built once per params layout, from the model's structure and the layout, and
  only when every layer is a built-in one and the layout is one the generic path
  accepts (the builders check the same keys, shapes and dtypes it does);
- at each call the only checks left are ``layout.match(params)`` (or, for the views an
  optimizer returned, their identity) and a few on ``x``; a plan is made for one dtype
  of ``x``, so the casts the layers make (``astype(..., copy=False)``) are left out
  where the dtypes are known to match already;
- anything unusual (a failed check, an exception inside the plan, a user-defined
  layer) goes to the generic path, which raises the usual error or gives the result.
  Plans are pure, so running the generic path after a failed attempt is safe.

The generated pair, for params leaves ``L``, grads views ``G`` and the input ``x``::

    forward(L, x) -> (y, saved)
    backward(saved, dy, G) -> dx      # None unless the plan was built with need_dx

``Compiled(model).source(params, x)`` shows it. Layer factories attach a builder to their
``vjp`` function as ``vjp.plan``: ``builder(code, node, x, need_dx) -> (y, back)``
emits the layer's forward lines into ``code`` (an :class:`Emitter`) reading the
variable named ``x`` and returns the variable holding ``y``; ``back(dy)`` emits its
backward lines and returns the variable holding ``dx`` (None when ``need_dx`` is
false: nobody needs the gradient of the data, so the first Linear skips a GEMM).
``node`` is the layout's nested dict at this layer's params (leaf indices at the
leaves; None when the layer gets no params).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from funcnn.layout import Layout, layout_of


class Unsupported(Exception):
    """A builder cannot plan this layer with this layout: use the generic path."""


class ShapeMismatch(ValueError):
    """Raised by a plan where the generic path raises a ShapeError (it then runs)."""


class Emitter:
    """Collects the lines of a plan's forward and backward functions."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.forward: list[str] = []
        self.backward: list[str] = []
        self.scope: dict = {"np": np, "dot": np.dot, "matmul": np.matmul, "add_reduce": np.add.reduce,
                            "ShapeMismatch": ShapeMismatch, "DT": layout.dtype}
        self.prelude: list[str] = []  # lines at the top of backward, each once (see once)
        self.shapes: dict[int, tuple] = {}  # leaf index -> the shape its layer expects
        self.dtypes: dict[str, np.dtype] = {}  # variable -> its dtype, where known here
        self._count = 0

    def var(self, prefix: str) -> str:
        """A fresh variable name."""
        self._count += 1
        return f"{prefix}{self._count}"

    def const(self, value, prefix: str) -> str:
        """A name for ``value`` in the generated functions' globals."""
        name = self.var(f"_{prefix}")
        self.scope[name] = value
        return name

    def cast(self, var: str, like: str, dtype) -> str:
        """``var`` cast to the dtype of ``like`` (known here to be ``dtype``, or None), as
        ``.astype(like.dtype, copy=False)`` does: the call is left out when ``var`` is
        known to have that dtype already."""
        if dtype is not None and self.dtypes.get(var) == dtype:
            return var
        return f"{var}.astype({like}.dtype, copy=False)"

    def once(self, line: str) -> None:
        """Put ``line`` at the top of backward, unless it is there already (say, a
        constant every Linear shares, computed once per call)."""
        if line not in self.prelude:
            self.prelude.append(line)

    def expect(self, index: int, shape: tuple) -> None:
        """Leaf ``index`` belongs to the layer being built and must have ``shape``."""
        if index in self.shapes:
            raise Unsupported("a leaf used twice")
        self.shapes[index] = shape


def plan_of(layer) -> Callable | None:
    """The plan builder of ``layer`` (None for user-defined layers)."""
    return getattr(layer.vjp, "plan", None)


def build(layer, code: Emitter, node, x: str, need_dx: bool):
    """Emit ``layer``: returns ``(y, back)``; :class:`Unsupported` if it has no plan."""
    builder = plan_of(layer)
    if builder is None:
        raise Unsupported(layer.name)
    return builder(code, node, x, need_dx)


def has_params(node) -> bool:
    return isinstance(node, dict) and bool(node)


def no_params(node) -> None:
    """Parameterless layers get ``{}`` or nothing (as ``check_no_params`` allows)."""
    if node is not None and node != {}:
        raise Unsupported("params given to a parameterless layer")


# --- the builders of activations and combinators (Linear's sits beside Linear) -----------


def activation(forward_fn, backward_fn, uses_input: bool = True, inline=None):
    """An element-wise layer: ``y = forward_fn(x)``, ``dx = backward_fn(x, y, dy)``
    with ``dy`` cast to ``y``'s dtype (as the layer's pullback does). With
    ``uses_input=False`` the backward gets ``x=None``, so ``x`` need not be kept.
    ``inline``, if given, is ``(forward_source, backward_source, scope)``: the same two
    expressions as source with ``{x}``, ``{y}``, ``{dy}`` for the variables, emitted in
    place of the calls; they must keep the dtype of ``x`` (and ``dy``)."""

    def builder(code: Emitter, node, x: str, need_dx: bool):
        no_params(node)
        y = code.var("a")
        if inline is not None:
            code.scope.update(inline[2])
            code.forward.append(f"{y} = " + inline[0].format(x=x))
            if x in code.dtypes:
                code.dtypes[y] = code.dtypes[x]
        else:
            code.forward.append(f"{y} = {code.const(forward_fn, 'f')}({x})")

        def back(dy: str):
            if not need_dx:
                return None
            dx, cast = code.var("d"), code.cast(dy, y, code.dtypes.get(y))
            if inline is not None:
                code.backward.append(f"{dx} = " + inline[1].format(x=x, y=y, dy=cast))
                if y in code.dtypes:
                    code.dtypes[dx] = code.dtypes[y]
            else:
                kept = x if uses_input else "None"
                code.backward.append(f"{dx} = {code.const(backward_fn, 'b')}({kept}, {y}, {cast})")
            return dx

        return y, back

    return builder


def serial(layers: tuple):
    """Children in order; their backward in reverse, stopping after the first child with
    params when ``dx`` is not needed (the layers before it only lead to the data)."""

    def builder(code: Emitter, node, x: str, need_dx: bool):
        if node is not None and not isinstance(node, dict):
            raise Unsupported("serial params must be a dict")
        node = node or {}
        keys = [str(i) for i in range(len(layers))]
        if not set(node) <= set(keys):
            raise Unsupported("unexpected serial params keys")
        nodes = [node.get(k) for k in keys]
        backs, needed = [], need_dx
        for layer, child in zip(layers, nodes):
            x, back = build(layer, code, child, x, needed)
            backs.append(back)
            needed = needed or has_params(child)
        start = 0 if need_dx else next((i for i, c in enumerate(nodes) if has_params(c)), len(nodes))

        def back(dy: str):
            for child_back in reversed(backs[start:]):
                dy = child_back(dy)
            return dy if need_dx else None

        return x, back

    return builder


def residual(layer):
    """``y = x + inner(x)`` (equal shapes, else the generic path raises); ``dx = dy + inner_dx``."""

    def builder(code: Emitter, node, x: str, need_dx: bool):
        inner, inner_back = build(layer, code, node, x, need_dx)
        y = code.var("r")
        code.forward.append(f"if {inner}.shape != {x}.shape: raise ShapeMismatch")
        code.forward.append(f"{y} = {x} + {inner}")
        _same_dtype(code, y, x, inner)

        def back(dy: str):
            dx = inner_back(dy)
            if not need_dx:
                return None
            out = code.var("d")
            code.backward.append(f"{out} = {dy} + {dx}")
            _same_dtype(code, out, dy, dx)
            return out

        return y, back

    return builder


def _same_dtype(code: Emitter, out: str, a: str, b: str) -> None:
    """``out = a + b`` has their dtype when both are known and equal."""
    if a in code.dtypes and code.dtypes[a] == code.dtypes.get(b):
        code.dtypes[out] = code.dtypes[a]


# --- compiling a model for one params layout --------------------------------------------


class Plan:
    """The generated ``forward`` and ``backward`` of one model for one params layout."""

    def __init__(self, forward: Callable, backward: Callable, source: str):
        self.forward, self.backward, self.source = forward, backward, source


def compile_for(layer, layout: Layout, need_dx: bool, x_dtype) -> Plan | None:
    """The plan of ``layer`` for params with ``layout`` and inputs of ``x_dtype``, or
    None if there is none. ``backward`` takes a ``dy`` of the output's dtype.

    Checks what the generic path would: every leaf is the weight or bias of one Linear
    with the shape it expects (the builders check the keys, and their order, so the
    grads come out in the layout's order).
    """
    code = Emitter(layout)
    code.dtypes["x"] = x_dtype
    try:
        y, back = build(layer, code, layout.nested, "x", need_dx)
        if y in code.dtypes:
            code.dtypes["dy"] = code.dtypes[y]
        dx = back("dy")
    except Unsupported:
        return None
    if len(code.shapes) != len(layout.shapes):
        return None
    if any(layout.shapes[i] != shape for i, shape in code.shapes.items()):
        return None
    defined = set(re.findall(r"^(\w+) = ", "\n".join(code.forward), flags=re.MULTILINE)) | {"x"}
    used = sorted(set(re.findall(r"\b[a-z]\w*\b", "\n".join(code.backward))) & defined)
    saved = "".join(f"{name}, " for name in used)
    lines = ["def forward(L, x):", *(f"    {line}" for line in code.forward),
             f"    return {y}, ({saved})", "", "def backward(S, dy, G):", f"    ({saved}) = S"]
    lines += [*(f"    {line}" for line in (*code.prelude, *code.backward)), f"    return {dx}"]
    source = "\n".join(lines)
    scope = dict(code.scope)
    exec(source, scope)
    return Plan(scope["forward"], scope["backward"], source)


class Compiled:
    """A model's plans, one per params layout, input dtype and ``need_dx``, built on first
    use.

    ``lookup(params, x, need_dx)`` returns ``(leaves, layout, plan)`` when ``params`` and
    ``x`` can take the fast path, else None. Thread-safe: the caches only gain entries
    (bounded), and a plan is immutable.
    """

    _MAX_PLANS = 16

    def __init__(self, layer):
        self.layer = layer
        self.enabled = plan_of(layer) is not None
        self._plans: dict = {}
        self._last: list = [None, None]  # [need_dx=False, need_dx=True]: (layout, plan, x dtype)

    def lookup(self, params, x, need_dx: bool):
        if type(x) is not np.ndarray or x.ndim != 2 or x.dtype.kind != "f":
            return None  # plans take 2-D floating inputs; anything else: the generic path
        last = self._last[need_dx]
        if last is not None and (x.dtype is last[2] or x.dtype == last[2]):
            layout = last[0]
            leaves = layout.known_leaves(params)  # our own views, known by identity
            if leaves is None:
                leaves = layout.match(params)
            if leaves is not None:
                return leaves, layout, last[1]
        if not self.enabled:
            return None
        layout = layout_of(params) if type(params) is dict else None
        if layout is None:
            return None
        key = (layout, need_dx, x.dtype)
        compiled = self._plans.get(key)
        if compiled is None:
            compiled = compile_for(self.layer, layout, need_dx, x.dtype) or False
            if len(self._plans) >= self._MAX_PLANS:
                self._plans.clear()
            self._plans[key] = compiled
        if compiled is False:
            return None
        leaves = layout.match(params)
        if leaves is None:
            return None
        self._last[need_dx] = (layout, compiled, x.dtype)
        return leaves, layout, compiled

    def source(self, params, x, need_dx: bool = False) -> str | None:
        """The generated code for ``params`` and inputs like ``x`` (to read), or None."""
        found = self.lookup(params, x, need_dx)
        return None if found is None else found[2].source


def vjp(compiled: Compiled, params, x, generic: Callable) -> tuple:
    """``generic(params, x)`` (a model's vjp), through the model's plan when possible."""
    found = compiled.lookup(params, x, True)
    if found is None:
        return generic(params, x)
    leaves, layout, plan = found
    try:
        y, saved = plan.forward(leaves, x)
    except Exception:
        return generic(params, x)

    def pullback(dy):
        if type(dy) is np.ndarray and dy.shape == y.shape and dy.dtype == y.dtype:
            grads, views = layout.views_and_leaves(np.empty(layout.size, layout.dtype))
            try:
                return grads, plan.backward(saved, dy, views)
            except Exception:
                pass
        return generic(params, x)[1](dy)

    return y, pullback


def value_and_grad(compiled: Compiled, params, x, y, loss_value_and_grad: Callable,
                   generic: Callable) -> tuple | None:
    """``(value, grads)`` through the model's plan (no ``dx``), or None if it has none."""
    found = compiled.lookup(params, x, False)
    if found is None:
        return None
    leaves, layout, plan = found
    try:
        pred, saved = plan.forward(leaves, x)
    except Exception:
        return None
    value, dpred = loss_value_and_grad(pred, y)
    if type(dpred) is np.ndarray and dpred.dtype == pred.dtype and dpred.shape == pred.shape:
        grads, views = layout.views_and_leaves(np.empty(layout.size, layout.dtype))
        try:
            plan.backward(saved, dpred, views)
            return value, grads
        except Exception:
            pass
    return value, generic(params, x)[1](dpred)[0]
