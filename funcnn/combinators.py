"""Combinators build models from layers: ``serial`` chains them, ``residual`` adds a skip.

A model is itself a :class:`funcnn.Layer`, so combinators nest freely.
"""

from __future__ import annotations

from funcnn import plan, random
from funcnn.errors import InputTypeError, LayerError, ParamsError, ShapeError
from funcnn.layers._checks import check_input
from funcnn.types import Layer

_NO_PARAMS: dict = {}


def serial(*layers: Layer) -> Layer:
    """Chain layers: ``y = layers[-1](... layers[1](layers[0](x)))``.

    Params are ``{"<index>": child_params}`` for the children that have params, so
    ``serial(Linear(2, 3), ReLU(), Linear(3, 1))`` has ``0.weight, 0.bias, 2.weight,
    2.bias``: the keys of ``torch.nn.Sequential``. Inserting a layer shifts the keys
    of those after it. Each child gets its own key from ``split(key, len(layers))``.

    The pullback runs the children's pullbacks in reverse. An error inside child ``i``
    is re-raised with ``serial[i]`` prepended to its index path.

    Example:
        >>> model = fn.serial(fn.layers.Linear(1, 16), fn.layers.ReLU(), fn.layers.Linear(16, 1))
        >>> params = model.init(0)
        >>> list(fn.tree.flatten(params))
        ['0.weight', '0.bias', '2.weight', '2.bias']
    """
    layers = tuple(layers)
    for i, layer in enumerate(layers):
        _check_layer(layer, f"serial[{i}]")
    keys = tuple(str(i) for i in range(len(layers)))
    known = frozenset(keys)
    steps = tuple(zip(layers, keys, [f"serial[{i}]" for i in range(len(layers))]))

    def init(key):
        child_keys = random.split(key, len(layers)) if layers else ()
        params = {}
        for (layer, k, step), child_key in zip(steps, child_keys):
            try:
                child_params = layer.init(child_key)
            except LayerError as e:
                raise e.within(step) from None
            if child_params:
                params[k] = child_params
        return params

    def apply(params, x):
        _check_params(params, known)
        for layer, k, step in steps:
            try:
                x = layer.apply(params.get(k, _NO_PARAMS), x)
            except LayerError as e:
                raise e.within(step) from None
        return x

    def vjp(params, x):
        return plan.vjp(compiled, params, x, generic_vjp)

    def generic_vjp(params, x):
        _check_params(params, known)
        pullbacks = []
        for layer, k, step in steps:
            try:
                x, pullback = layer.vjp(params.get(k, _NO_PARAMS), x)
            except LayerError as e:
                raise e.within(step) from None
            pullbacks.append(pullback)

        def pullback(dy):
            grads = {}
            for (_, k, step), child_pullback in zip(reversed(steps), reversed(pullbacks)):
                try:
                    child_grads, dy = child_pullback(dy)
                except LayerError as e:
                    raise e.within(step) from None
                if k in params:
                    grads[k] = child_grads
            return {k: grads[k] for k in params}, dy

        return x, pullback

    vjp.plan = plan.serial(layers)
    model = Layer(init, apply, vjp, name="serial", children=layers, child_keys=keys,
                  rebuild=lambda children: serial(*children))
    compiled = plan.Compiled(model)
    return model


def residual(layer: Layer) -> Layer:
    """A skip connection: ``y = x + layer(x)``; params are the inner layer's.

    The inner layer must keep the shape: any mismatch, even one numpy would
    broadcast, raises :class:`funcnn.errors.ShapeError` naming both shapes.
    Pullback: ``dx = dy + inner_dx``.
    """
    _check_layer(layer, "residual")
    name = "residual"

    def inner(f, params, x):
        try:
            return f(params, x)
        except LayerError as e:
            raise e.within(name) from None

    def check_same_shape(x, y):
        if y.shape != x.shape:
            raise ShapeError(
                f"the inner layer maps input {x.shape} to output {y.shape}; a skip connection "
                "needs equal shapes (use a projection or change the inner layer's out size)",
                layer=name,
            )

    def apply(params, x):
        x = check_input(x, name)
        y = inner(layer.apply, params, x)
        check_same_shape(x, y)
        return x + y

    def vjp(params, x):
        return plan.vjp(compiled, params, x, generic_vjp)

    def generic_vjp(params, x):
        x = check_input(x, name)
        y, inner_pullback = inner(layer.vjp, params, x)
        check_same_shape(x, y)

        def pullback(dy):
            try:
                dparams, dx = inner_pullback(dy)
            except LayerError as e:
                raise e.within(name) from None
            return dparams, dy + dx

        return x + y, pullback

    vjp.plan = plan.residual(layer)
    model = Layer(layer.init, apply, vjp, name=name, children=(layer,), child_keys=(None,),
                  rebuild=lambda children: residual(*children))
    compiled = plan.Compiled(model)
    return model


def _check_layer(layer, where: str) -> None:
    if isinstance(layer, Layer):
        return
    hint = ""
    if callable(layer) and getattr(layer, "__name__", "")[:1].isupper():
        hint = f"; did you forget to call it: {layer.__name__}(...)?"
    raise TypeError(f"{where}: expected a funcnn Layer, got {type(layer).__name__}{hint}")


def _check_params(params, known: frozenset) -> None:
    if type(params) is not dict:
        if not isinstance(params, dict):
            raise InputTypeError(f"params must be a dict, got {type(params).__name__}", layer="serial")
    if not params.keys() <= known:
        unexpected = sorted(set(params) - known)
        hint = "were these params made by this model's init?"
        if any("." in str(k) for k in unexpected):
            hint = "keys contain '.': these look like flattened params; pass fn.tree.unflatten(params)"
        raise ParamsError(
            f"unexpected params keys {unexpected} (this serial has children "
            f"{sorted(known, key=int)}); {hint}",
            layer="serial",
        )
