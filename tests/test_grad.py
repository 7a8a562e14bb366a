"""value_and_grad returns the exact gradient of the value it returns."""

import functools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import funcnn as fn
from funcnn.testing import strategies as fst

OUT = 3
LOSSES = {
    "mse": (fn.losses.mse, "real"),
    "l1": (fn.losses.l1, "real"),
    "huber": (fn.losses.huber, "real"),
    "huber-0.3": (functools.partial(fn.losses.huber, delta=0.3), "real"),
    "softmax_ce-int": (fn.losses.softmax_cross_entropy, "int"),
    "softmax_ce-probs": (fn.losses.softmax_cross_entropy, "probs"),
    "sigmoid_bce": (fn.losses.sigmoid_binary_cross_entropy, "unit"),
}


def make_target(kind, shape, key):
    if kind == "int":
        return fn.random.generator(key).integers(0, OUT, shape[:-1])
    if kind == "probs":
        logits = fn.random.normal(key, shape)
        return np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    if kind == "unit":
        return fn.random.uniform(key, shape)
    return fn.random.normal(key, shape)


def jitter(params, key):
    """Random non-zero biases: zero biases put exact zeros on ReLU kinks, where the
    finite difference sees a one-sided slope."""
    keys = iter(fn.random.split(key, max(1, len(fn.tree.leaves(params)))))
    return fn.tree.map(lambda p: p + 0.3 * fn.random.normal(next(keys), p.shape), params)


def numeric_directional_derivative(f, params, direction, eps=1e-6):
    plus = fn.tree.map(lambda p, d: p + eps * d, params, direction)
    minus = fn.tree.map(lambda p, d: p - eps * d, params, direction)
    return (f(plus) - f(minus)) / (2 * eps)


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
@given(
    model=fst.architectures(in_features=2, out_features=OUT,
                            activation_factories=fst.SMOOTH_ACTIVATION_FACTORIES),
    x=fst.inputs(2),
    key=fst.keys(),
)
def test_value_and_grad_matches_finite_differences(loss_name, model, x, key):
    loss, kind = LOSSES[loss_name]
    k_params, k_target, k_dir = fn.random.split(key, 3)
    params = jitter(model.init(k_params), k_params)
    y = make_target(kind, (*x.shape[:-1], OUT), k_target)
    value, grads = fn.value_and_grad(model, loss)(params, x, y)

    def loss_at(p):
        return loss(model.apply(p, x), y)

    assert value == loss_at(params)
    fn.tree.assert_same_structure(params, grads)
    leaf_keys = fn.random.split(k_dir, len(fn.tree.leaves(params)))
    flat = fn.tree.flatten(params)
    for leaf_key, (path, leaf) in zip(leaf_keys, flat.items()):
        direction = fn.tree.unflatten(
            {p: (fn.random.normal(leaf_key, v.shape) if p == path else np.zeros_like(v)) for p, v in flat.items()}
        )
        numeric = numeric_directional_derivative(loss_at, params, direction)
        analytic = fn.tree.vdot(grads, direction)
        # central differences round to ~1e-16 * |loss| / eps: scale the absolute slack
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8 * max(1.0, abs(value))), path


def test_grad_is_not_divided_by_batch_size_twice():
    """The seed divides by B in both Linear and MSE backward; the true gradient does not."""
    model = fn.Linear(2, 1, dtype=np.float64)
    params = model.init(0)
    x = fn.random.normal(1, (8, 2))
    y = fn.random.normal(2, (8, 1))
    residual = model.apply(params, x) - y
    grads = fn.grad(model, fn.losses.mse)(params, x, y)
    np.testing.assert_allclose(grads["weight"], residual.T @ x / 8, rtol=1e-12)
    np.testing.assert_allclose(grads["bias"], residual.sum(0) / 8, rtol=1e-12)


def test_seed_three_block_resnet_gets_exact_gradients():
    """The seed's 3-block ResNet shares one mutable ReLU and gets 8 of 16 grads wrong."""
    model = fn.serial(
        fn.Linear(1, 16, dtype=np.float64), fn.ReLU(),
        *[fn.layers.ResNetBlock(16, dtype=np.float64) for _ in range(3)],
        fn.Linear(16, 1, dtype=np.float64),
    )
    params = model.init(0)
    assert len(fn.tree.leaves(params)) == 16
    x = fn.random.uniform(1, (32, 1), 0, 2 * np.pi)
    fn.testing.check_grads(model, params, x, elementwise_max_size=0, directions=2)


def test_grad_returns_only_grads():
    model = fn.serial(fn.Linear(2, 2), fn.Tanh())
    params = model.init(0)
    x, y = np.ones((3, 2), np.float32), np.zeros((3, 2), np.float32)
    value, grads = fn.value_and_grad(model, fn.losses.mse)(params, x, y)
    assert fn.tree.equal(fn.grad(model, fn.losses.mse)(params, x, y), grads)


def test_value_and_grad_rejects_plain_functions_and_non_layers():
    model = fn.Linear(2, 1)
    with pytest.raises(TypeError, match="wrap f\\(pred, target\\)"):
        fn.value_and_grad(model, lambda p, t: float(np.mean((p - t) ** 2)))
    with pytest.raises(TypeError, match="must be a funcnn Layer"):
        fn.value_and_grad(lambda p, x: x, fn.losses.mse)


@given(st.integers(1, 6), st.integers(1, 4))
def test_custom_loss_via_make_loss_is_exact(n, m):
    @fn.losses.make_loss
    def log_cosh(pred, target):
        d = pred - target
        return np.mean(np.logaddexp(d, -d) - np.log(2.0)), np.tanh(d) / d.size

    model = fn.Linear(2, m, dtype=np.float64)
    params = model.init(n)
    x, y = fn.random.normal(n, (n, 2)), fn.random.normal(n + 1, (n, m))
    fn.testing.check_loss_grads(log_cosh, model.apply(params, x), y)
    value, _ = fn.value_and_grad(model, log_cosh)(params, x, y)
    assert value == log_cosh(model.apply(params, x), y)
