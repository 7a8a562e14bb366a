"""Every built-in layer: exact gradients, apply == vjp, stability, dtypes, init."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import funcnn as fn
from funcnn.testing import check_grads
from funcnn.testing import strategies as fst

ACTIVATIONS = {
    "ReLU": fn.layers.ReLU,
    "LeakyReLU": lambda: fn.layers.LeakyReLU(0.1),
    "ELU": lambda: fn.layers.ELU(0.7),
    "Sigmoid": fn.layers.Sigmoid,
    "Tanh": fn.layers.Tanh,
    "Identity": fn.layers.Identity,
    "GELU": fn.layers.GELU,
    "SiLU": fn.layers.SiLU,
    "Softplus": fn.layers.Softplus,
    "Softmax": fn.layers.Softmax,
    "Softmax0": lambda: fn.layers.Softmax(axis=0),
    "LogSoftmax": fn.layers.LogSoftmax,
    "LogSoftmax0": lambda: fn.layers.LogSoftmax(axis=0),
}
FEATURES = 4
LAYERS = {
    **ACTIVATIONS,
    "Linear": lambda: fn.layers.Linear(FEATURES, 3, dtype=np.float64),
    "Linear-xavier": lambda: fn.layers.Linear(FEATURES, 2, init="xavier"),
    "ResNetBlock": lambda: fn.layers.ResNetBlock(FEATURES, 5, activation=fn.layers.Tanh),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
@given(x=fst.inputs(FEATURES), key=fst.keys())
def test_check_grads_every_layer(name, x, key):
    layer = LAYERS[name]()
    check_grads(layer, layer.init(key), x, seed=key)


@pytest.mark.parametrize("name", sorted(LAYERS))
@given(x=fst.inputs(FEATURES, dtype=np.float32), key=fst.keys())
def test_apply_equals_vjp_forward(name, x, key):
    layer = LAYERS[name]()
    params = layer.init(key)
    y, _ = layer.vjp(params, x)
    np.testing.assert_array_equal(layer.apply(params, x), y)


EXTREMES = np.array([[-1e4, -1e3, -88.0, -20.0, -1.0, 0.0, 1.0, 20.0, 88.0, 1e3, 1e4]])


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_stable_at_large_inputs_and_keep_dtype(name, dtype):
    layer = ACTIVATIONS[name]()
    x = np.concatenate([EXTREMES, -EXTREMES]).astype(dtype)  # strict errstate: no warnings
    y, pullback = layer.vjp({}, x)
    _, dx = pullback(np.ones_like(y))
    assert y.dtype == dtype and dx.dtype == dtype
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))


REFERENCE = {
    "ReLU": lambda x: np.where(x > 0, x, 0.0),
    "LeakyReLU": lambda x: np.where(x > 0, x, 0.1 * x),
    "ELU": lambda x: np.where(x > 0, x, 0.7 * (np.exp(np.minimum(x, 0)) - 1)),
    "Sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "Tanh": np.tanh,
    "Identity": lambda x: x,
    "GELU": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    "SiLU": lambda x: x / (1 + np.exp(-x)),
    "Softplus": lambda x: np.log1p(np.exp(x)),
    "Softmax": lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True),
    "Softmax0": lambda x: np.exp(x) / np.exp(x).sum(0, keepdims=True),
    "LogSoftmax": lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True)),
    "LogSoftmax0": lambda x: x - np.log(np.exp(x).sum(0, keepdims=True)),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_values_match_textbook_formulas(name):
    x = fn.random.uniform(0, (5, 4), -6, 6)
    np.testing.assert_allclose(ACTIVATIONS[name]().apply({}, x), REFERENCE[name](x), rtol=1e-12, atol=1e-15)


def test_linear_computes_x_wT_plus_b_and_torch_layout():
    layer = fn.layers.Linear(3, 2, dtype=np.float64)
    params = {"weight": np.arange(6.0).reshape(2, 3), "bias": np.array([1.0, -1.0])}
    x = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(layer.apply(params, x), [[9.0, 25.0]])


def test_linear_accepts_leading_batch_dims():
    layer = fn.layers.Linear(3, 2, dtype=np.float64)
    params = layer.init(0)
    x = fn.random.normal(1, (2, 5, 3))
    y = layer.apply(params, x)
    assert y.shape == (2, 5, 2)
    np.testing.assert_allclose(y[1, 4], params["weight"] @ x[1, 4] + params["bias"])
    check_grads(layer, params, x)


@pytest.mark.parametrize(
    "init, scale", [("he", math.sqrt(2 / 400)), ("xavier", math.sqrt(2 / 500)), ("lecun", math.sqrt(1 / 400))]
)
def test_linear_init_formulas(init, scale):
    params = fn.layers.Linear(400, 100, init=init).init(0)
    assert params["weight"].shape == (100, 400) and params["bias"].shape == (100,)
    assert np.all(params["bias"] == 0)
    assert params["weight"].std() == pytest.approx(scale, rel=0.02)
    assert abs(params["weight"].mean()) < 0.05 * scale


def test_float32_stays_float32_end_to_end():
    model = fn.serial(fn.Linear(3, 8), fn.GELU(), fn.residual(fn.serial(fn.Linear(8, 8), fn.Tanh())),
                      fn.Linear(8, 1))
    params = model.init(0)
    x64 = fn.random.normal(1, (5, 3))  # float64 input is cast to the params' dtype
    y, pullback = model.vjp(params, x64)
    grads, dx = pullback(np.ones_like(y))
    assert y.dtype == np.float32
    assert all(g.dtype == np.float32 for g in fn.tree.leaves(grads))
    _, grads = fn.value_and_grad(model, fn.losses.mse)(params, x64, np.zeros((5, 1)))
    assert all(g.dtype == np.float32 for g in fn.tree.leaves(grads))


def test_float64_model_works_too():
    model = fn.serial(fn.Linear(3, 4, dtype=np.float64), fn.ReLU(), fn.Linear(4, 1, dtype=np.float64))
    params = model.init(0)
    assert model.apply(params, np.ones((2, 3), np.float32)).dtype == np.float64


def test_resnet_block_is_residual_of_linear_act_linear():
    block = fn.layers.ResNetBlock(6, 3)
    params = block.init(0)
    assert list(fn.tree.flatten(params)) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    x = fn.random.normal(2, (4, 6), np.float32)
    h = np.maximum(x @ params["0"]["weight"].T + params["0"]["bias"], 0)
    expected = x + h @ params["2"]["weight"].T + params["2"]["bias"]
    np.testing.assert_allclose(block.apply(params, x), expected, rtol=1e-6)


@pytest.mark.parametrize("bad", [0, -3, 2.0, True])
def test_linear_validates_sizes(bad):
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        fn.layers.Linear(bad, 2)


def test_linear_validates_init_and_dtype():
    with pytest.raises(ValueError, match="init must be one of"):
        fn.layers.Linear(2, 2, init="glorot")
    with pytest.raises(TypeError, match="dtype must be a floating type"):
        fn.layers.Linear(2, 2, dtype=np.int32)


@given(st.floats(-5, 5), st.floats(0.01, 3))
def test_activation_hyperparameters_in_names(slope, alpha):
    assert "negative_slope" in repr(fn.layers.LeakyReLU(slope))
    assert f"alpha={alpha}" in repr(fn.layers.ELU(alpha))
