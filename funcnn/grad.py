"""Gradients of a loss through a model: ``value_and_grad`` and ``grad``."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from funcnn.errors import ShapeError
from funcnn.kernel import Kernel, Mode, kernel_of
from funcnn.layout import Layout, layout_of
from funcnn.program import Program, compile_program
from funcnn.losses import Loss
from funcnn.types import Layer, Params


def value_and_grad(model: Layer, loss) -> Callable[..., tuple]:
    """Return ``f(params, x, y, *, key=None, state=None) -> (value, grads)`` for
    ``loss(model.apply(params, x, key=key, train=True), y)``.

    ``value`` is exactly the float the loss returns for this batch and ``grads`` is its
    exact gradient with respect to ``params`` (same structure and dtypes). ``loss`` is a
    funcnn loss (see :mod:`funcnn.losses`) or a ``functools.partial`` of one. The model
    runs in training mode: ``key`` feeds its random layers (Dropout); passing ``state=``
    (BatchNorm statistics) returns ``(value, grads, new_state)``.

    The fast path: the first time ``params`` come with a new flat layout (key paths,
    shapes, one float dtype; see :mod:`funcnn.layout`) they are checked against the
    model once and the model's kernels are composed into a program for that layout
    (:mod:`funcnn.program`); after that each call checks only that ``params`` still have
    that layout, runs every layer's kernel without its own params checks, writes the
    grads into one fresh flat buffer (which the optimizers recognise) and skips the
    gradient of the data. The results are bitwise those of ``model.vjp``. Cached per
    returned function: those programs (at most 16); they change nothing but speed.

    Example:
        >>> f = fn.value_and_grad(model, fn.losses.mse)
        >>> loss_value, grads = f(params, x_batch, y_batch)
    """
    if not isinstance(model, Layer):
        raise TypeError(f"value_and_grad: model must be a funcnn Layer, got {type(model).__name__}")
    loss_value_and_grad = loss_gradient_rule(loss)
    rule = kernel_of(model)
    programs = Programs(rule)

    def value_and_grad_fn(params: Params, x: np.ndarray, y: np.ndarray, *, key=None,
                          state=None) -> tuple:
        found = programs.lookup(params, x, key is not None, state is not None)
        if found is not None:
            layout, program = found
            pred, new_state, saved = program.forward(params, x, key, state)
        else:  # the first call with this layout and input signature: every check runs
            rule.check(params, x, key, state, CHECKED)
            pred, new_state, saved = rule.forward(params, x, key, state, CHECKED)
        value, dpred = loss_value_and_grad(pred, y)
        if type(dpred) is not np.ndarray or dpred.shape != pred.shape:
            got = getattr(dpred, "shape", type(dpred).__name__)
            raise ShapeError(f"the loss's gradient rule returned dpred {got} for a prediction of "
                             f"shape {np.shape(pred)}; it must return an array of that shape",
                             layer="loss")
        if found is not None:
            grads = program.backward(saved, dpred, layout.views(np.empty(layout.size, layout.dtype)))
        else:
            layout = programs.add(params, x, key is not None, state is not None)
            out = None if layout is None else layout.views(np.empty(layout.size, layout.dtype))
            grads, _ = rule.backward(saved, dpred, out, False)
        return (value, grads) if state is None else (value, grads, new_state)

    return value_and_grad_fn


CHECKED = Mode(train=True, trusted=False, grad=True)


def input_signature(x) -> tuple | None:
    """What a program assumes of its input: dtype and shape but the batch axis (None for
    anything but an ndarray). Every check a kernel makes depends only on these."""
    if type(x) is not np.ndarray:
        return None
    return x.dtype, x.ndim, (x.shape[1:] if x.ndim > 1 else x.shape)


class Programs:
    """A model's programs (:mod:`funcnn.program`), one per params layout, input
    signature and use of ``key=``/``state=``: the fast path's only cache (at most 16;
    they change nothing but speed).

    ``add(params, x, ...)``, called after a checked call succeeded with these arguments,
    builds the program for them (and returns their layout, or None when ``params`` have
    no flat layout: mixed dtypes, no leaves); ``lookup(params, x, ...)`` returns
    ``(layout, program)`` for arguments like those of an earlier ``add``, else None.
    """

    _MAX = 16

    def __init__(self, rule: Kernel):
        self._rule = rule
        self._programs: dict = {}
        self._last: tuple | None = None  # (layout, x dtype, ndim, x.shape[1:], (key?, state?), program)

    def lookup(self, params, x, with_key: bool, with_state: bool) -> tuple[Layout, Program] | None:
        last = self._last
        if (last is not None and type(x) is np.ndarray and x.dtype is last[1] and x.ndim == last[2]
                and x.shape[1:] == last[3] and last[4] == (with_key, with_state)):
            layout = last[0]  # the common case, checked field by field
            if layout.known_leaves(params) is not None or layout.match(params) is not None:
                return layout, last[5]
        signature = (input_signature(x), with_key, with_state)
        layout = layout_of(params) if type(params) is dict else None
        program = self._programs.get((layout, signature)) if layout is not None else None
        if program is None:
            return None
        self._remember(layout, signature, program)
        return layout, program

    def add(self, params, x, with_key: bool, with_state: bool) -> Layout | None:
        layout = layout_of(params) if type(params) is dict else None
        signature = (input_signature(x), with_key, with_state)
        if layout is None or signature[0] is None:
            return layout
        program = compile_program(self._rule, layout, with_key, with_state)
        if len(self._programs) >= self._MAX:
            self._programs.clear()
        self._programs[(layout, signature)] = program
        self._remember(layout, signature, program)
        return layout

    def _remember(self, layout: Layout, signature: tuple, program: Program) -> None:
        (dtype, ndim, tail), with_key, with_state = signature
        batched = ndim > 1  # 1-d inputs (no batch axis) take the full lookup
        self._last = (layout, dtype, ndim, tail, (with_key, with_state), program) if batched else None


def grad(model: Layer, loss) -> Callable[..., Params]:
    """Like :func:`value_and_grad`, returning only the grads (``(grads, new_state)`` when
    ``state=`` is passed)."""
    value_and_grad_fn = value_and_grad(model, loss)

    def grad_fn(params: Params, x: np.ndarray, y: np.ndarray, *, key=None, state=None):
        result = value_and_grad_fn(params, x, y, key=key, state=state)
        return result[1] if state is None else result[1:]

    return grad_fn


def loss_gradient_rule(loss) -> Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]:
    """``(pred, target) -> (value, dpred)`` for a Loss or a keyword ``partial`` of one."""
    if isinstance(loss, Loss):
        return loss.value_and_grad
    if isinstance(loss, functools.partial) and isinstance(loss.func, Loss) and not loss.args:
        return functools.partial(loss.func.value_and_grad, **loss.keywords)
    raise TypeError(
        f"expected a funcnn loss (e.g. fn.losses.mse), got {loss!r}; a plain function has no "
        "gradient rule: wrap f(pred, target) -> (value, dpred) with fn.losses.make_loss"
    )
