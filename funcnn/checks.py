"""Input checks shared by the built-in layers: cheap, and loud when they fail."""

from __future__ import annotations

import numpy as np

from funcnn.errors import InputTypeError, ShapeError, StructureError


def check_input(x, layer: str) -> np.ndarray:
    """Return ``x`` if it is a floating ndarray with at least one dimension."""
    if type(x) is not np.ndarray:
        if isinstance(x, tuple):
            raise InputTypeError(
                f"expected one array, got a tuple of {len(x)} (the branches of a FanOut or "
                "parallel); join them first with fn.layers.FanInSum() or FanInConcat()",
                layer=layer,
            )
        if not isinstance(x, np.ndarray):
            raise InputTypeError(
                f"expected a numpy array, got {type(x).__name__}; "
                "convert it with np.asarray(x, dtype=np.float32)",
                layer=layer,
            )
    if x.dtype.kind != "f":
        raise InputTypeError(
            f"expected a floating-point array, got dtype {x.dtype}; "
            "convert it with x.astype(np.float32) (or float64)",
            layer=layer,
        )
    if x.ndim == 0:
        raise ShapeError("expected an array with at least 1 dimension, got a 0-d array", layer=layer)
    return x


def check_numeric_input(x, layer: str) -> np.ndarray:
    """Return ``x`` if it is a floating or integer ndarray with at least one dimension
    (for layers that cast their input to their params' dtype, like Linear)."""
    if isinstance(x, np.ndarray) and x.dtype.kind in "iu":
        if x.ndim == 0:
            raise ShapeError("expected an array with at least 1 dimension, got a 0-d array", layer=layer)
        return x
    return check_input(x, layer)


def check_cotangent(dy, shape: tuple[int, ...], layer: str) -> np.ndarray:
    """Return ``dy`` if it is an array with the shape of the layer's output (for a layer
    whose output is a tuple, ``shape`` is the tuple of their shapes and ``dy`` a tuple)."""
    if shape and isinstance(shape[0], tuple):
        if not isinstance(dy, tuple) or len(dy) != len(shape):
            got = f"a tuple of {len(dy)}" if isinstance(dy, tuple) else type(dy).__name__
            raise ShapeError(f"pullback expected a tuple of {len(shape)} cotangents, got {got}",
                             layer=layer)
        return tuple(check_cotangent(d, s, f"{layer} branch {i}") for i, (d, s) in enumerate(zip(dy, shape)))
    if not isinstance(dy, np.ndarray) or dy.shape != shape:
        got = dy.shape if isinstance(dy, np.ndarray) else type(dy).__name__
        raise ShapeError(f"pullback expected dy of shape {shape}, got {got}", layer=layer)
    return dy


def check_no_params(params, layer: str) -> None:
    """Parameterless layers take ``{}``; anything else is params from another model."""
    if params:
        keys = list(params) if isinstance(params, dict) else type(params).__name__
        raise StructureError(f"{layer}: takes no params ({{}}), got {keys}")
