"""fn.debug.check_finite: the first NaN/Inf, forward or backward, with layer path and rows;
bitwise the plain model when everything is finite; the plain model untouched."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

import funcnn as fn
from funcnn.errors import FuncnnError, NonFiniteError, NonFiniteLossError
from funcnn.testing import strategies as fst

# --- custom layers that go wrong on purpose ------------------------------------------


def Poison(rows):
    """Identity, except that the output rows in ``rows`` become NaN (no numpy warning)."""
    rows = list(rows)

    def apply(params, x):
        mask = np.zeros(x.shape[0], bool)
        mask[rows] = True
        return np.where(mask.reshape(-1, *[1] * (x.ndim - 1)), np.nan, x).astype(x.dtype)

    def vjp(params, x):
        return apply(params, x), lambda dy: ({}, dy)

    return fn.Layer(lambda key: {}, apply, vjp, name=f"Poison({rows})")


def Sqrt():
    """``sqrt(x)``: finite forward at 0, infinite derivative there."""

    def vjp(params, x):
        y = np.sqrt(x)
        return y, lambda dy: ({}, dy * 0.5 / y)

    return fn.Layer(lambda key: {}, lambda params, x: np.sqrt(x), vjp, name="Sqrt()")


def BadScale(n):
    """``x * scale`` whose dparams rule returns Inf (a broken custom pullback); dx is right."""

    def apply(params, x):
        return x * params["scale"]

    def vjp(params, x):
        def pullback(dy):
            return {"scale": np.full(n, np.inf, x.dtype)}, dy * params["scale"]

        return apply(params, x), pullback

    return fn.Layer(lambda key: {"scale": np.ones(n)}, apply, vjp, name=f"BadScale({n})")


def frozen(tree):
    def freeze(a):
        a = np.array(a)
        a.setflags(write=False)
        return a

    return fn.tree.map(freeze, tree)


X = fn.random.normal(0, (8, 3))
Y = fn.random.normal(1, (8, 2))


def deep_model(poison_rows=(1, 4)):
    return fn.serial(
        fn.Linear(3, 4, dtype=np.float64),
        fn.residual(fn.serial(fn.Linear(4, 4, dtype=np.float64), fn.Tanh(), Poison(poison_rows))),
        fn.Linear(4, 2, dtype=np.float64),
    )


# --- forward -------------------------------------------------------------------------


def test_forward_nan_at_a_deep_layer_names_path_direction_and_rows():
    model = deep_model((1, 4))
    params = model.init(0)
    assert np.isnan(model.apply(params, X)[[1, 4]]).all()  # the plain model propagates silently
    debug = fn.debug.check_finite(model)
    calls = {
        "apply": lambda: debug.apply(params, X),
        "vjp": lambda: debug.vjp(params, X),
        "value_and_grad": lambda: fn.value_and_grad(debug, fn.losses.mse)(params, X, Y),
    }
    for name, call in calls.items():
        with pytest.raises(NonFiniteError) as info:
            call()
        e = info.value
        assert (e.where, e.direction, e.rows) == ("serial[1].residual.serial[2] Poison([1, 4])",
                                                  "forward", [1, 4]), name
        assert str(e) == ("serial[1].residual.serial[2] Poison([1, 4]): forward produced non-finite "
                          "output (8 NaN, 0 Inf of 32); batch rows affected: [1, 4]"), name


def test_numpy_floating_point_errors_become_the_same_error_naming_the_layer():
    """With np.errstate(all="raise") numpy raises inside the layer; debug names it."""

    def Log():
        return fn.Layer(lambda key: {}, lambda p, x: np.log(x),
                        lambda p, x: (np.log(x), lambda dy: ({}, dy / x)), name="Log()")

    model = fn.serial(fn.Linear(3, 3, dtype=np.float64), fn.serial(fn.Tanh(), Log()))
    params = model.init(0)
    with np.errstate(all="raise"):
        with pytest.raises(FloatingPointError) as bare:  # what the user gets without debug
            model.apply(params, X)
        assert not isinstance(bare.value, FuncnnError)
        with pytest.raises(NonFiniteError) as info:
            fn.debug.check_finite(model).apply(params, X)
    with np.errstate(all="ignore"):
        expected_rows = np.flatnonzero(np.isnan(model.apply(params, X)).any(axis=1)).tolist()
    e = info.value
    assert expected_rows and e.rows == expected_rows
    assert (e.where, e.direction) == ("serial[1].serial[1] Log()", "forward")
    assert "raised FloatingPointError (invalid value encountered in log" in str(e)
    assert isinstance(e.__cause__, FloatingPointError) and not isinstance(e.__cause__, FuncnnError)


def test_a_composite_own_output_is_checked():
    """residual's x + layer(x) overflows although both terms are finite."""
    model = fn.serial(fn.Identity(), fn.residual(fn.Linear(2, 2)))
    params = {"1": {"weight": np.eye(2, dtype=np.float32), "bias": np.zeros(2, np.float32)}}
    x = np.array([[1.0, 2.0], [3e38, 1.0], [0.0, 0.0]], np.float32)
    debug = fn.debug.check_finite(model)
    for errors in ("ignore", "raise"):
        with np.errstate(all=errors), pytest.raises(NonFiniteError) as info:
            debug.apply(params, x)
        assert (info.value.where, info.value.direction, info.value.rows) == (
            "serial[1] residual", "forward", [1]), errors


def test_input_nan_and_inf_rows_are_listed():
    model = deep_model(())
    x = X.copy()
    x[[0, 7], 1] = np.nan
    x[5, 0] = -np.inf
    debug = fn.debug.check_finite(model)
    for call in (lambda: debug.apply(model.init(0), x), lambda: debug.vjp(model.init(0), x)):
        with pytest.raises(NonFiniteError) as info:
            call()
        assert (info.value.where, info.value.direction, info.value.rows) == ("serial", "input", [0, 5, 7])
        assert "the input x has non-finite values (2 NaN, 1 Inf of 24)" in str(info.value)


def test_a_single_layer_can_be_checked():
    layer = fn.debug.check_finite(fn.Linear(3, 2, dtype=np.float64))
    x = X.copy()
    x[2, 2] = np.nan
    with pytest.raises(NonFiniteError, match=r"^Linear\(3 -> 2\): the input x has non-finite values"):
        layer.apply(layer.init(0), x)


# --- backward ------------------------------------------------------------------------


def sqrt_model():
    return fn.serial(fn.Linear(3, 4, dtype=np.float64), fn.ReLU(), Sqrt(), fn.Linear(4, 2, dtype=np.float64))


@pytest.mark.parametrize("errors", ["ignore", "raise"])
def test_backward_inf_from_sqrt_at_zero_names_the_layer_and_rows(errors):
    model = sqrt_model()
    params = model.init(3)
    hidden = np.maximum(X @ params["0"]["weight"].T + params["0"]["bias"], 0)
    zero_rows = np.flatnonzero((hidden == 0).any(axis=1)).tolist()
    assert 0 < len(zero_rows) < len(X)  # some rows hit sqrt'(0), some do not
    debug = fn.debug.check_finite(model)
    with np.errstate(all=errors), pytest.raises(NonFiniteError) as info:
        fn.value_and_grad(debug, fn.losses.mse)(params, X, Y)
    e = info.value
    assert (e.where, e.direction, e.rows) == ("serial[2] Sqrt()", "backward", zero_rows)
    if errors == "ignore":
        assert "backward produced non-finite dx" in str(e)
    else:
        assert "backward raised FloatingPointError (divide by zero" in str(e)
        assert isinstance(e.__cause__, FloatingPointError)


def test_non_finite_dparams_name_the_grads_key():
    model = fn.serial(fn.Linear(3, 4, dtype=np.float64), fn.serial(BadScale(4), fn.Tanh()),
                      fn.Linear(4, 2, dtype=np.float64))
    params = model.init(0)
    with pytest.raises(NonFiniteError) as info:
        fn.value_and_grad(fn.debug.check_finite(model), fn.losses.mse)(params, X, Y)
    e = info.value
    assert (e.where, e.direction, e.rows) == ("serial[1].serial[0] BadScale(4)", "backward", [])
    assert "backward produced non-finite dparams['scale'] (grads key '1.0.scale') (0 NaN, 4 Inf of 4)" in str(e)
    assert "no single batch row is to blame" in str(e)


def test_a_non_finite_loss_gradient_is_caught_before_the_first_pullback():
    @fn.losses.make_loss
    def nan_at_row_2(pred, target):
        d = pred - target
        d = np.where(np.arange(len(d))[:, None] == 2, np.nan, d)
        return 0.0, d / d.size

    debug = fn.debug.check_finite(deep_model(()))
    with pytest.raises(NonFiniteError) as info:
        fn.value_and_grad(debug, nan_at_row_2)(debug.init(0), X, Y)
    e = info.value
    assert (e.where, e.direction, e.rows) == ("serial", "backward", [2])
    assert "non-finite cotangent dy given to the pullback" in str(e)


def test_debug_model_pinpoints_the_layer_when_fit_diverges():
    model = fn.serial(fn.Linear(3, 8), fn.Tanh(), fn.Linear(8, 8), fn.ReLU(), fn.Linear(8, 2))
    x, y = X.astype(np.float32), Y.astype(np.float32)
    args = (fn.losses.mse, fn.optim.sgd(1e30), model.init(0), (x, y))
    options = {"epochs": 3, "batch_size": 4, "key": 0, "progress": "silent"}
    with np.errstate(all="ignore"):
        with pytest.raises(NonFiniteLossError, match="at epoch 1, batch 2 of 2"):
            fn.fit(model, *args, **options)
        with pytest.raises(NonFiniteError) as info:
            fn.fit(fn.debug.check_finite(model), *args, **options)
    assert info.value.where.startswith("serial[") and info.value.direction in ("forward", "backward")


# --- free when off and exact when finite -----------------------------------------------


@given(model=fst.architectures(in_features=3, out_features=2), x=fst.inputs(3), key=fst.keys())
def test_bitwise_identical_to_the_plain_model_when_finite(model, x, key):
    debug = fn.debug.check_finite(model)
    params = frozen(model.init(key))
    assert fn.tree.equal(debug.init(key), params)
    x = frozen(x)
    np.testing.assert_array_equal(debug.apply(params, x), model.apply(params, x), strict=True)
    (y1, pb1), (y2, pb2) = debug.vjp(params, x), model.vjp(params, x)
    assert y1.tobytes() == y2.tobytes()
    dy = frozen(np.cos(y2))
    (g1, dx1), (g2, dx2) = pb1(dy), pb2(dy)
    assert fn.tree.equal(g1, g2) and dx1.dtype == dx2.dtype and dx1.tobytes() == dx2.tobytes()
    y = frozen(np.sin(y2))
    v1, gv1 = fn.value_and_grad(debug, fn.losses.huber)(params, x, y)
    v2, gv2 = fn.value_and_grad(model, fn.losses.huber)(params, x, y)
    assert v1 == v2 and fn.tree.equal(gv1, gv2)


def test_the_plain_model_is_untouched():
    model = deep_model((2,))
    before = [tuple(layer) for layer in _layers(model)]
    debug = fn.debug.check_finite(model)
    after = [tuple(layer) for layer in _layers(model)]
    assert len(before) == len(after) and all(
        all(a is b for a, b in zip(old, new)) for old, new in zip(before, after))
    assert debug.apply is not model.apply and debug.vjp is not model.vjp
    params = model.init(0)
    out = model.apply(params, X)  # no hidden global switch: the plain model still does not check
    assert np.isnan(out[2]).all() and np.isfinite(np.delete(out, 2, axis=0)).all()
    with pytest.raises(NonFiniteError):
        debug.apply(params, X)
    assert repr(debug) == repr(model)


def _layers(layer):
    yield layer
    for child in layer.children:
        yield from _layers(child)


def test_check_finite_rejects_what_is_not_a_layer():
    with pytest.raises(TypeError, match="check_finite: expected a funcnn Layer"):
        fn.debug.check_finite(fn.Linear)
