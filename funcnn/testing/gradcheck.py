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
    key=None,
    state=None,
    train: bool = True,
    seed=0,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    directions: int = 3,
    elementwise_max_size: int = 32,
) -> None:
    """Assert that ``layer.vjp`` gives the exact gradient of ``layer.apply``.

    ``key``, ``state`` and ``train`` are passed to both (a fixed key fixes a Dropout
    mask; BatchNorm needs ``state``; ``train=True`` checks the training rule, as ``fit``
    uses it). ``seed`` seeds the random directions and cotangent. Also asserts that
    ``apply`` and ``vjp`` agree on the forward value and the new state (to 1e-12 of their
    scale; the message gives the largest difference and where) and that ``dparams`` has
    exactly the structure and shapes of ``params``. Raises AssertionError naming the
    input or param leaf, with the analytic and numeric values.

    An integer ``x`` (indices for an Embedding) is kept as it is and has no ``dx`` to
    check. A numeric derivative is compared with ``atol + rtol * |value|`` plus the rounding
    error of the finite difference itself (16 float64 ulps of the objective over
    ``2 eps``), so large objectives do not fail on rounding.

    Example:
        >>> fn.testing.check_grads(fn.layers.Linear(3, 2), params, x)
        >>> fn.testing.check_grads(bn, params, x, state=bn.init_state())
    """
    params64 = tree.astype(params, np.float64)
    integer_input = np.asarray(x).dtype.kind in "iu"  # indices (Embedding): no dx to check
    x64 = np.array(x) if integer_input else np.array(x, dtype=np.float64)
    state64 = None if state is None else tree.map(
        lambda a: a.astype(np.float64) if np.asarray(a).dtype.kind == "f" else a, state)
    context = _context(layer, key, state64, train)
    y, pullback, *new_state = layer.vjp(params64, x64, **context)
    y_apply, *new_state_apply = _as_tuple(layer.apply(params64, x64, **context), state is not None)
    _check_same_forward(layer.name, "the forward value", y_apply, y)
    if state is not None:
        for path, leaf in tree.flatten(new_state[0]).items():
            if not isinstance(leaf, dict):
                _check_same_forward(layer.name, f"the new state[{path!r}]",
                                    tree.flatten(new_state_apply[0])[path], leaf)
    keys = random.split(seed, 2 + len(tree.leaves(params64)))
    v = random.normal(keys[0], np.shape(y))
    dparams, dx = pullback(v)
    tree.assert_same_structure(params64, dparams, names=("params", "dparams"))

    def objective(p, z):
        out = layer.apply(p, z, **context)
        return float(np.sum(v * (out[0] if state is not None else out)))

    magnitude = float(np.sum(np.abs(v * y)))  # the objective's terms, for its rounding error
    if not integer_input:
        _check_array(
            "dx", x64, dx, lambda z: objective(params64, z), keys[1], eps, rtol, atol, directions,
            elementwise_max_size, magnitude,
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
            atol, directions, elementwise_max_size, magnitude,
        )


def _context(layer: Layer, key, state, train: bool) -> dict:
    """The keyword arguments ``apply``/``vjp`` take: none for a two-argument user layer."""
    if not layer.context:
        if key is not None or state is not None:
            raise TypeError(f"check_grads: {layer.name} takes no key= or state= (a layer written "
                            "to the two-argument contract, context=False)")
        return {}
    context = {"train": train}
    if key is not None:
        context["key"] = key
    if state is not None:
        context["state"] = state
    return context


def _as_tuple(result, with_state: bool) -> tuple:
    return result if with_state else (result,)


def _check_same_forward(name: str, what: str, from_apply, from_vjp) -> None:
    """``apply`` and ``vjp`` must compute the same forward (to rounding)."""
    a, b = np.asarray(from_apply, dtype=np.float64), np.asarray(from_vjp, dtype=np.float64)
    if a.shape != b.shape:
        raise AssertionError(f"{name}: apply and vjp disagree on {what}: shapes {a.shape} vs {b.shape}")
    difference = np.abs(a - b)
    scale = max(1.0, float(np.max(np.abs(a), initial=0.0)))
    if difference.size and not float(np.max(difference)) <= 1e-12 * scale:  # NaN fails too
        where = np.unravel_index(int(np.nanargmax(difference)) if not np.isnan(difference).all() else 0,
                                 difference.shape)
        raise AssertionError(
            f"{name}: apply and vjp disagree on {what}: largest difference "
            f"{float(difference[where]):.3g} at index {tuple(map(int, where))} (apply "
            f"{float(a[where]):.17g}, vjp {float(b[where]):.17g}), allowed 1e-12 * {scale:.3g}; "
            "compute both from one forward function so they cannot drift")


def check_loss_grads(loss, pred: np.ndarray, target: np.ndarray, *, seed=0, eps: float = 1e-6,
                     rtol: float = 1e-5, atol: float = 1e-8, directions: int = 3,
                     elementwise_max_size: int = 32) -> None:
    """Assert that a loss's ``dpred`` is the exact gradient of its value (float64)."""
    rule = loss_gradient_rule(loss)
    pred64 = np.array(pred, dtype=np.float64)
    target64 = np.array(target, dtype=np.float64) if np.asarray(target).dtype.kind == "f" else target
    _, dpred = rule(pred64, target64)
    _check_array(
        "dpred", pred64, dpred, lambda p: rule(p, target64)[0], seed, eps, rtol, atol,
        directions, elementwise_max_size,
    )


def _check_array(label, z, analytic, objective, key, eps, rtol, atol, directions, max_size,
                 magnitude=0.0):
    analytic = np.asarray(analytic)
    if analytic.shape != np.shape(z):
        raise AssertionError(f"{label}: gradient shape {analytic.shape} != value shape {np.shape(z)}")
    for i, u in enumerate(random.normal(key, (directions, *np.shape(z)))):
        _compare(f"{label} along random direction {i}", float(np.vdot(analytic, u)),
                 objective(z + eps * u), objective(z - eps * u), eps, rtol, atol, magnitude)
    if np.size(z) <= max_size:
        for index in np.ndindex(np.shape(z)):
            e = np.zeros(np.shape(z))
            e[index] = eps
            _compare(f"{label}[{', '.join(map(str, index))}]", float(analytic[index]),
                     objective(z + e), objective(z - e), eps, rtol, atol, magnitude)


_ROUNDING = 16 * np.finfo(np.float64).eps  # relative error allowed in one objective value


def _compare(label: str, analytic: float, plus: float, minus: float, eps: float, rtol: float,
             atol: float, magnitude: float = 0.0) -> None:
    """Central difference ``(plus - minus) / (2 eps)`` against ``analytic``; the rounding
    allowed scales with the objective's terms (``magnitude``: ``sum |v * y|``), not only
    its value, which may be small where large terms cancel."""
    numeric = (plus - minus) / (2 * eps)
    rounding = _ROUNDING * max(abs(plus) + abs(minus), 2 * magnitude) / (2 * eps)
    allowed = atol + rtol * max(abs(analytic), abs(numeric)) + rounding
    if not abs(analytic - numeric) <= allowed:
        raise AssertionError(
            f"gradient mismatch for {label}: analytic {analytic:.10g} vs numeric {numeric:.10g} "
            f"(difference {abs(analytic - numeric):.3g}, allowed {allowed:.3g})"
        )
