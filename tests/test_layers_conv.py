"""Conv1d/Conv2d, pools, Flatten and Embedding as layers: torch's layouts and results,
exact gradients, the fast path, a torch CNN's state_dict loading as it is, and errors."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import funcnn as fn
from funcnn.errors import InputTypeError, InputValueError, ShapeError
from funcnn.testing import check_grads
from funcnn.testing import strategies as fst

L = fn.layers
F64 = {"dtype": np.float64}


def rand(shape, seed=0):
    a = np.random.default_rng(seed).normal(size=shape)
    a.setflags(write=False)
    return a


def digits_cnn(dtype=np.float32):
    """The issue's T5 model."""
    return fn.serial(L.Conv2d(1, 16, 3, padding=1, dtype=dtype), L.ReLU(), L.MaxPool2d(2),
                     L.Conv2d(16, 32, 3, padding=1, dtype=dtype), L.ReLU(), L.MaxPool2d(2),
                     L.Flatten(), L.Linear(128, 10, dtype=dtype))


def torch_digits_cnn():
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(128, 10)).double()


def test_a_torch_cnn_state_dict_loads_as_it_is_and_both_compute_the_same():
    torch.manual_seed(0)
    net = torch_digits_cnn()
    model = digits_cnn(np.float64)
    params = fn.interop.from_torch_state_dict(net.state_dict(), like=model.init(0))
    assert list(fn.interop.to_torch_state_dict(params)) == list(net.state_dict())
    x, labels = rand((6, 1, 8, 8)), np.arange(6) % 10
    xt = torch.tensor(x, requires_grad=True)
    out = net(xt)
    torch_loss = torch.nn.functional.cross_entropy(out, torch.tensor(labels))
    torch_loss.backward()
    value, grads = fn.value_and_grad(model, fn.losses.softmax_cross_entropy)(params, x, labels)
    np.testing.assert_allclose(model.apply(params, x), out.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert value == pytest.approx(float(torch_loss.detach()), rel=1e-12)
    for key, p in net.named_parameters():
        np.testing.assert_allclose(fn.tree.flatten(grads)[key], p.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layer, shape", [
    (L.Conv1d(2, 3, 3, stride=2, padding=1, **F64), (2, 2, 7)),
    (L.Conv1d(4, 4, 2, dilation=2, groups=2, **F64), (2, 4, 6)),
    (L.Conv2d(2, 3, (2, 3), padding="same", **F64), (2, 2, 4, 5)),
    (L.Conv2d(2, 4, 3, stride=(2, 1), bias=False, **F64), (1, 2, 5, 4)),
    (L.MaxPool1d(2), (2, 3, 6)), (L.MaxPool2d(3, stride=2, padding=1), (2, 2, 5, 5)),
    (L.AvgPool1d(3, stride=1, padding=1), (2, 2, 5)), (L.AvgPool2d(2), (1, 3, 4, 6)),
])
def test_each_layer_has_exact_gradients(layer, shape):
    check_grads(layer, fn.tree.map(lambda p: p + 0.1, layer.init(1)), rand(shape, seed=2) + 0.01 * np.arange(np.prod(shape)).reshape(shape))


@pytest.mark.parametrize("ours, theirs, shape", [
    (L.Conv1d(3, 4, 3, stride=2, padding=2, dilation=2, **F64),
     torch.nn.Conv1d(3, 4, 3, stride=2, padding=2, dilation=2), (2, 3, 9)),
    (L.Conv2d(4, 6, (3, 3), padding="same", groups=2, **F64),
     torch.nn.Conv2d(4, 6, (3, 3), padding="same", groups=2), (2, 4, 5, 5)),
    (L.MaxPool2d(2, stride=1), torch.nn.MaxPool2d(2, stride=1), (2, 3, 4, 4)),
    (L.AvgPool1d(3, padding=1), torch.nn.AvgPool1d(3, padding=1), (2, 3, 7)),
])
def test_layers_equal_torch(ours, theirs, shape):
    theirs = theirs.double()
    params = fn.interop.from_torch_state_dict(theirs.state_dict(), like=ours.init(0))
    x, dy = rand(shape), None
    xt = torch.tensor(x, requires_grad=True)
    out = theirs(xt)
    dy = rand(out.shape, seed=5)
    (out * torch.tensor(dy)).sum().backward()
    y, pullback = ours.vjp(params, x)
    np.testing.assert_allclose(y, out.detach().numpy(), rtol=1e-10, atol=1e-12)
    dparams, dx = pullback(dy)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    for key, p in theirs.named_parameters():
        np.testing.assert_allclose(dparams[key], p.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_embedding_equals_torch_and_sums_repeated_indices():
    emb, ref = L.Embedding(5, 3, **F64), torch.nn.Embedding(5, 3).double()
    params = fn.interop.from_torch_state_dict(ref.state_dict(), like=emb.init(0))
    idx = np.array([[1, 4, 1], [0, 1, 1]])
    dy = rand((2, 3, 3))
    out = ref(torch.tensor(idx))
    (out * torch.tensor(dy)).sum().backward()
    y, pullback = emb.vjp(params, idx)
    np.testing.assert_array_equal(y, out.detach().numpy())
    grads, dx = pullback(dy)
    np.testing.assert_allclose(grads["weight"], ref.weight.grad.numpy(), rtol=1e-12)
    assert dx is None
    check_grads(emb, params, idx)
    model = fn.serial(L.Embedding(5, 3, **F64), L.Flatten(), L.Linear(9, 1, **F64))
    value, g = fn.value_and_grad(model, fn.losses.mse)(model.init(0), idx, np.zeros((2, 1)))
    pred, back = model.vjp(model.init(0), idx)
    assert fn.tree.equal(g, back(fn.losses.mse.value_and_grad(pred, np.zeros((2, 1)))[1])[0])


@settings(deadline=None, max_examples=15)
@given(batch=st.integers(1, 3), channels=st.integers(1, 3), size=st.integers(4, 7), kernel=st.integers(1, 3),
       stride=st.integers(1, 2), padding=st.integers(0, 1), data=st.data())
def test_random_cnns_have_exact_gradients_and_a_bitwise_fast_path(batch, channels, size, kernel, stride,
                                                                    padding, data):
    model = fn.serial(L.Conv2d(channels, 3, kernel, stride=stride, padding=padding, **F64), L.Tanh(),
                      L.AvgPool2d(1 if size < 5 else 2), L.Flatten())
    params = data.draw(fst.params(model))
    x = rand((batch, channels, size, size), seed=batch * 100 + size)
    check_grads(model, params, x)
    y = model.apply(params, x)
    target = np.zeros_like(y)
    value, grads = fn.value_and_grad(model, fn.losses.mse)(params, x, target)
    pred, pullback = model.vjp(params, x)
    assert value == fn.losses.mse(pred, target)
    assert fn.tree.equal(grads, pullback(fn.losses.mse.value_and_grad(pred, target)[1])[0])


@pytest.mark.parametrize("call, error, match", [
    (lambda: L.Conv2d(3, 4, 3).apply(L.Conv2d(3, 4, 3).init(0), np.ones((2, 2, 8, 8), np.float32)),
     ShapeError, r"Conv2d\(3 -> 4, 3x3\): expected input of shape \(N, 3, H, W\), got \(2, 2, 8, 8\)"),
    (lambda: L.Conv2d(1, 4, 5).apply(L.Conv2d(1, 4, 5).init(0), np.ones((2, 1, 3, 3), np.float32)),
     ShapeError, r"Conv2d\(1 -> 4, 5x5\): .*smaller than the dilated kernel"),
    (lambda: L.MaxPool2d(2).apply({}, np.ones((2, 3, 8), np.float32)), ShapeError,
     r"MaxPool2d\(2x2\): expected \(N, C, H, W\), got \(2, 3, 8\)"),
    (lambda: fn.serial(L.FanOut(2), L.Conv1d(1, 1, 1)).apply({"1": L.Conv1d(1, 1, 1).init(0)}, np.ones((1, 1, 3))),
     InputTypeError, r"serial\[1\] Conv1d\(1 -> 1, 1\): expected one array, got a tuple of 2"),
    (lambda: L.Embedding(4, 2).apply(L.Embedding(4, 2).init(0), np.array([[0, 4]])), InputValueError,
     r"Embedding\(4, 2\): index 4 at position \(0, 1\) is out of range for 4 embeddings \(0\.\.3\)"),
    (lambda: L.Embedding(4, 2).apply(L.Embedding(4, 2).init(0), np.array([0.0])), InputTypeError,
     r"Embedding\(4, 2\): expected an integer array of indices, got dtype float64"),
    (lambda: L.Conv2d(3, 4, 3, groups=2), ValueError, r"Conv2d: in_channels \(3\) and out_channels \(4\) must both be divisible by groups \(2\)"),
    (lambda: L.Conv2d(3, 4, 3, stride=2, padding="same"), ValueError, r"padding='same' needs stride 1"),
    (lambda: L.MaxPool2d(2, padding=2), ValueError, r"padding must be at most half the kernel size"),
    (lambda: L.Embedding(0, 2), ValueError, r"Embedding: num_embeddings must be a positive int"),
])
def test_errors_name_the_layer_and_what_is_wrong(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_cnn_works_with_summary_debug_save_and_the_program(tmp_path):
    model = digits_cnn()
    params = model.init(0)
    assert "Conv2d(16 -> 32, 3x3, padding=1)  weight (32, 16, 3, 3), bias (32,)  4,640" in fn.summary(model, params)
    x, labels = rand((4, 1, 8, 8)).astype(np.float32), np.arange(4)
    checked = fn.debug.check_finite(model)
    v1, g1 = fn.value_and_grad(checked, fn.losses.softmax_cross_entropy)(params, x, labels)
    v2, g2 = fn.value_and_grad(model, fn.losses.softmax_cross_entropy)(params, x, labels)
    assert v1 == v2 and fn.tree.equal(g1, g2)
    bad = x.copy()
    bad[2, 0, 3, 3] = np.nan
    with pytest.raises(fn.errors.NonFiniteError, match=r"batch rows affected: \[2\]"):
        checked.apply(params, bad)
    fn.save(tmp_path / "cnn.ckpt", params)
    assert fn.tree.equal(fn.load(tmp_path / "cnn.ckpt", like=model.init(1)), params)


@settings(deadline=None, max_examples=15)
@given(model=fst.cnn_architectures(in_channels=2, size=6), data=st.data(), batch=st.integers(1, 3))
def test_strategy_cnns_have_exact_gradients(model, data, batch):
    check_grads(model, data.draw(fst.params(model)), rand((batch, 2, 6, 6), seed=batch) + 0.37)
