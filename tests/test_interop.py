"""PyTorch state_dict interop: numpy only in funcnn, torch as a test-time oracle."""

from __future__ import annotations

import numpy as np
import pytest

import funcnn as fn
from funcnn.errors import StructureError


def make_model():
    return fn.serial(
        fn.layers.Linear(2, 3, dtype=np.float64),
        fn.layers.ReLU(),
        fn.layers.Linear(3, 1, dtype=np.float64),
    )


def numpy_forward(state, x):
    """The reference: torch's Sequential(Linear, ReLU, Linear) written out in numpy."""
    h = np.maximum(x @ state["0.weight"].T + state["0.bias"], 0)
    return h @ state["2.weight"].T + state["2.bias"]


def random_state(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "0.weight": rng.normal(size=(3, 2)),
        "0.bias": rng.normal(size=3),
        "2.weight": rng.normal(size=(1, 3)),
        "2.bias": rng.normal(size=1),
    }


class FakeTensor:
    """Duck-types the part of torch.Tensor that from_torch_state_dict uses."""

    def __init__(self, array):
        self.array = array
        self.calls = []

    def detach(self):
        self.calls.append("detach")
        return self

    def cpu(self):
        self.calls.append("cpu")
        return self

    def numpy(self):
        self.calls.append("numpy")
        return self.array


class ArrayLike:
    def __init__(self, array):
        self.array = array

    def __array__(self, dtype=None, copy=None):
        return self.array


# --- numpy only --------------------------------------------------------------------


def test_to_torch_state_dict_flattens_copies_and_skips_empty_subtrees():
    params = {
        "0": {"weight": np.ones((3, 2)), "bias": np.zeros(3)},
        "1": {},
        "2": {"weight": np.ones((1, 3))},
    }
    state = fn.interop.to_torch_state_dict(params)
    assert list(state) == ["0.weight", "0.bias", "2.weight"]
    assert all(type(v) is np.ndarray for v in state.values())
    state["0.weight"][0, 0] = 5.0
    assert params["0"]["weight"][0, 0] == 1.0


def test_to_torch_state_dict_rejects_non_numeric_leaves():
    with pytest.raises(TypeError, match="'a.b'.*numeric"):
        fn.interop.to_torch_state_dict({"a": {"b": np.array(["x"])}})


def test_from_torch_state_dict_nests_and_copies_numpy_arrays():
    state = random_state()
    params = fn.interop.from_torch_state_dict(state)
    assert list(fn.tree.flatten(params)) == list(state)
    params["0"]["weight"][0, 0] = 123.0
    assert state["0.weight"][0, 0] != 123.0


def test_from_torch_state_dict_duck_types_tensors_and_array_likes():
    state = random_state()
    fake = FakeTensor(state["0.weight"])
    mixed = {
        "0.weight": fake,
        "0.bias": ArrayLike(state["0.bias"]),
        "2.weight": state["2.weight"],
        "2.bias": [0.5],
    }
    params = fn.interop.from_torch_state_dict(mixed)
    assert fake.calls == ["detach", "cpu", "numpy"]
    np.testing.assert_array_equal(params["0"]["weight"], state["0.weight"])
    np.testing.assert_array_equal(params["0"]["bias"], state["0.bias"])
    assert params["0"]["weight"] is not state["0.weight"]
    np.testing.assert_array_equal(params["2"]["bias"], [0.5])


def test_from_torch_state_dict_with_like_checks_orders_and_fills_empty_subtrees():
    like = {
        "2": {"bias": np.zeros(1), "weight": np.zeros((1, 3))},
        "1": {},
        "0": {"bias": np.zeros(3), "weight": np.zeros((3, 2))},
    }
    params = fn.interop.from_torch_state_dict(random_state(), like=like)
    assert list(fn.tree.flatten(params)) == ["2.bias", "2.weight", "1", "0.bias", "0.weight"]
    assert params["1"] == {}


def test_from_torch_state_dict_reports_every_difference_at_once():
    state = random_state()
    state["0.weight"] = state["0.weight"].T.astype(np.float32)
    state["3.weight"] = np.zeros((1, 1))
    del state["2.bias"]
    with pytest.raises(StructureError) as info:
        fn.interop.from_torch_state_dict(state, like=make_model().init(0))
    message = str(info.value)
    for expected in [
        "4 differences",
        "'0.weight': expected shape (3, 2), it has (2, 3)",
        "'0.weight': expected dtype float64, it has float32",
        "missing '2.bias'",
        "unexpected '3.weight'",
    ]:
        assert expected in message, (expected, message)


def test_from_torch_state_dict_rejects_bad_input():
    with pytest.raises(TypeError, match="mapping"):
        fn.interop.from_torch_state_dict([np.ones(1)])
    with pytest.raises(ValueError, match="'a..b'"):
        fn.interop.from_torch_state_dict({"a..b": np.ones(1)})
    with pytest.raises(TypeError, match="'w'.*numeric"):
        fn.interop.from_torch_state_dict({"w": np.array([None], dtype=object)})


def test_funcnn_model_matches_the_numpy_reference():
    state = random_state(1)
    model = make_model()
    params = fn.interop.from_torch_state_dict(state, like=model.init(0))
    x = np.random.default_rng(2).normal(size=(5, 2))
    np.testing.assert_allclose(
        model.apply(params, x), numpy_forward(state, x), rtol=1e-12, atol=1e-15
    )
    assert fn.tree.equal(
        fn.interop.from_torch_state_dict(fn.interop.to_torch_state_dict(params)), params
    )


def test_state_dict_params_survive_a_checkpoint(tmp_path):
    model = make_model()
    params = fn.interop.from_torch_state_dict(random_state(3), like=model.init(0))
    fn.save(tmp_path / "c", params)
    assert fn.tree.equal(fn.load(tmp_path / "c", like=model.init(0)), params)


# --- against torch -----------------------------------------------------------------


def torch_net(torch, seed):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    return net.double()


def test_torch_to_funcnn_gives_the_same_outputs():
    torch = pytest.importorskip("torch")
    net = torch_net(torch, 0)
    model = make_model()
    params = fn.interop.from_torch_state_dict(net.state_dict(), like=model.init(0))
    x = np.random.default_rng(0).normal(size=(7, 2))
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.apply(params, x), expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        numpy_forward(fn.interop.to_torch_state_dict(params), x), expected, rtol=1e-12, atol=1e-15
    )


def test_funcnn_to_torch_gives_the_same_outputs():
    torch = pytest.importorskip("torch")
    model = make_model()
    params = model.init(fn.random.key(5))
    net = torch_net(torch, 1)
    state = fn.interop.to_torch_state_dict(params)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), state[key])
    x = np.random.default_rng(1).normal(size=(7, 2))
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.apply(params, x), expected, rtol=1e-12, atol=1e-15)


def test_tensors_with_grad_are_detached():
    torch = pytest.importorskip("torch")
    net = torch_net(torch, 2)
    state = dict(net.named_parameters())  # requires_grad tensors
    assert all(t.requires_grad for t in state.values())
    params = fn.interop.from_torch_state_dict(state, like=make_model().init(0))
    np.testing.assert_array_equal(params["0"]["weight"], net[0].weight.detach().numpy())


def test_bfloat16_tensors_get_a_clear_error():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="'w'.*float"):
        fn.interop.from_torch_state_dict({"w": torch.zeros(2, dtype=torch.bfloat16)})


def test_batchnorm_buffers_move_both_ways_in_torchs_key_order():
    torch = pytest.importorskip("torch")  # in the test extra: the oracle
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU(),
                              torch.nn.Dropout(0.1), torch.nn.Linear(4, 2), torch.nn.BatchNorm1d(2)).double()
    L = fn.layers
    model = fn.serial(L.Linear(3, 4, dtype=np.float64), L.BatchNorm(4, dtype=np.float64), L.ReLU(),
                      L.Dropout(0.1), L.Linear(4, 2, dtype=np.float64), L.BatchNorm(2, dtype=np.float64))
    net.train()
    for _ in range(3):  # give torch's buffers values worth copying
        net(torch.randn(8, 3, dtype=torch.float64))
    params, state = fn.interop.from_torch_state_dict(net.state_dict(), like=model.init(0),
                                                     state_like=model.init_state())
    assert list(state) == ["1", "5"] and int(state["1"]["num_batches_tracked"]) == 3
    assert state["1"]["num_batches_tracked"].dtype == np.int64
    exported = fn.interop.to_torch_state_dict(params, state)
    assert list(exported) == list(net.state_dict())  # torch's order: per layer, params then buffers
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(exported[key], value.numpy())
    net.eval()
    x = np.random.default_rng(0).normal(size=(5, 3))
    y, _ = model.apply(params, x, state=state)
    np.testing.assert_allclose(y, net(torch.tensor(x)).detach().numpy(), rtol=1e-12)
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU(),
                                torch.nn.Dropout(0.1), torch.nn.Linear(4, 2), torch.nn.BatchNorm1d(2)).double()
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()})
    fresh.eval()
    np.testing.assert_allclose(fresh(torch.tensor(x)).detach().numpy(), y, rtol=1e-12)
