"""Loss definitions, gradients, stability, dtypes and shape checks."""

import functools

import numpy as np
import pytest
from hypothesis import given

import funcnn as fn
from funcnn.errors import InputTypeError, ShapeError
from funcnn.testing import check_loss_grads
from funcnn.testing import strategies as fst

L = fn.losses
SAME_SHAPE = [L.mse, L.l1, L.huber, L.sigmoid_binary_cross_entropy]


def test_definitions():
    p = np.array([[1.0, -2.0], [0.5, 3.0]])
    t = np.array([[0.0, 0.0], [0.5, 1.0]])
    d = p - t
    assert L.mse(p, t) == pytest.approx(np.mean(0.5 * d**2))
    assert L.l1(p, t) == pytest.approx(np.mean(np.abs(d)))
    huber = np.where(np.abs(d) <= 1, 0.5 * d**2, np.abs(d) - 0.5)
    assert L.huber(p, t) == pytest.approx(np.mean(huber))
    assert L.huber(p, t, delta=3.0) == pytest.approx(L.mse(p, t))
    bce = -(t * np.log(1 / (1 + np.exp(-p))) + (1 - t) * np.log(1 - 1 / (1 + np.exp(-p))))
    assert L.sigmoid_binary_cross_entropy(p, np.clip(t, 0, 1)) == pytest.approx(np.mean(bce))


def test_softmax_cross_entropy_int_and_onehot_agree():
    logits = fn.random.normal(0, (5, 4))
    labels = np.array([0, 3, 1, 1, 2])
    onehot = np.eye(4)[labels]
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert L.softmax_cross_entropy(logits, labels) == pytest.approx(-np.mean(log_softmax[range(5), labels]))
    v1, g1 = L.softmax_cross_entropy.value_and_grad(logits, labels)
    v2, g2 = L.softmax_cross_entropy.value_and_grad(logits, onehot)
    assert v1 == pytest.approx(v2)
    np.testing.assert_allclose(g1, g2, atol=1e-15)


@pytest.mark.parametrize("loss", SAME_SHAPE, ids=lambda f: f.name)
@given(x=fst.inputs(3), key=fst.keys())
def test_same_shape_losses_exact_gradients(loss, x, key):
    target = fn.random.uniform(key, x.shape)
    check_loss_grads(loss, x, target)


@given(x=fst.inputs(4), key=fst.keys())
def test_softmax_cross_entropy_exact_gradients(x, key):
    labels = fn.random.generator(key).integers(0, 4, x.shape[:-1])
    check_loss_grads(L.softmax_cross_entropy, x, labels)
    check_loss_grads(L.softmax_cross_entropy, x, fn.random.uniform(key, x.shape))


def test_huber_partial_gradient():
    check_loss_grads(functools.partial(L.huber, delta=0.2), fn.random.normal(0, (4, 3)), fn.random.normal(1, (4, 3)))


ALL = SAME_SHAPE + [L.softmax_cross_entropy]


@pytest.mark.parametrize("loss", ALL, ids=lambda f: f.name)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stable_for_huge_logits_and_keep_pred_dtype(loss, dtype):
    logits = np.array([[-1e4, 0.0, 1e4], [1e4, -1e4, 3.0]], dtype=dtype)
    target = np.array([2, 1]) if loss is L.softmax_cross_entropy else np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    value, grad = loss.value_and_grad(logits, target)  # float64 targets, strict errstate
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    assert grad.dtype == dtype


@pytest.mark.parametrize("loss", SAME_SHAPE, ids=lambda f: f.name)
def test_shape_mismatch_is_an_error_not_a_broadcast(loss):
    with pytest.raises(ShapeError, match=r"pred has shape \(4, 1\) but target has shape \(4,\)"):
        loss(np.zeros((4, 1)), np.zeros(4))


def test_softmax_cross_entropy_label_errors():
    logits = np.zeros((3, 4))
    with pytest.raises(ShapeError, match=r"int labels must have shape \(3,\)"):
        L.softmax_cross_entropy(logits, np.zeros((3, 1), int))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\)"):
        L.softmax_cross_entropy(logits, np.array([0, 4, 1]))
    with pytest.raises(ShapeError, match="probability labels must have"):
        L.softmax_cross_entropy(logits, np.full((3, 3), 1 / 3))


def test_input_type_errors():
    with pytest.raises(InputTypeError, match="pred must be a numpy array, got list"):
        L.mse([1.0], np.ones(1))
    with pytest.raises(InputTypeError, match="pred must be floating-point"):
        L.mse(np.ones(2, int), np.ones(2))
    with pytest.raises(InputTypeError, match="target must be real numbers"):
        L.mse(np.ones(2), np.ones(2, complex))
    with pytest.raises(ShapeError, match="pred is empty"):
        L.mse(np.ones((0, 1)), np.ones((0, 1)))
    with pytest.raises(ValueError, match="delta must be > 0"):
        L.huber(np.ones(2), np.ones(2), delta=0.0)


def test_returns_python_float():
    assert type(L.mse(np.ones(2, np.float32), np.zeros(2, np.float32))) is float


@pytest.mark.parametrize("loss", [fn.losses.mse, fn.losses.l1, fn.losses.huber])
def test_regression_losses_warn_on_integer_targets(loss):
    pred = np.zeros((4, 1), np.float32)
    with pytest.warns(fn.errors.IntegerTargetWarning, match=r"integer targets look like class labels"):
        value = loss(pred, np.ones((4, 1), np.int64))
    assert value == loss(pred, np.ones((4, 1), np.float32))  # cast, same value
    loss(pred, np.ones((4, 1)))  # float targets: no warning (warnings are errors here)
    fn.losses.sigmoid_binary_cross_entropy(pred, np.ones((4, 1), np.int64))  # 0/1 labels are its targets
