"""Check a layer's or a loss's gradient rule against central finite differences.

All checks run on float64 copies, so the only error left is the finite-difference
truncation (``O(eps**2)``) and rounding (``O(1e-16 / eps)``), far below the tolerance.
Two kinds of check, for ``dx`` and for every param leaf:

- random directions ``u``: ``<grad, u>`` vs ``(L(z + eps u) - L(z - eps u)) / (2 eps)``,
  with ``L = sum(v * layer(z))`` for a fixed random cotangent ``v``;
- element-wise, when the array is tiny (at most ``elementwise_max_size`` elements).
"""

from __future__ import annotations

import numpy as np

from funcnn import random, tree
from funcnn.grad import loss_gradient_rule
from funcnn.types import Layer, Params


def check_grads(
    layer: Layer,
    params: Params,
    x: np.ndarray,
    *,
    key=0,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    directions: int = 3,
    elementwise_max_size: int = 32,
) -> None:
    """Assert that ``layer.vjp`` gives the exact gradient of ``layer.apply``.

    Also asserts ``layer.apply(p, x) == layer.vjp(p, x)[0]`` and that ``dparams`` has
    exactly the structure and shapes of ``params``. Raises AssertionError naming the
    input or param leaf, with the analytic and numeric values.

    Example:
        >>> fn.testing.check_grads(fn.layers.Linear(3, 2), params, x)
    """
    params64 = tree.astype(params, np.float64)
    x64 = np.array(x, dtype=np.float64)
    y, pullback = layer.vjp(params64, x64)
    y_apply = layer.apply(params64, x64)
    if not np.array_equal(y, y_apply):
        raise AssertionError(f"{layer.name}: apply and vjp disagree on the forward value")
    keys = random.split(key, 2 + len(tree.leaves(params64)))
    v = random.normal(keys[0], np.shape(y))
    dparams, dx = pullback(v)
    tree.assert_same_structure(params64, dparams, names=("params", "dparams"))

    def objective(p, z):
        return float(np.sum(v * layer.apply(p, z)))

    _check_array(
        "dx", x64, dx, lambda z: objective(params64, z), keys[1], eps, rtol, atol, directions,
        elementwise_max_size,
    )
    flat_params = tree.flatten(params64)
    flat_grads = tree.flatten(dparams)
    for leaf_key, (path, leaf) in zip(keys[2:], flat_params.items()):
        if isinstance(leaf, dict):
            continue

        def along_leaf(value, path=path):
            return objective(tree.unflatten({**flat_params, path: value}), x64)

        _check_array(
            f"dparams[{path!r}]", leaf, flat_grads[path], along_leaf, leaf_key, eps, rtol,
            atol, directions, elementwise_max_size,
        )


def check_loss_grads(loss, pred: np.ndarray, target: np.ndarray, *, key=0, eps: float = 1e-6,
                     rtol: float = 1e-5, atol: float = 1e-8, directions: int = 3,
                     elementwise_max_size: int = 32) -> None:
    """Assert that a loss's ``dpred`` is the exact gradient of its value (float64)."""
    rule = loss_gradient_rule(loss)
    pred64 = np.array(pred, dtype=np.float64)
    target64 = np.array(target, dtype=np.float64) if np.asarray(target).dtype.kind == "f" else target
    _, dpred = rule(pred64, target64)
    _check_array(
        "dpred", pred64, dpred, lambda p: rule(p, target64)[0], key, eps, rtol, atol,
        directions, elementwise_max_size,
    )


def _check_array(label, z, analytic, objective, key, eps, rtol, atol, directions, max_size):
    analytic = np.asarray(analytic)
    if analytic.shape != np.shape(z):
        raise AssertionError(f"{label}: gradient shape {analytic.shape} != value shape {np.shape(z)}")
    for i, u in enumerate(random.normal(key, (directions, *np.shape(z)))):
        numeric = (objective(z + eps * u) - objective(z - eps * u)) / (2 * eps)
        _compare(f"{label} along random direction {i}", float(np.vdot(analytic, u)), numeric,
                 rtol, atol)
    if np.size(z) <= max_size:
        for index in np.ndindex(np.shape(z)):
            e = np.zeros(np.shape(z))
            e[index] = eps
            numeric = (objective(z + e) - objective(z - e)) / (2 * eps)
            _compare(f"{label}[{', '.join(map(str, index))}]", float(analytic[index]), numeric,
                     rtol, atol)


def _compare(label: str, analytic: float, numeric: float, rtol: float, atol: float) -> None:
    if not abs(analytic - numeric) <= atol + rtol * max(abs(analytic), abs(numeric)):
        raise AssertionError(
            f"gradient mismatch for {label}: analytic {analytic:.10g} vs numeric {numeric:.10g}"
        )
