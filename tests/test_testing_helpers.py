"""check_grads catches wrong rules; strategies build valid models."""

import numpy as np
import pytest
from hypothesis import given

import funcnn as fn
from funcnn.testing import check_grads
from funcnn.testing import strategies as fst


def Scale(n, grad_factor=1.0, dx_factor=1.0):
    """The custom layer from the docs, optionally with a deliberately wrong vjp."""

    def init(key):
        return {"scale": fn.random.normal(key, (n,))}

    def apply(params, x):
        return x * params["scale"]

    def vjp(params, x):
        def pullback(dy):
            dscale = (dy * x).reshape(-1, n).sum(0) * grad_factor
            return {"scale": dscale}, dy * params["scale"] * dx_factor

        return apply(params, x), pullback

    return fn.Layer(init, apply, vjp, name=f"Scale({n})")


def test_correct_custom_layer_passes():
    check_grads(Scale(3), Scale(3).init(0), fn.random.normal(1, (4, 3)))


def test_ten_percent_error_in_one_param_leaf_is_caught():
    layer = Scale(3, grad_factor=1.1)
    with pytest.raises(AssertionError, match=r"dparams\['scale'\].*analytic .* vs numeric"):
        check_grads(layer, layer.init(0), fn.random.normal(1, (4, 3)))


def test_ten_percent_error_in_one_leaf_of_a_big_model_is_caught():
    inner = fn.Linear(20, 20, dtype=np.float64)

    def vjp(params, x):
        y, pullback = inner.vjp(params, x)

        def wrong(dy):
            grads, dx = pullback(dy)
            return {"weight": grads["weight"], "bias": grads["bias"] * 1.1}, dx

        return y, wrong

    model = fn.serial(fn.Linear(3, 20, dtype=np.float64), fn.Tanh(), fn.Layer(inner.init, inner.apply, vjp))
    with pytest.raises(AssertionError, match=r"dparams\['2.bias'\]"):
        check_grads(model, model.init(0), fn.random.normal(1, (50, 3)), elementwise_max_size=0)


def test_wrong_dx_is_caught():
    layer = Scale(2, dx_factor=0.9)
    with pytest.raises(AssertionError, match="dx"):
        check_grads(layer, layer.init(0), fn.random.normal(1, (3, 2)))


def test_apply_vjp_drift_is_caught():
    good = Scale(2)
    drifted = fn.Layer(good.init, lambda p, x: good.apply(p, x) + 1e-9, good.vjp)
    with pytest.raises(AssertionError, match="apply and vjp disagree"):
        check_grads(drifted, good.init(0), np.ones((1, 2)))


def test_wrong_loss_gradient_is_caught():
    @fn.losses.make_loss
    def half_wrong(pred, target):
        d = pred - target
        return np.mean(d * d), d / d.size  # should be 2 d / size

    with pytest.raises(AssertionError, match="dpred"):
        fn.testing.check_loss_grads(half_wrong, np.ones((2, 2)), np.zeros((2, 2)))


@given(model=fst.architectures(in_features=4, out_features=2), x=fst.inputs(4))
def test_strategies_build_models_that_run(model, x):
    y = model.apply(model.init(0), x)
    assert y.shape == (*x.shape[:-1], 2)


@given(key=fst.keys(), shape=fst.batch_shapes(5))
def test_strategy_keys_and_shapes(key, shape):
    assert key.dtype == np.uint32 and key.shape == (2,)
    assert shape[-1] == 5 and all(d >= 1 for d in shape)
