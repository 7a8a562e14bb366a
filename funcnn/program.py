"""Programs: a model's kernels composed into one straight-line forward and backward.

The fast path of :func:`funcnn.value_and_grad` runs the same kernels as ``model.vjp``
(:mod:`funcnn.kernel`), in trusted mode, with the grads written into one flat buffer.
Called through the combinators, every ``serial`` and ``residual`` adds a Python call, a
loop and a dict of children per step; on the tutorial's small models that bookkeeping
costs as much as the arithmetic. A program removes it: for one params layout (and
whether ``key=``/``state=`` are given) the model's tree of combinators is unrolled into
a flat list of kernel calls, written out as two functions::

    forward(P, x, key, S) -> (y, new_state, saved)
    backward(saved, dy, O) -> O          # O: the grads buffer's views, filled in

Only calls are generated, from the model's structure and the layout's keys: the math
stays in the kernels, which are passed in as constants. Measured on T1-T3 (2 cores):
value_and_grad through the combinators' kernels takes 1.25x the time of the program.
``serial`` and ``residual`` describe themselves to the compiler (``Kernel.composite``);
any other kernel, a user layer's opaque one included, is one call. An error inside a
kernel is re-raised with the index path the generic path gives (each call records
where it sits). ``Program.source`` shows the generated code.
"""

from __future__ import annotations

from collections.abc import Callable

from funcnn import random
from funcnn.errors import LayerError
from funcnn.kernel import EMPTY, Kernel, Mode, no_check
from funcnn.layout import Layout

TRUSTED = Mode(train=True, trusted=True, grad=True)


class Program:
    """The generated ``forward`` and ``backward`` of one model for one params layout."""

    def __init__(self, forward: Callable, backward: Callable, source: str):
        self.forward, self.backward, self.source = forward, backward, source


def compile_program(rule: Kernel, layout: Layout, with_key: bool, with_state: bool) -> Program:
    """The program of a model (its kernel ``rule``) for params with ``layout``: the caller
    has run the checked kernels on such params. ``backward`` computes no ``dx``."""
    w = _Writer()
    y, new_state, back = w.emit(rule, layout.nested, "P", "O", "K" if with_key else "None",
                                "S" if with_state else None, (), "x")
    back("dy", False)
    saved = "".join(f"{name}, " for name in w.saved)
    # a kernel's error is re-raised with the steps around the line that called it
    # (the traceback's line number in the generated function: free until something raises)
    lines, where = ["def forward(P, x, K, S):", "    try:"], {}
    for line, steps in w.forward:
        where[len(lines) + 1] = steps
        lines.append(f"        {line}")
    lines += ["    except LayerError as e:", "        raise within(e, WHERE[e.__traceback__.tb_lineno]) from None",
              f"    return {y}, {new_state or 'None'}, ({saved})", "",
              "def backward(saved, dy, O):", f"    ({saved}) = saved", "    try:"]
    for line, steps in w.backward:
        where[len(lines) + 1] = steps
        lines.append(f"        {line}")
    lines += ["    except LayerError as e:", "        raise within(e, WHERE[e.__traceback__.tb_lineno]) from None",
              "    return O"]
    source = "\n".join(lines)
    scope = {**w.scope, "LayerError": LayerError, "within": _within, "WHERE": where,
             "M": TRUSTED, "E": EMPTY, "split": random.split}
    exec(source, scope)
    return Program(scope["forward"], scope["backward"], source)


def _within(error: LayerError, where: tuple[str, ...]) -> LayerError:
    """``error`` seen from the outermost model: ``where`` prepended, outermost first."""
    for step in reversed(where):
        error = error.within(step)
    return error


class _Writer:
    """Collects a program's lines while walking the model's kernels."""

    def __init__(self):
        self.forward: list[tuple[str, tuple]] = []  # (line, the steps around it)
        self.backward: list[tuple[str, tuple]] = []
        self.scope: dict = {}
        self.saved: list[str] = []
        self.opaque_calls = 0  # user layers emitted so far
        self.unchecked = False  # the next input comes from a user layer: check it
        self._count = 0

    def var(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def const(self, value, prefix: str) -> str:
        name = self.var(prefix)
        self.scope[name] = value
        return name


    def check(self, rule: Kernel, p: str, x: str, k: str, s: str | None, where: tuple) -> None:
        """Emit ``rule.check``: for inputs a user layer made (their shapes are not known
        to follow from the input signature) and for state, which is not in the layout."""
        self.forward.append((f"{self.const(rule.check, 'C')}({p}, {x}, {k}, {s or 'None'}, M)", where))

    def emit(self, rule: Kernel, node, p: str, o: str, k: str, s: str | None, where: tuple,
             x: str):
        """Emit ``rule`` on the input variable ``x``, with ``p``, ``o``, ``k``, ``s`` the
        expressions of its params, grads views, key and state, and ``node`` its part of
        the layout. Returns ``(y, new_state, back)``; ``back(dy, need_dx)`` emits the
        backward and returns the ``dx`` variable (None unless ``need_dx``)."""
        kind = rule.composite[0] if rule.composite else None
        if kind == "serial":
            return self._serial(rule, node, p, o, k, s, where, x)
        if kind == "residual":
            return self._residual(rule, node, p, o, k, s, where, x)
        return self._call(rule, p, o, k, s, where, x)

    def _call(self, rule, p, o, k, s, where, x):
        if self.unchecked:
            self.check(rule, p, x, k, s, where)
        self.unchecked = rule.check is no_check
        self.opaque_calls += self.unchecked
        f, b = self.const(rule.forward, "F"), self.const(rule.backward, "B")
        y, ns, saved = self.var("y"), self.var("n"), self.var("s")
        self.saved.append(saved)
        self.forward.append((f"{y}, {ns}, {saved} = {f}({p}, {x}, {k}, {s or 'None'}, M)", where))

        def back(dy: str, need_dx: bool):
            d = self.var("d")
            self.backward.append((f"_, {d} = {b}({saved}, {dy}, {o}, {need_dx})", where))
            return d if need_dx else None

        return y, (ns if s is not None else None), back

    def _serial(self, rule, node, p, o, k, s, where, x):
        _, steps = rule.composite
        node = node or {}
        if s is not None or self.unchecked:
            self.check(rule, p, x, k, s, where)
        keys = "None"
        if k != "None" and rule.random:
            keys = self.var("k")
            self.forward.append((f"{keys} = split({k}, {len(steps)})", where))
        new_state = self.var("ns") if s is not None else None
        if new_state:
            self.forward.append((f"{new_state} = {{}}", where))
        backs = []
        for i, (child, key, step) in enumerate(steps):
            child_p = f"{p}[{key!r}]" if key in node else "E"
            child_o = f"{o}[{key!r}]" if key in node else "None"
            child_s = f"{s}.get({key!r}, E)" if s is not None else None
            child_k = f"{keys}[{i}]" if keys != "None" else "None"
            x, child_ns, back = self.emit(child, node.get(key), child_p, child_o, child_k, child_s,
                                          (*where, step), x)
            if new_state:
                self.forward.append((f"if {child_ns}: {new_state}[{key!r}] = {child_ns}", where))
            backs.append(back)
        # without dx, stop at the first child with params: the ones before lead to the data
        first = next((i for i, (_, key, _) in enumerate(steps) if node.get(key)), len(steps))

        def back(dy: str, need: bool):
            start = 0 if need else first
            for i in range(len(steps) - 1, start - 1, -1):
                dy = backs[i](dy, need or i > start)
            return dy if need else None

        return x, new_state, back

    def _residual(self, rule, node, p, o, k, s, where, x):
        _, inner, check_skip = rule.composite
        if self.unchecked:
            self.check(rule, p, x, k, s, where)
        opaque_before = self.opaque_calls
        y, new_state, inner_back = self.emit(inner, node, p, o, k, s, (*where, "residual"), x)
        if self.opaque_calls > opaque_before:  # a user layer inside: its shapes are not known
            self.forward.append((f"{self.const(check_skip, 'R')}({x}, {y})", where))
        out = self.var("r")
        self.forward.append((f"{out} = {x} + {y}", where))
        self.unchecked = False

        def back(dy: str, need: bool):
            dx = inner_back(dy, need)
            if not need:
                return None
            total = self.var("d")
            self.backward.append((f"{total} = {dy} + {dx}", where))
            return total

        return out, new_state, back
