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

Memory: every intermediate is dropped (``del``) right after its last use, and
``backward`` empties the ``saved`` list it is given, so each layer's saved arrays are
freed as soon as its backward has run. Where a kernel may overwrite its input
(``Kernel.forward_into_x``, ``Kernel.backward_into_dy``: ReLU) and nothing else can
see that array (it is dead after the call and came from a kernel whose ``y_memory`` or
``dx_memory`` is ``"new"``), the program calls that variant: its output takes no new
memory.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

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
    has run the checked kernels on such params. ``backward`` computes no ``dx``.

    ``forward`` returns ``saved`` as a list, which ``backward`` empties: the caller's
    reference then keeps nothing alive."""
    w = _Writer()
    y, new_state, back = w.emit(rule, layout.nested, "P", "O", "K" if with_key else "None",
                                "S" if with_state else None, (), "x")
    back("dy", False)
    saved = ", ".join(w.saved)
    forward_return = f"return {y}, {new_state or 'None'}, [{saved}]"
    forward = _with_deletes(_reuse_inputs(w.forward, w.fresh), before=[], after=forward_return)
    backward = _with_deletes(_reuse_inputs(w.backward, w.fresh), before=w.saved, after="")
    # a kernel's error is re-raised with the steps around the line that called it
    # (the traceback's line number in the generated function: free until something raises)
    lines, where = [], {}

    def body(header: list[str], steps: list, footer: list[str]) -> None:
        lines.extend(header)
        lines.append("    try:")
        for line, at in steps:
            if at is not None:
                where[len(lines) + 1] = at
            lines.append(f"        {line}")
        lines.extend(["    except LayerError as e:",
                      "        raise within(e, WHERE[e.__traceback__.tb_lineno]) from None",
                      *footer])

    body(["def forward(P, x, K, S):"], forward, [f"    {forward_return}", ""])
    unpack = [f"    ({saved},) = saved", "    saved.clear()"] if w.saved else []
    body(["def backward(saved, dy, O):", *unpack], backward, ["    return O"])
    source = "\n".join(lines)
    scope = {**w.scope, "LayerError": LayerError, "within": _within, "WHERE": where,
             "M": TRUSTED, "E": EMPTY, "split": random.split}
    exec(source, scope)
    return Program(scope["forward"], scope["backward"], source)


class _Call(NamedTuple):
    """A kernel call that may run in place: written out by :func:`_reuse_inputs`, once it
    is known whether its input (``x`` forward, ``dy`` backward) may be overwritten."""

    input: str
    output: str | None  # None: the output is not wanted (a backward without dx)
    memory: str | None  # the output is "new", the "input" or a view of it, or None: not known
    plain: str  # the line that calls the kernel's function
    in_place: str | None  # the line that calls its variant that may overwrite the input


_STRINGS = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_LOCALS = re.compile(r"\b(?:[a-z]+[0-9]+|x|dy)\b")  # generated locals (constants: upper case)


def _names(line: str) -> set[str]:
    """The local variables a generated line mentions (not inside the layout's key strings)."""
    return set(_LOCALS.findall(_STRINGS.sub("''", line)))


def _reuse_inputs(steps: list, fresh: set[str]) -> list[tuple[str, tuple]]:
    """The lines of ``steps``: each kernel call runs in place when its input is owned (an
    array nothing else refers to: made by a kernel whose output is ``"new"``, or ``fresh``
    here) and not read after the call. (A kernel's ``"new"`` output written into its
    input is still owned: the input was, and is dead.)"""
    last = {}
    for i, (step, _) in enumerate(steps):
        for name in _names(step if isinstance(step, str) else step.plain):
            last[name] = i
    owned, lines = set(fresh), []
    for i, (step, where) in enumerate(steps):
        if isinstance(step, str):
            lines.append((step, where))
            continue
        reusable = step.input in owned and last[step.input] == i
        in_place = reusable and step.in_place is not None
        if step.output is not None and (step.memory == "new"
                                        or (step.memory == "input" and reusable)):
            owned.add(step.output)
        lines.append((step.in_place if in_place else step.plain, where))
    return lines


def _with_deletes(steps: list[tuple[str, tuple]], before: list[str], after: str) -> list:
    """``steps`` with ``del`` lines: each local goes right after the last line that mentions
    it (``before``: the names bound before the first line; ``after``: the line that follows)."""
    keep = _names(after)
    last = {name: -1 for name in before}
    for i, (line, _) in enumerate(steps):
        for name in _names(line):
            last[name] = i
    dead: dict[int, list[str]] = {}
    for name, i in last.items():
        if name not in keep:
            dead.setdefault(i, []).append(name)
    out = [(f"del {', '.join(sorted(dead[-1]))}", None)] if -1 in dead else []
    for i, step in enumerate(steps):
        out.append(step)
        if i in dead:
            out.append((f"del {', '.join(sorted(dead[i]))}", None))
    return out


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
        self.fresh: set[str] = set()  # variables that are new arrays (see _reuse_inputs)
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


    def kernel_call(self, source: str, target: str | None, memory: str | None, same: str,
                    line: Callable[[str], str], function: Callable, in_place: Callable | None,
                    prefix: str) -> _Call:
        """A :class:`_Call` of ``function`` (or ``in_place``), ``line(name)`` the line that
        calls the function of that name; ``memory`` is the kernel's ``y_memory`` or
        ``dx_memory``, in which ``same`` means the input."""
        variant = line(self.const(in_place, prefix)) if in_place is not None else None
        memory = "input" if memory == same else memory
        return _Call(source, target, memory, line(self.const(function, prefix)), variant)

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
        y, ns, saved = self.var("y"), self.var("n") if s is not None else "_", self.var("s")
        self.saved.append(saved)

        def call(f):
            return f"{y}, {ns}, {saved} = {f}({p}, {x}, {k}, {s or 'None'}, M)"

        self.forward.append((self.kernel_call(x, y, rule.y_memory, "x", call, rule.forward,
                                              rule.forward_into_x, "F"), where))

        def back(dy: str, need_dx: bool):
            d = self.var("d") if need_dx else None

            def call(b):
                return f"_, {d or '_'} = {b}({saved}, {dy}, {o}, {need_dx})"

            self.backward.append((self.kernel_call(dy, d, rule.dx_memory, "dy", call, rule.backward,
                                                   rule.backward_into_dy, "B"), where))
            return d

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
        self.fresh.add(out)
        self.forward.append((f"{out} = {x} + {y}", where))
        self.unchecked = False

        def back(dy: str, need: bool):
            dx = inner_back(dy, need)
            if not need:
                return None
            total = self.var("d")
            self.fresh.add(total)
            self.backward.append((f"{total} = {dy} + {dx}", where))
            return total

        return out, new_state, back
