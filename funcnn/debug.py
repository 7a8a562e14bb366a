"""Find where NaN or Inf first appears, forward or backward.

``check_finite(model)`` returns the same model with a check after every layer's
output and every pullback's result. The first non-finite value raises
:class:`funcnn.errors.NonFiniteError` naming the layer's index path, the direction
and the batch rows affected::

    debug_model = fn.debug.check_finite(model)
    fn.value_and_grad(debug_model, fn.losses.mse)(params, x, y)
    # NonFiniteError: serial[2] Sigmoid(): forward produced non-finite output
    #   (3 NaN, 0 Inf of 64); batch rows affected: [3, 17]

What is checked, in order:

- ``"input"``: the model's input ``x`` (outermost layer only);
- ``"forward"``: every layer's output, innermost first, then each composite's own
  output (a ``residual``'s ``x + layer(x)`` can overflow even when both terms are finite);
- ``"backward"``: the cotangent ``dy`` handed to the model's pullback (it comes from the
  loss), then every pullback's ``dx`` and ``dparams`` in the order the pullbacks run.
  A non-finite ``dparams`` entry is named by its dotted grads key (``"2.weight"``).

Batch rows are indices along the first axis of the offending array (``x``, a layer's
output, or ``dx``); 1-d arrays have no batch axis and list no rows. When numpy errors are
set to raise (``np.errstate(all="raise")``), the ``FloatingPointError`` numpy raises
inside a layer becomes the same :class:`NonFiniteError` naming that layer (the rows are
found by re-running the layer with numpy errors ignored), chained to the original.

Nothing changes for the original model: the checks live only in the returned copy,
so the normal path costs nothing. There is no global switch. Params are interchangeable:
``check_finite(model).init`` gives the same params as ``model.init``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from funcnn import tree
from funcnn.errors import FuncnnError, NonFiniteError
from funcnn.types import Layer


def check_finite(model: Layer) -> Layer:
    """Return ``model`` with finiteness checks on every layer, forward and backward.

    The params are the same as the model's: ``check_finite(model).init`` is
    ``model.init`` (for a composite, a rebuilt one that gives bitwise the same params),
    and params of either work with both. Outputs and gradients are bitwise those of
    ``model`` whenever everything is finite.

    Raises:
        TypeError: ``model`` is not a :class:`funcnn.Layer`.
    """
    if not isinstance(model, Layer):
        raise TypeError(
            f"check_finite: expected a funcnn Layer (a model), got {type(model).__name__}"
        )
    return _wrap(model, (), "")


def _wrap(layer: Layer, where: tuple[str, ...], prefix: str) -> Layer:
    """Check ``layer`` and, for composites that can be rebuilt, each child first."""
    composite = bool(layer.children) and layer.rebuild is not None
    if composite:
        children = []
        for child, k in zip(layer.children, layer.child_keys):
            step = layer.name if k is None else f"{layer.name}[{k}]"
            child_prefix = prefix if k is None else _join(prefix, k)
            children.append(_wrap(child, (*where, step), child_prefix))
        layer = layer.rebuild(tuple(children))
    return _checked(layer, where, prefix, check_dparams=not composite)


def _checked(layer: Layer, where: tuple[str, ...], prefix: str, check_dparams: bool) -> Layer:
    """Check the model input and incoming dy (outermost only), the output and the pullback."""
    label = " ".join(part for part in (".".join(where), layer.name) if part)
    outermost = not where

    call_context = layer.context  # user layers keep their two-argument contract

    def apply(params, x, **context):
        if outermost:
            _check_array(x, "input", label)
        result = _call(lambda: layer.apply(params, x, **context), "forward", label,
                       lambda r: r[0] if "state" in context else r)
        _check_array(result[0] if "state" in context else result, "forward", label, "output")
        return result

    def vjp(params, x, **context):
        if outermost:
            _check_array(x, "input", label)
        y, pullback, *new_state = _call(lambda: layer.vjp(params, x, **context), "forward", label,
                                        lambda r: r[0])
        _check_array(y, "forward", label, "output")

        def checked_pullback(dy):
            if outermost:
                _check_array(dy, "backward", label, "cotangent dy given to the pullback (by the loss?)")
            dparams, dx = _call(lambda: pullback(dy), "backward", label, lambda r: r[1])
            _check_array(dx, "backward", label, "dx")
            if check_dparams and isinstance(dparams, dict):
                for path, leaf in tree.flatten(dparams).items():
                    if not isinstance(leaf, dict):
                        what = f"dparams[{path!r}] (grads key {_join(prefix, path)!r})"
                        _check_array(leaf, "backward", label, what, rows=False)
            return dparams, dx

        return (y, checked_pullback, *new_state)

    # kernel=None: the checked layer runs as one opaque step of its (rebuilt) parent, so
    # the parent calls these checked functions instead of the layer's kernel
    return layer._replace(apply=apply, vjp=vjp, kernel=None, context=call_context)


def _call(f: Callable[[], Any], direction: str, label: str, pick: Callable[[Any], Any]):
    """``f()``, turning a numpy ``FloatingPointError`` (errors set to raise) into a
    :class:`NonFiniteError` naming the layer; the rows come from a re-run with errors ignored."""
    try:
        return f()
    except FuncnnError:
        raise
    except FloatingPointError as e:
        try:
            with np.errstate(all="ignore"):
                rows = _bad_rows(np.asarray(pick(f())))
        except Exception:  # the re-run is only for the message; the layer's error stands
            rows = []
        raise NonFiniteError(
            f"{label}: {direction} raised FloatingPointError ({e}; numpy errors are set to "
            f"raise){_rows_text(rows)}",
            where=label, direction=direction, rows=rows,
        ) from e


def _check_array(a, direction: str, label: str, what: str = "x", rows: bool = True) -> None:
    a = np.asarray(a)
    if a.dtype.kind not in "fc" or np.isfinite(a).all():
        return
    bad_rows = _bad_rows(a) if rows else []
    counts = f"{int(np.isnan(a).sum())} NaN, {int(np.isinf(a).sum())} Inf of {a.size}"
    if direction == "input":
        detail = f"the input x has non-finite values ({counts})"
    else:
        detail = f"{direction} produced non-finite {what} ({counts})"
    if not rows:
        detail += "; the layer's x and dy are finite, so no single batch row is to blame"
    raise NonFiniteError(
        f"{label}: {detail}{_rows_text(bad_rows)}", where=label, direction=direction, rows=bad_rows
    )


def _bad_rows(a: np.ndarray) -> list[int]:
    """Indices along the first (batch) axis holding a non-finite value; [] below 2-d."""
    if a.ndim < 2 or a.dtype.kind not in "fc":
        return []
    return np.flatnonzero(~np.isfinite(a).reshape(a.shape[0], -1).all(axis=1)).tolist()


def _rows_text(rows: list[int]) -> str:
    if not rows:
        return ""
    shown = ", ".join(map(str, rows[:20])) + (", ..." if len(rows) > 20 else "")
    return f"; batch rows affected: [{shown}]"


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key
