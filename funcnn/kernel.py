"""Kernels: each layer's math, written once, and the ``apply``/``vjp`` derived from it.

A :class:`Kernel` is a layer's rule in three plain functions::

    check(params, x, key, state, mode) -> None       # raises on bad input, names the layer
    forward(params, x, key, state, mode) -> (y, new_state, saved)
    backward(saved, dy, out, need_dx) -> (dparams, dx)

Both paths of funcnn run these same functions, so they cannot drift apart:

- the generic path (``layer.apply``, ``layer.vjp``) runs ``check`` before every
  ``forward`` (``mode.trusted=False``), and ``backward`` allocates the grads
  (``out=None``);
- the fast path (:func:`funcnn.value_and_grad`, ``train_step``, ``fit``) runs the
  generic path the first time it meets a params layout and input signature, then
  composes the kernels into a program (:mod:`funcnn.program`) that runs ``forward`` and
  ``backward`` alone for params of that layout and inputs of that signature, with
  ``out`` a nested dict of views into one fresh grads buffer that each backward writes
  into; ``need_dx=False`` lets the first layers skip the gradient of the data.

What ``check`` may assume is therefore decided by shapes and dtypes, not values:
everything that depends on the batch size or on values stays in ``forward``.
``state`` is the layer's state subtree (``{}`` when it has none), or None when the
caller passed no ``state=``: a stateful kernel then raises :class:`StateError` naming
the layer. ``key`` is None or this layer's own key. ``saved`` is whatever the backward
needs, and nothing more. Composites (``serial``, ``residual``) are kernels over their
children's kernels; a user-written layer (a plain ``fn.Layer(init, apply, vjp)``) becomes
one opaque kernel that calls its ``vjp`` and copies its grads into ``out``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from funcnn import random, tree
from funcnn.errors import ParamsError, RandomKeyError, StateError, StructureError
from funcnn.checks import check_cotangent
from funcnn.types import Layer, Params, State, no_state


class Mode(NamedTuple):
    """How a kernel is called.

    ``train``: training mode (batch statistics, dropout) or evaluation. ``trusted``:
    inputs of this layout and signature passed every check before (the fast path), so
    composites skip their children's checks. ``grad``: a backward pass will follow
    (``vjp``), so keep what it needs.
    """

    train: bool
    trusted: bool
    grad: bool


class Kernel(NamedTuple):
    """One layer's rule: see the module docstring for the three signatures.

    ``random``: training needs a key. ``stateful``: the layer keeps state.
    ``composite``: how ``serial`` and ``residual`` describe their children to
    :mod:`funcnn.program` (None for every other kernel).

    Facts about memory let a program reuse it (:mod:`funcnn.program`); none changes a
    result. ``y_memory``: what the forward's ``y`` is, ``"new"`` (an array sharing memory
    with nothing else: not ``saved``, params or ``x``), ``"x"`` (``x`` itself or a view of
    it) or None (not known: user layers, or ``y`` is kept in ``saved``). ``dx_memory``:
    the same for the backward's ``dx`` (``"new"``, ``"dy"`` or None). ``forward_into_x``
    and ``backward_into_dy``: the forward and backward again, allowed to write ``y`` into
    ``x``'s (``dx`` into ``dy``'s) memory; a program calls them when nothing else can see
    that array (ReLU then costs no new memory: on a CNN, an activation-sized array
    each way).
    """

    check: Callable[..., None]
    forward: Callable[..., tuple[Any, State | None, Any]]
    backward: Callable[..., tuple[Params, Any]]
    random: bool = False
    stateful: bool = False
    composite: tuple | None = None
    y_memory: str | None = None
    dx_memory: str | None = None
    forward_into_x: Callable[..., tuple[Any, State | None, Any]] | None = None
    backward_into_dy: Callable[..., tuple[Params, Any]] | None = None


EMPTY: dict = {}  # read only by convention: the params or state of a layer without them
NO_KEYS = itertools.repeat(None)  # the child keys when no key is given


def layer(kernel: Kernel, init: Callable[[Any], Params], name: str, *,
          init_state: Callable[[], State] = no_state, **composite) -> Layer:
    """The :class:`funcnn.Layer` whose ``apply`` and ``vjp`` run ``kernel``.

    ``apply(params, x, *, key=None, state=None, train=False)`` and ``vjp(params, x, *,
    key=None, state=None, train=True)``; passing ``state=`` appends the new state to the
    result. ``composite`` passes ``children``, ``child_keys`` and ``rebuild`` through.
    """
    check, forward, backward = kernel.check, kernel.forward, kernel.backward

    def apply(params, x, *, key=None, state=None, train=False):
        mode = Mode(bool(train), False, False)
        check(params, x, key, state, mode)
        y, new_state, _ = forward(params, x, key, state, mode)
        return y if state is None else (y, new_state)

    def vjp(params, x, *, key=None, state=None, train=True):
        mode = Mode(bool(train), False, True)
        check(params, x, key, state, mode)
        y, new_state, saved = forward(params, x, key, state, mode)

        def pullback(dy):
            return backward(saved, check_dy(dy, y, name), None, True)

        return (y, pullback) if state is None else (y, pullback, new_state)

    return Layer(init, apply, vjp, name=name, init_state=init_state, context=True,
                 kernel=kernel, **composite)


def no_params(key) -> Params:
    """The ``init`` of a layer without params: checks the key, returns ``{}``."""
    random.as_key(key)
    return {}


def no_check(params, x, key, state, mode) -> None:
    """The ``check`` of a kernel that checks nothing itself (user layers check theirs)."""


def check_dy(dy, y, name: str):
    """``dy`` if it can be the cotangent of ``y``: an array of its shape, or for a tuple
    ``y`` (branches) a tuple of such arrays."""
    if isinstance(y, tuple):
        return check_cotangent(dy, tuple(branch.shape for branch in y), name)
    return check_cotangent(dy, y.shape, name)


def kernel_of(layer_: Layer) -> Kernel:
    """The layer's kernel; a user-written layer gets an opaque one (see :func:`opaque`)."""
    return layer_.kernel if layer_.kernel is not None else opaque(layer_)


def opaque(user: Layer) -> Kernel:
    """A user-written layer as one step: its own ``vjp`` forward, its pullback backward,
    its dparams copied into their slots of ``out`` on the fast path.

    A layer written to the two-argument contract (``context=False``) is called as
    ``vjp(params, x)`` and keeps no state; one with ``context=True`` gets ``key=``,
    ``train=`` and (when the caller passed state) ``state=``.
    """
    name, context = user.name, user.context

    def forward(params, x, key, state, mode):
        if not context:  # the two-argument contract: no key, no state, no mode
            if mode.grad:
                y, pullback = user.vjp(params, x)
                return y, state, pullback
            return user.apply(params, x), state, None
        kwargs = {"key": key, "train": mode.train}
        if state is not None:
            kwargs["state"] = state
        result = (user.vjp if mode.grad else user.apply)(params, x, **kwargs)
        if mode.grad:
            if state is None:
                y, pullback = result
                return y, None, pullback
            y, pullback, new_state = result
            return y, new_state, pullback
        if state is None:
            return result, None, None
        y, new_state = result
        return y, new_state, None

    def backward(pullback, dy, out, need_dx):
        dparams, dx = pullback(dy)
        if out is not None:
            _copy_grads(out, dparams, name)
            return out, dx
        return dparams, dx

    return Kernel(no_check, forward, backward, random=context,
                  stateful=user.init_state is not no_state)


def _copy_grads(out: Params, dparams: Params, name: str) -> None:
    """Write a user layer's dparams into the grads buffer's views ``out``."""
    try:
        tree.assert_same_structure(out, dparams, names=("its params", "the dparams its pullback returned"))
    except StructureError as e:
        raise ParamsError(str(e), layer=name) from None
    grads = tree.flatten(dparams)
    for path, view in tree.flatten(out).items():
        if isinstance(view, dict):
            continue
        grad = grads[path]
        if np.shape(grad) != view.shape:
            raise ParamsError(f"its pullback returned dparams[{path!r}] of shape {np.shape(grad)}, "
                              f"expected {view.shape} (the shape of params there)", layer=name)
        np.copyto(view, grad, casting="same_kind")


# --- checks shared by the kernels ---------------------------------------------------------


def require_state(state, name: str, what: str) -> None:
    """StateError unless the caller passed ``state=`` to a model with state."""
    if state is None:
        raise StateError(
            f"this layer keeps state ({what}); pass state=model.init_state() (or the state the "
            "last call returned) and use the new state it gives back: "
            "y, state = model.apply(params, x, state=state)", layer=name)


def require_key(key, name: str) -> None:
    """RandomKeyError unless a key was given for training."""
    if key is None:
        raise RandomKeyError(
            "training mode needs a random key: pass key=fn.random.key(seed) (a new one per "
            "step, e.g. fn.random.fold_in(key, step)), or train=False to evaluate", layer=name)


def state_leaf(state: State, name: str, layer_name: str, shape: tuple, dtype) -> np.ndarray:
    """``state[name]``, checked to be an array of ``shape`` and ``dtype`` kind."""
    try:
        leaf = state[name]
    except (KeyError, TypeError):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise StateError(f"state must have {name!r}, got {got}; was this state made by this "
                         "model's init_state()?", layer=layer_name) from None
    if not isinstance(leaf, np.ndarray) or leaf.shape != shape or leaf.dtype != dtype:
        got = (f"{leaf.shape} {leaf.dtype}" if isinstance(leaf, np.ndarray) else type(leaf).__name__)
        raise StateError(f"state[{name!r}] must be an array of shape {shape} and dtype "
                         f"{np.dtype(dtype)}, got {got}", layer=layer_name)
    return leaf


__all__ = ["EMPTY", "Kernel", "Mode", "check_dy", "kernel_of", "layer", "no_check", "no_params", "opaque",
           "require_key", "require_state", "state_leaf"]
