"""Branches (FanOut, parallel, FanInSum, FanInConcat) and Flatten: exact gradients,
the fast path, errors naming both shapes."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import funcnn as fn
from funcnn.errors import InputTypeError, ShapeError
from funcnn.testing import check_grads
from funcnn.testing import strategies as fst

L = fn.layers
F64 = {"dtype": np.float64}


def two_branches(join):
    return fn.serial(L.Linear(3, 6, **F64), L.FanOut(2),
                     fn.parallel(L.Linear(6, 4, **F64), fn.serial(L.Linear(6, 4, **F64), L.Tanh())),
                     join, L.Linear(8 if "Concat" in join.name else 4, 2, **F64))


@pytest.mark.parametrize("join", [L.FanInSum(), L.FanInConcat(axis=-1)], ids=lambda j: j.name)
@given(x=fst.inputs(3, max_leading_dims=2), data=st.data())
def test_branch_models_have_exact_gradients_and_the_fast_path_is_bitwise(join, x, data):
    model = two_branches(join)
    params = data.draw(fst.params(model))
    check_grads(model, params, x)
    y = np.zeros((*x.shape[:-1], 2))
    value, grads = fn.value_and_grad(model, fn.losses.mse)(params, x, y)
    pred, pullback = model.vjp(params, x)
    want_value, dpred = fn.losses.mse.value_and_grad(pred, y)
    assert value == want_value and fn.tree.equal(grads, pullback(dpred)[0])


def test_params_are_keyed_by_branch_like_serial():
    model = two_branches(L.FanInSum())
    assert list(fn.tree.flatten(model.init(0))) == [
        "0.weight", "0.bias", "2.0.weight", "2.0.bias", "2.1.0.weight", "2.1.0.bias", "4.weight", "4.bias"]


def test_pullbacks_take_and_give_tuples():
    model = fn.serial(L.FanOut(3), fn.parallel(L.Tanh(), L.Identity(), L.Sigmoid()))
    x = np.linspace(-1, 1, 8).reshape(2, 4)
    ys, pullback = model.vjp({}, x)
    assert isinstance(ys, tuple) and len(ys) == 3
    dys = tuple(np.full_like(x, i + 1.0) for i in range(3))
    _, dx = pullback(dys)
    expected = 1 * (1 - np.tanh(x) ** 2) + 2 + 3 * fn.numerics.sigmoid(x) * (1 - fn.numerics.sigmoid(x))
    np.testing.assert_allclose(dx, expected, rtol=1e-15)
    with pytest.raises(ShapeError, match=r"pullback expected a tuple of 3 cotangents, got ndarray"):
        pullback(dys[0])
    with pytest.raises(ShapeError, match=r"branch 1: pullback expected dy of shape \(2, 4\), got \(4,\)"):
        pullback((dys[0], dys[1][0], dys[2]))


def test_concat_splits_the_gradient_back_along_its_axis():
    join = L.FanInConcat(axis=0)
    a, b = np.ones((2, 3)), np.zeros((4, 3))
    y, pullback = join.vjp({}, (a, b))
    assert y.shape == (6, 3)
    _, (da, db) = pullback(np.arange(18.0).reshape(6, 3))
    np.testing.assert_array_equal(da, np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(db, np.arange(6.0, 18.0).reshape(4, 3))


@pytest.mark.parametrize("call, error, match", [
    (lambda: fn.serial(L.FanOut(2), L.Linear(3, 2)).apply({"1": L.Linear(3, 2).init(0)}, np.ones((2, 3), np.float32)),
     InputTypeError, r"serial\[1\] Linear\(3 -> 2\): expected one array, got a tuple of 2 .*FanInSum\(\) or FanInConcat\(\)"),
    (lambda: L.FanInSum().apply({}, (np.ones((2, 3)), np.ones((2, 4)))),
     ShapeError, r"FanInSum\(\): branch 0 has shape \(2, 3\) but branch 1 has shape \(2, 4\)"),
    (lambda: L.FanInSum().apply({}, (np.ones((2, 3)), np.ones((1, 3)))),
     ShapeError, r"a sum needs equal shapes"),
    (lambda: L.FanInConcat(axis=-1).apply({}, (np.ones((2, 3)), np.ones((3, 3)))),
     ShapeError, r"branch 0 has shape \(2, 3\) but branch 1 has shape \(3, 3\); they must agree on every axis but -1"),
    (lambda: L.FanInConcat(axis=2).apply({}, (np.ones((2, 3)), np.ones((2, 3)))),
     ShapeError, r"axis 2 is out of range for branches of 2 dimensions"),
    (lambda: L.FanInSum().apply({}, np.ones((2, 3))), InputTypeError, r"expected a tuple of branches"),
    (lambda: fn.parallel(L.Tanh(), L.Tanh()).apply({}, (np.ones(2),)), InputTypeError,
     r"parallel: expected a tuple of 2 branches \(e\.g\. from fn\.layers\.FanOut\(2\)\), got a tuple of 1"),
    (lambda: L.FanOut(0), ValueError, "FanOut: n must be a positive int"),
    (lambda: L.FanInConcat(axis=1.0), TypeError, "FanInConcat: axis must be an int"),
    (lambda: L.Flatten().apply({}, np.ones(3)), ShapeError, r"Flatten\(\): expected \(N, \.\.\.\) with at least 2 dimensions, got \(3,\)"),
])
def test_branch_errors_name_the_layer_and_both_shapes(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_flatten_keeps_the_batch_axis_and_pulls_back_a_reshape():
    x = np.arange(24.0).reshape(2, 3, 4)
    y, pullback = L.Flatten().vjp({}, x)
    assert y.shape == (2, 12) and np.shares_memory(y, x)
    _, dx = pullback(np.ones((2, 12)))
    assert dx.shape == x.shape
    check_grads(fn.serial(L.Flatten(), L.Linear(12, 2, **F64)), fn.serial(L.Flatten(), L.Linear(12, 2, **F64)).init(0), x)
