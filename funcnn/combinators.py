"""Combinators build models from layers: ``serial`` chains them, ``residual`` adds a skip,
``parallel`` runs one layer per branch.

A model is itself a :class:`funcnn.Layer`, so combinators nest freely. Branches are
tuples of arrays: ``fn.layers.FanOut(n)`` makes them, ``parallel`` maps them and
``fn.layers.FanInSum()`` / ``FanInConcat(axis)`` join them.
"""

from __future__ import annotations

from funcnn import kernel, random
from funcnn.checks import check_input
from funcnn.errors import InputTypeError, LayerError, ParamsError, ShapeError, StateError
from funcnn.kernel import EMPTY, NO_KEYS, Kernel, kernel_of
from funcnn.types import Layer


def serial(*layers: Layer) -> Layer:
    """Chain layers: ``y = layers[-1](... layers[1](layers[0](x)))``.

    Params are ``{"<index>": child_params}`` for the children that have params, so
    ``serial(Linear(2, 3), ReLU(), Linear(3, 1))`` has ``0.weight, 0.bias, 2.weight,
    2.bias``: the keys of ``torch.nn.Sequential``. Inserting a layer shifts the keys
    of those after it. The state is keyed the same way (``{"1": {"running_mean": ...}}``
    for a BatchNorm at index 1); children without state have no entry. Each child gets
    its own key from ``split(key, len(layers))`` (split only when a child is random).

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
    n = len(layers)
    keys = tuple(str(i) for i in range(n))
    known = frozenset(keys)
    kernels = tuple(kernel_of(layer) for layer in layers)
    steps = tuple(zip(kernels, keys, [f"serial[{i}]" for i in range(n)]))
    is_random = any(k.random for k in kernels)
    with_state = frozenset(k for kern, k, _ in steps if kern.stateful)

    def init(key):
        return _init_children(layers, "serial", key)

    def init_state():
        return _init_child_states(layers)

    def check(params, x, key, state, mode):
        _check_params(params, known)
        if state is not None:
            _check_state(state, with_state)

    def forward(params, x, key, state, mode):
        saved = [] if mode.grad else None
        check_children = not mode.trusted
        child_keys = random.split(key, n) if key is not None and is_random else NO_KEYS
        new_state = None if state is None else {}
        for (kern, k, step), child_key in zip(steps, child_keys):
            child_params = params.get(k, EMPTY)
            child_state = None if state is None else state.get(k, EMPTY)
            try:
                if check_children:
                    kern.check(child_params, x, child_key, child_state, mode)
                x, child_state, child_saved = kern.forward(child_params, x, child_key, child_state,
                                                           mode)
            except LayerError as e:
                raise e.within(step) from None
            if child_state:
                new_state[k] = child_state
            if saved is not None:
                saved.append(child_saved)
        return x, new_state, (saved, params)

    def backward(saved, dy, out, need_dx):
        saved, params = saved
        start = 0
        if not need_dx:  # stop at the first child with params: the ones before lead to the data
            start = n
            for i, k in enumerate(keys):
                if params.get(k):
                    start = i
                    break
        grads = {} if out is None else None
        for i in range(n - 1, start - 1, -1):
            kern, k, step = steps[i]
            try:
                child_grads, dy = kern.backward(saved[i], dy, None if out is None else out.get(k),
                                                need_dx or i > start)
            except LayerError as e:
                raise e.within(step) from None
            if grads is not None:
                grads[k] = child_grads
        if out is not None:
            return out, dy
        return {k: grads.get(k, {}) for k in params}, dy

    rule = Kernel(check, forward, backward, random=is_random, stateful=bool(with_state),
                  composite=("serial", steps))
    return kernel.layer(rule, init, "serial", init_state=init_state, children=layers,
                        child_keys=keys, rebuild=lambda children: serial(*children))


def residual(layer: Layer) -> Layer:
    """A skip connection: ``y = x + layer(x)``; params (and state) are the inner layer's.

    The inner layer must keep the shape: any mismatch, even one numpy would
    broadcast, raises :class:`funcnn.errors.ShapeError` naming both shapes.
    Pullback: ``dx = dy + inner_dx``.
    """
    _check_layer(layer, "residual")
    inner = kernel_of(layer)
    name = "residual"

    def check(params, x, key, state, mode):
        check_input(x, name)

    def forward(params, x, key, state, mode):
        try:
            if not mode.trusted:
                inner.check(params, x, key, state, mode)
            y, new_state, saved = inner.forward(params, x, key, state, mode)
        except LayerError as e:
            raise e.within(name) from None
        if not mode.trusted:
            _check_skip(x, y)
        return x + y, new_state, saved

    def backward(saved, dy, out, need_dx):
        try:
            dparams, dx = inner.backward(saved, dy, out, need_dx)
        except LayerError as e:
            raise e.within(name) from None
        return dparams, (dy + dx if need_dx else None)

    rule = Kernel(check, forward, backward, random=inner.random, stateful=inner.stateful,
                  composite=("residual", inner, _check_skip))
    return kernel.layer(rule, layer.init, name, init_state=layer.init_state, children=(layer,),
                        child_keys=(None,), rebuild=lambda children: residual(*children))


def parallel(*layers: Layer) -> Layer:
    """One layer per branch: input ``(x_0, ..., x_{n-1})``, output ``(layers[0](x_0), ...)``.

    Params (and state) are ``{"<i>": child_params}`` for the children that have them, as
    in :func:`serial`; each child gets its own key from ``split(key, n)``. The pullback
    takes and gives tuples. Build branches with ``fn.layers.FanOut(n)`` and join them with
    ``fn.layers.FanInSum()`` or ``FanInConcat(axis)``::

        block = fn.serial(fn.layers.FanOut(2),
                          fn.parallel(fn.layers.Linear(8, 4), fn.layers.Linear(8, 4)),
                          fn.layers.FanInConcat(axis=-1))
    """
    layers = tuple(layers)
    for i, layer in enumerate(layers):
        _check_layer(layer, f"parallel[{i}]")
    n = len(layers)
    keys = tuple(str(i) for i in range(n))
    known = frozenset(keys)
    kernels = tuple(kernel_of(layer) for layer in layers)
    steps = tuple(zip(kernels, keys, [f"parallel[{i}]" for i in range(n)]))
    is_random = any(k.random for k in kernels)
    with_state = frozenset(k for kern, k, _ in steps if kern.stateful)
    name = "parallel"

    def init(key):
        return _init_children(layers, name, key)

    def init_state():
        return _init_child_states(layers)

    def check(params, x, key, state, mode):
        _check_params(params, known, name)
        if state is not None:
            _check_state(state, with_state, name)
        if not isinstance(x, tuple) or len(x) != n:
            got = f"a tuple of {len(x)}" if isinstance(x, tuple) else type(x).__name__
            raise InputTypeError(f"expected a tuple of {n} branches (e.g. from fn.layers.FanOut({n})), "
                                 f"got {got}", layer=name)

    def forward(params, x, key, state, mode):
        child_keys = random.split(key, n) if key is not None and is_random else NO_KEYS
        new_state = None if state is None else {}
        ys, saved = [], []
        for (kern, k, step), branch, child_key in zip(steps, x, child_keys):
            child_params = params.get(k, EMPTY)
            child_state = None if state is None else state.get(k, EMPTY)
            try:
                if not mode.trusted:
                    kern.check(child_params, branch, child_key, child_state, mode)
                y, child_state, child_saved = kern.forward(child_params, branch, child_key,
                                                           child_state, mode)
            except LayerError as e:
                raise e.within(step) from None
            if child_state:
                new_state[k] = child_state
            ys.append(y)
            saved.append(child_saved)
        return tuple(ys), new_state, (saved, params)

    def backward(saved, dy, out, need_dx):
        saved, params = saved
        grads, dxs = {}, []
        for (kern, k, step), child_saved, branch_dy in zip(steps, saved, dy):
            try:
                child_grads, dx = kern.backward(child_saved, branch_dy,
                                                None if out is None else out.get(k), need_dx)
            except LayerError as e:
                raise e.within(step) from None
            grads[k] = child_grads
            dxs.append(dx)
        return (out if out is not None else {k: grads[k] for k in params}), (
            tuple(dxs) if need_dx else None)

    rule = Kernel(check, forward, backward, random=is_random, stateful=bool(with_state))
    return kernel.layer(rule, init, name, init_state=init_state, children=layers,
                        child_keys=keys, rebuild=lambda children: parallel(*children))


def _init_children(layers: tuple, name: str, key) -> dict:
    """``{"<i>": layers[i].init(key_i)}`` for the children with params, keys from
    ``split(key, n)``; an error in child ``i`` names ``name[i]``."""
    child_keys = random.split(key, len(layers)) if layers else ()
    params = {}
    for i, (layer, child_key) in enumerate(zip(layers, child_keys)):
        try:
            child_params = layer.init(child_key)
        except LayerError as e:
            raise e.within(f"{name}[{i}]") from None
        if child_params:
            params[str(i)] = child_params
    return params


def _init_child_states(layers: tuple) -> dict:
    """``{"<i>": layers[i].init_state()}`` for the children with state."""
    return {str(i): s for i, layer in enumerate(layers) if (s := layer.init_state())}


def _check_skip(x, y) -> None:
    """A skip connection ``x + y`` needs equal shapes, not broadcastable ones."""
    if getattr(y, "shape", None) != x.shape:
        raise ShapeError(
            f"the inner layer maps input {x.shape} to output {getattr(y, 'shape', type(y).__name__)}; "
            "a skip connection needs equal shapes (use a projection or change the inner "
            "layer's out size)", layer="residual")


def _check_layer(layer, where: str) -> None:
    if isinstance(layer, Layer):
        return
    hint = ""
    if callable(layer) and getattr(layer, "__name__", "")[:1].isupper():
        hint = f"; did you forget to call it: {layer.__name__}(...)?"
    raise TypeError(f"{where}: expected a funcnn Layer, got {type(layer).__name__}{hint}")


def _check_params(params, known: frozenset, name: str = "serial") -> None:
    if type(params) is not dict:
        if not isinstance(params, dict):
            raise InputTypeError(f"params must be a dict, got {type(params).__name__}", layer=name)
    if not params.keys() <= known:
        unexpected = sorted(set(params) - known)
        hint = "were these params made by this model's init?"
        if any("." in str(k) for k in unexpected):
            hint = "keys contain '.': these look like flattened params; pass fn.tree.unflatten(params)"
        raise ParamsError(
            f"unexpected params keys {unexpected} (this {name} has children "
            f"{sorted(known, key=int)}); {hint}",
            layer=name,
        )


def _check_state(state, with_state: frozenset, name: str = "serial") -> None:
    if type(state) is not dict and not isinstance(state, dict):
        raise StateError(f"state must be a dict, got {type(state).__name__}; start from "
                         "model.init_state()", layer=name)
    if not state.keys() <= with_state:
        raise StateError(
            f"unexpected state keys {sorted(set(state) - with_state)} (children with state: "
            f"{sorted(with_state, key=int)}); was this state made by this model's init_state()?",
            layer=name)
