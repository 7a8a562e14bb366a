"""Find where NaN or Inf first appears, forward or backward.

``check_finite(model)`` returns the same model with a check after every layer's
output and every pullback's result. The first non-finite value raises
:class:`funcnn.errors.NonFiniteError` naming the layer's index path, the direction
and the batch rows affected::

    debug_model = fn.debug.check_finite(model)
    fn.value_and_grad(debug_model, fn.losses.mse)(params, x, y)
    # NonFiniteError: serial[2] Linear(16 -> 1): backward produced non-finite
    #   dparams['weight'] (rows of dx affected: [3, 17])

Nothing changes for the original model: the checks live only in the returned copy,
so the normal path costs nothing. There is no global switch.
"""

from __future__ import annotations

import numpy as np

from funcnn import tree
from funcnn.errors import NonFiniteError
from funcnn.types import Layer


def check_finite(model: Layer) -> Layer:
    """Return ``model`` with finiteness checks on every layer, forward and backward.

    The params are the same as the model's: ``check_finite(model).init`` is
    ``model.init``, and params of either work with both.
    """
    return _wrap(model, ())


def _wrap(layer: Layer, where: tuple[str, ...]) -> Layer:
    if layer.children and layer.rebuild is not None:
        steps = [f"{layer.name}[{k}]" if k is not None else layer.name for k in layer.child_keys]
        children = tuple(_wrap(child, (*where, step)) for child, step in zip(layer.children, steps))
        rebuilt = layer.rebuild(children)
        if not where:
            return _checked(rebuilt, where, check_output=False)
        return rebuilt
    return _checked(layer, where)


def _checked(layer: Layer, where: tuple[str, ...], check_output: bool = True) -> Layer:
    """Check the model input (outermost only) and this layer's output and pullback."""
    label = " ".join(part for part in (".".join(where), layer.name) if part)

    def apply(params, x):
        if not where:
            _check_array(x, "input", "x", label)
        y = layer.apply(params, x)
        if check_output:
            _check_array(y, "forward", "output", label)
        return y

    def vjp(params, x):
        if not where:
            _check_array(x, "input", "x", label)
        y, pullback = layer.vjp(params, x)
        if check_output:
            _check_array(y, "forward", "output", label)

        def checked_pullback(dy):
            dparams, dx = pullback(dy)
            if check_output:
                _check_array(dx, "backward", "dx", label)
                for path, leaf in tree.flatten(dparams).items():
                    if not isinstance(leaf, dict):
                        _check_array(leaf, "backward", f"dparams[{path!r}]", label, dx)
            return dparams, dx

        return y, checked_pullback

    return layer._replace(apply=apply, vjp=vjp)


def _check_array(a, direction: str, what: str, label: str, rows_from=None) -> None:
    a = np.asarray(a)
    if a.dtype.kind not in "fc" or np.all(np.isfinite(a)):
        return
    source = a if rows_from is None else np.asarray(rows_from)
    bad_rows = _bad_rows(source)
    rows = f"; batch rows affected: {bad_rows}" if bad_rows else ""
    counts = f"{int(np.sum(np.isnan(a)))} NaN, {int(np.sum(np.isinf(a)))} Inf"
    raise NonFiniteError(
        f"{label}: {direction} produced non-finite {what} ({counts} of {a.size}){rows}"
        if direction != "input" else f"{label}: the input x has non-finite values ({counts}){rows}",
        where=label, direction=direction, rows=bad_rows,
    )


def _bad_rows(a: np.ndarray) -> list[int]:
    if a.ndim < 2:
        return []
    bad = ~np.isfinite(a).reshape(a.shape[0], -1).all(axis=1)
    return np.flatnonzero(bad).tolist()
