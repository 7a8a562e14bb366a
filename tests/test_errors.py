"""Error messages name the layer path, the shapes and the fix."""

import numpy as np
import pytest

import funcnn as fn
from funcnn.errors import InputTypeError, ShapeError, StructureError


def mlp():
    return fn.serial(fn.Linear(2, 16), fn.ReLU(), fn.Linear(16, 1))


def test_shape_error_names_index_path_and_shapes():
    model = fn.serial(fn.Linear(4, 16), fn.ReLU(), fn.Linear(16, 1))
    params = model.init(0)
    with pytest.raises(ShapeError, match=r"^serial\[0\] Linear\(4 -> 16\): expected \(\.\.\., 4\), got \(64, 8\)$"):
        model.apply(params, np.ones((64, 8), np.float32))


def test_shape_error_inside_nested_model_with_wrong_params():
    model = fn.serial(fn.Linear(8, 16), fn.residual(fn.serial(fn.Linear(16, 16), fn.ReLU())), fn.Linear(16, 1))
    other = fn.serial(fn.Linear(8, 16), fn.residual(fn.serial(fn.Linear(16, 16), fn.ReLU())), fn.Linear(8, 1))
    with pytest.raises(StructureError, match=r"Linear\(16 -> 1\): expected weight \(1, 16\).*got weight \(1, 8\)"):
        model.apply(other.init(0), np.ones((4, 8)))


def test_deep_path_in_message():
    bad = fn.serial(fn.Linear(5, 8), fn.residual(fn.serial(fn.Linear(8, 16), fn.ReLU(), fn.Linear(15, 8))))
    for call in (bad.apply, lambda p, x: bad.vjp(p, x)[0]):
        with pytest.raises(ShapeError, match=r"^serial\[1\]\.residual\.serial\[2\] Linear\(15 -> 8\): "
                                             r"expected \(\.\.\., 15\), got \(3, 16\)$"):
            call(bad.init(0), np.ones((3, 5)))


@pytest.mark.parametrize("inner_out", [1, 4])
def test_residual_shape_mismatch_even_when_broadcastable(inner_out):
    model = fn.residual(fn.Linear(8, inner_out))
    params = model.init(0)
    x = np.ones((3, 8), np.float32)
    with pytest.raises(ShapeError, match=rf"input \(3, 8\) to output \(3, {inner_out}\)"):
        model.apply(params, x)
    with pytest.raises(ShapeError, match=rf"input \(3, 8\) to output \(3, {inner_out}\)"):
        model.vjp(params, x)


@pytest.mark.parametrize(
    "x, match",
    [
        ([[1.0, 2.0]], "expected a numpy array, got list"),
        (np.ones((2, 2), dtype=bool), "floating-point array, got dtype bool"),
        (np.ones((2, 2), dtype=complex), "floating-point array, got dtype complex128"),
        (np.array([["a", "b"]]), "floating-point array, got dtype <U1"),
        (np.array([[1.0, 2.0]], dtype=object), "floating-point array, got dtype object"),
    ],
)
def test_bad_input_kinds(x, match):
    model = mlp()
    with pytest.raises(InputTypeError, match=r"serial\[0\] Linear\(2 -> 16\): .*" + match):
        model.apply(model.init(0), x)
    with pytest.raises(InputTypeError, match=match):
        model.vjp(model.init(0), x)


def test_zero_d_input():
    with pytest.raises(ShapeError, match="at least 1 dimension, got a 0-d array"):
        fn.ReLU().apply({}, np.array(1.0))


def test_params_from_another_model():
    model = mlp()
    with pytest.raises(StructureError, match=r"unexpected params keys \['3'\]"):
        model.apply({**model.init(0), "3": {}}, np.ones((1, 2)))
    with pytest.raises(StructureError, match=r"params must be \{'weight', 'bias'\}, got \[\]"):
        model.apply({"0": model.init(0)["0"]}, np.ones((1, 2), np.float32))
    with pytest.raises(StructureError, match="takes no params"):
        fn.ReLU().apply({"weight": np.ones(1)}, np.ones(1))


def test_forgotten_call_of_a_factory():
    with pytest.raises(TypeError, match=r"serial\[1\]: expected a funcnn Layer, got function; did you forget to call it: ReLU\(...\)\?"):
        fn.serial(fn.Linear(2, 2), fn.layers.ReLU)


def test_pullback_checks_cotangent_shape():
    model = mlp()
    y, pullback = model.vjp(model.init(0), np.ones((4, 2), np.float32))
    with pytest.raises(ShapeError, match=r"serial: pullback expected dy of shape \(4, 1\), got \(4,\)"):
        pullback(np.ones(4, np.float32))


def test_softmax_axis_out_of_range():
    with pytest.raises(ShapeError, match="axis 2 is out of range for an input of shape"):
        fn.layers.Softmax(axis=2).apply({}, np.ones((2, 2)))


def test_errors_are_valueerror_or_typeerror_for_generic_handlers():
    assert issubclass(ShapeError, ValueError) and issubclass(InputTypeError, TypeError)
    assert issubclass(StructureError, ValueError)


@pytest.mark.parametrize("int_dtype", [np.int64, np.int8, np.uint16])
def test_linear_casts_integer_inputs_to_its_dtype(int_dtype):
    model = mlp()
    params = model.init(0)
    x = np.array([[1, 2], [3, 4]], dtype=int_dtype)
    y = model.apply(params, x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, model.apply(params, x.astype(np.float32)))
    with pytest.raises(InputTypeError, match=r"serial\[0\] ReLU\(\): .*got dtype int64"):
        fn.serial(fn.layers.ReLU()).apply({}, np.ones((2, 2), dtype=np.int64))
