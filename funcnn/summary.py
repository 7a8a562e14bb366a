"""A printable table of a model's layers, parameter shapes and counts."""

from __future__ import annotations

import numpy as np

from funcnn import tree
from funcnn.types import Layer, Params, State


def summary(model: Layer, params: Params, state: State | None = None) -> str:
    """Return a table with one row per layer: key path, layer, param shapes, count.

    The key path is the prefix of that layer's entries in ``fn.tree.flatten(params)``
    (and of its state's). Layers with state (BatchNorm) list their state leaves after
    the params, marked ``state:``; ``state`` defaults to ``model.init_state()``. The
    count is of params only.

    Example:
        >>> print(fn.summary(model, params))
        path  layer            params                    count
        0     Linear(1 -> 16)  weight (16, 1), bias (16,)   32
        ...
    """
    rows = [("path", "layer", "params", "count")]
    _collect(model, params, model.init_state() if state is None else state, "", rows)
    total = tree.size(params)
    rows.append(("", "total", "", f"{total:,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(line.rstrip() for line in lines)


def _collect(layer: Layer, params, state, path: str, rows: list) -> None:
    if layer.children:
        for child, key in zip(layer.children, layer.child_keys):
            if key is None:
                _collect(child, params, state, path, rows)
            else:
                child_params = params.get(key, {}) if isinstance(params, dict) else {}
                child_state = state.get(key, {}) if isinstance(state, dict) else {}
                _collect(child, child_params, child_state, f"{path}.{key}" if path else key, rows)
        return
    flat = tree.flatten(params) if isinstance(params, dict) else {}
    shapes = ", ".join(f"{k} {tuple(np.shape(v))}" for k, v in flat.items())
    flat_state = tree.flatten(state) if isinstance(state, dict) else {}
    if flat_state:
        state_shapes = ", ".join(f"{k} {tuple(np.shape(v))}" for k, v in flat_state.items())
        shapes = f"{shapes}; state: {state_shapes}" if shapes else f"state: {state_shapes}"
    count = sum(int(np.size(v)) for v in flat.values())
    rows.append((path or "-", layer.name, shapes, f"{count:,}"))
