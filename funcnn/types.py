"""The types funcnn is built from: params, state, keys, pullbacks and the Layer protocol."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

Params = dict[str, Any]
"""A pytree: nested dict with str keys and ndarray leaves (``{}`` for no params)."""

Key = np.ndarray
"""A random key from ``fn.random.key(seed)``: uint32 array of shape (2,)."""

State = dict[str, Any]
"""A model's state (BatchNorm's running statistics): a pytree keyed like its params."""

Pullback = Callable[[np.ndarray], tuple[Params, np.ndarray]]
"""``pullback(dy) -> (dparams, dx)``: the vector-Jacobian product at one point."""


def no_state() -> State:
    """The ``init_state`` of a layer without state: ``{}``."""
    return {}


class Layer(NamedTuple):
    """A layer is three pure functions (plus a name for printing and errors).

    - ``init(key) -> params``: a key (or int seed) to a params pytree (``{}`` if none).
    - ``apply(params, x) -> y``: the forward rule. No hidden state, no mutation.
    - ``vjp(params, x) -> (y, pullback)`` with ``pullback(dy) -> (dparams, dx)``;
      ``dparams`` has exactly the structure of ``params``.
    - ``init_state() -> state``: the layer's state before training, a pytree keyed like
      its params (``{}`` for layers without state, the default).

    Built-in layers and combinators take three keyword arguments more (``context=True``)::

        apply(params, x, *, key=None, state=None, train=False)
        vjp(params, x, *, key=None, state=None, train=True)

    ``key`` feeds random layers (Dropout) in training; ``train`` picks training or
    evaluation behaviour; passing ``state=`` (even ``{}``) appends the new state to the
    result: ``apply -> (y, new_state)``, ``vjp -> (y, pullback, new_state)``.

    A user layer written to the two-argument contract (the default ``context=False``)
    works unchanged inside ``serial``/``residual``, ``value_and_grad``, ``train_step``,
    ``fit`` and ``check_grads``: it is called as ``apply(params, x)``. To opt in to
    keys, state and modes, give ``apply``/``vjp`` the three keywords above, pass
    ``context=True`` and, for state, ``init_state`` (see docs/extending.md).

    ``children`` and ``child_keys`` describe composite layers for printing and
    :func:`funcnn.summary`: child ``i`` uses ``params[child_keys[i]]``, or the whole
    ``params`` when that key is ``None``. ``rebuild(children)`` makes the same
    composite from other children (used by :func:`funcnn.debug.check_finite`).
    ``kernel`` is a built-in layer's math (:mod:`funcnn.kernel`); user layers leave it
    None and run as one opaque step.

    Example, a custom layer that scales its input by a learned vector::

        def Scale(n):
            def init(key):
                return {"scale": np.ones(n)}
            def apply(params, x):
                return x * params["scale"]
            def vjp(params, x):
                def pullback(dy):
                    return {"scale": (dy * x).reshape(-1, n).sum(0)}, dy * params["scale"]
                return apply(params, x), pullback
            return fn.Layer(init, apply, vjp, name=f"Scale({n})")
    """

    init: Callable[[Any], Params]
    apply: Callable[..., Any]
    vjp: Callable[..., tuple]
    name: str = "Layer"
    children: tuple[Layer, ...] = ()
    child_keys: tuple[str | None, ...] = ()
    rebuild: Callable[[tuple[Layer, ...]], Layer] | None = None
    init_state: Callable[[], State] = no_state
    context: bool = False
    kernel: Any = None  # funcnn.kernel.Kernel for built-in layers

    def __call__(self, *args, **kwargs):
        raise TypeError(f"{self.name} is a Layer, not a function: call model.apply(params, x) for "
                        "its output (or model.vjp(params, x) for the output and its pullback)")

    def __repr__(self) -> str:
        return "\n".join(self._lines())

    def _lines(self) -> list[str]:
        if not self.children:
            return [self.name]
        lines = [f"{self.name}("]
        for i, child in enumerate(self.children):
            label = f"[{self.child_keys[i]}] " if self.child_keys[i] is not None else ""
            child_lines = child._lines()
            lines.append(f"  {label}{child_lines[0]}")
            lines.extend(f"  {line}" for line in child_lines[1:])
        lines.append(")")
        return lines
