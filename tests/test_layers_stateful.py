"""Dropout, BatchNorm and LayerNorm: torch's semantics, exact gradients, keys and state.

Forward values, gradients and state updates are compared with torch in float64
(rtol 1e-10); gradients also with central differences (``check_grads``).
"""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import funcnn as fn
from funcnn.errors import RandomKeyError, ShapeError, StateError
from funcnn.testing import check_grads
from funcnn.testing import strategies as fst

L = fn.layers
RTOL = 1e-10


def frozen(a):
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


def rand(shape, seed=0, scale=1.0):
    return frozen(np.random.default_rng(seed).normal(size=shape) * scale + 0.3)


def torch_value_and_grads(module, x, dy):
    """torch's output and the grads of ``sum(y * dy)`` w.r.t. its params and x."""
    xt = torch.tensor(x, requires_grad=True)
    y = module(xt)
    (y * torch.tensor(dy)).sum().backward()
    grads = {name: p.grad.numpy() for name, p in module.named_parameters()}
    return y.detach().numpy(), grads, xt.grad.numpy()


# --- Dropout ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), "0.5", True])
def test_dropout_rate_outside_0_1_is_a_value_error(rate):
    with pytest.raises(ValueError, match=r"Dropout: rate \(the probability of zeroing\) must be a number in \[0, 1\)"):
        L.Dropout(rate)


def test_dropout_zeroes_with_probability_rate_and_rescales():
    x = frozen(np.ones((400, 50)))
    y = L.Dropout(0.3).apply({}, x, key=fn.random.key(1), train=True)
    kept = y != 0
    assert abs(1 - kept.mean() - 0.3) < 0.01  # 20,000 draws: the std is 0.003
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-15)


def test_dropout_mask_comes_from_the_key_and_eval_is_the_identity():
    drop = L.Dropout(0.5)
    x = rand((6, 8))
    a = drop.apply({}, x, key=fn.random.key(3), train=True)
    b = drop.apply({}, x, key=fn.random.key(3), train=True)
    c = drop.apply({}, x, key=fn.random.key(4), train=True)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert drop.apply({}, x) is x and drop.apply({}, x, key=fn.random.key(3)) is x
    y, pullback = drop.vjp({}, x, key=fn.random.key(3))  # vjp trains by default
    assert np.array_equal(y, a)
    dy = rand(x.shape, seed=1)
    np.testing.assert_array_equal(pullback(dy)[1], dy * (a / x))
    assert L.Dropout(0.0).apply({}, x, train=True) is x  # rate 0 needs no key


def test_dropout_training_without_a_key_names_the_layer_path():
    model = fn.serial(L.Linear(3, 4), fn.residual(fn.serial(L.Dropout(0.2))))
    x = np.ones((2, 3), np.float32)
    model.apply(model.init(0), x)  # evaluation: fine
    with pytest.raises(RandomKeyError, match=r"serial\[1\]\.residual\.serial\[0\] Dropout\(rate=0\.2\): "
                                             r"training mode needs a random key"):
        model.vjp(model.init(0), x)
    with pytest.raises(RandomKeyError, match=r"serial\[1\]"):
        fn.value_and_grad(model, fn.losses.mse)(model.init(0), x, np.ones((2, 4), np.float32))


@given(seed=st.integers(0, 2**32 - 1))
def test_dropout_gradients_with_a_fixed_key(seed):
    check_grads(L.Dropout(0.4), {}, rand((3, 5), seed=seed % 1000), key=fn.random.key(seed))


# --- BatchNorm ----------------------------------------------------------------------------------

SHAPES = [(8, 3), (5, 3, 4), (4, 3, 2, 5)]


def torch_batchnorm(shape, momentum=0.1, eps=1e-5):
    cls = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d}[len(shape)]
    return cls(shape[1], eps=eps, momentum=momentum).double()


def batchnorm_params(channels, seed=0):
    rng = np.random.default_rng(seed)
    return {"weight": frozen(rng.normal(size=channels) + 1), "bias": frozen(rng.normal(size=channels))}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("momentum", [0.1, 0.7, None])
def test_batchnorm_training_and_running_statistics_equal_torch(shape, momentum):
    bn = L.BatchNorm(shape[1], momentum=momentum, eps=1e-3, dtype=np.float64)
    net = torch_batchnorm(shape, momentum, eps=1e-3)
    params = batchnorm_params(shape[1])
    net.load_state_dict({k: torch.tensor(v) for k, v in fn.interop.to_torch_state_dict(params, bn.init_state()).items()})
    state = bn.init_state()
    for step in range(4):  # running statistics accumulate over several batches
        x, dy = rand(shape, seed=step, scale=2.0), rand(shape, seed=10 + step)
        y, pullback, state = bn.vjp(params, x, state=state)
        y_torch, grads_torch, dx_torch = torch_value_and_grads(net.train(), x, dy)
        np.testing.assert_allclose(y, y_torch, rtol=RTOL, atol=1e-12)
        dparams, dx = pullback(dy)
        np.testing.assert_allclose(dx, dx_torch, rtol=RTOL, atol=1e-12)
        for name in ("weight", "bias"):
            np.testing.assert_allclose(dparams[name], grads_torch[name], rtol=RTOL)
        net.zero_grad()
        for name in ("running_mean", "running_var"):
            np.testing.assert_allclose(state[name], getattr(net, name).numpy(), rtol=RTOL)
        assert state["num_batches_tracked"].dtype == np.int64
        assert int(state["num_batches_tracked"]) == int(net.num_batches_tracked) == step + 1
    x = rand(shape, seed=99)
    y_eval, same_state = bn.apply(params, x, state=state)  # evaluation: running statistics
    y_torch, grads_torch, dx_torch = torch_value_and_grads(net.eval(), x, x)
    np.testing.assert_allclose(y_eval, y_torch, rtol=RTOL, atol=1e-12)
    assert fn.tree.equal(same_state, state)
    _, pullback, _ = bn.vjp(params, x, state=state, train=False)
    dparams, dx = pullback(x)
    np.testing.assert_allclose(dx, dx_torch, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(dparams["weight"], grads_torch["weight"], rtol=RTOL)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_gradients(shape, train):
    bn = L.BatchNorm(shape[1], dtype=np.float64)
    state = {"running_mean": rand(shape[1], seed=5), "running_var": rand(shape[1], seed=6) ** 2 + 0.5,
             "num_batches_tracked": np.array(3, np.int64)}
    check_grads(bn, batchnorm_params(shape[1], seed=2), rand(shape, seed=4), state=state, train=train)


def test_batchnorm_needs_more_than_one_value_per_channel_in_training():
    bn = L.BatchNorm(3)
    with pytest.raises(ShapeError, match=r"BatchNorm\(3\): expected more than 1 value per channel when "
                                         r"training, got input of shape \(1, 3\)"):
        bn.vjp(bn.init(0), np.ones((1, 3), np.float32), state=bn.init_state())
    with pytest.raises(ValueError, match="more than 1 value per channel"):  # torch agrees
        torch.nn.BatchNorm1d(3)(torch.ones(1, 3))
    y, _ = bn.apply(bn.init(0), np.ones((1, 3), np.float32), state=bn.init_state())  # evaluation: fine
    assert y.shape == (1, 3)


@pytest.mark.parametrize("shape, match", [
    ((4, 5), r"expected \(N, 3\), \(N, 3, L\) or \(N, 3, H, W\) with the channels on axis 1, got \(4, 5\)"),
    ((4, 3, 2, 2, 2), r"got \(4, 3, 2, 2, 2\)"),
    ((3,), r"got \(3,\)"),
])
def test_batchnorm_wrong_input_shapes_are_named(shape, match):
    bn = L.BatchNorm(3)
    with pytest.raises(ShapeError, match=r"BatchNorm\(3\): .*" + match):
        bn.apply(bn.init(0), np.ones(shape, np.float32), state=bn.init_state())


@pytest.mark.parametrize("kwargs, error, match", [
    ({"num_features": 0}, ValueError, "num_features must be a positive int"),
    ({"num_features": 3, "eps": 0}, ValueError, "eps must be a number > 0"),
    ({"num_features": 3, "momentum": 1.5}, ValueError, r"momentum must be a number in \[0, 1\] or None"),
    ({"num_features": 3, "dtype": np.int32}, TypeError, "dtype must be a floating type"),
])
def test_batchnorm_hyperparameters_are_checked_at_the_factory(kwargs, error, match):
    with pytest.raises(error, match="BatchNorm: " + match):
        L.BatchNorm(**kwargs)


def test_a_model_with_state_called_without_state_names_the_layer_and_the_fix():
    model = fn.serial(L.Linear(2, 3), fn.residual(fn.serial(L.BatchNorm(3))))
    params, x = model.init(0), np.ones((4, 2), np.float32)
    for call in (lambda: model.apply(params, x), lambda: model.vjp(params, x),
                 lambda: fn.value_and_grad(model, fn.losses.mse)(params, x, np.ones((4, 3), np.float32))):
        with pytest.raises(StateError, match=r"^serial\[1\]\.residual\.serial\[0\] BatchNorm\(3\): this "
                                             r"layer keeps state .*pass state=model\.init_state\(\)"):
            call()
    with pytest.raises(StateError, match=r"serial: unexpected state keys \['7'\]"):
        model.apply(params, x, state={"7": {}})
    bad = {"1": {"0": {**model.init_state()["1"]["0"], "running_var": np.ones(4, np.float32)}}}
    with pytest.raises(StateError, match=r"state\['running_var'\] must be an array of shape \(3,\)"):
        model.apply(params, x, state=bad)


def test_state_is_keyed_like_params_and_passing_state_appends_it():
    model = fn.serial(L.Linear(2, 3), L.BatchNorm(3), L.ReLU(), L.Linear(3, 3), L.BatchNorm(3))
    state = model.init_state()
    assert list(state) == ["1", "4"] and list(state["1"]) == ["running_mean", "running_var",
                                                               "num_batches_tracked"]
    assert fn.serial(L.Linear(2, 3)).init_state() == {}
    params, x = model.init(0), rand((5, 2)).astype(np.float32)
    y = fn.serial(L.Linear(2, 3)).apply({"0": params["0"]}, x)
    y2, empty = fn.serial(L.Linear(2, 3)).apply({"0": params["0"]}, x, state={})
    assert np.array_equal(y, y2) and empty == {}
    y, new_state = model.apply(params, x, state=state)
    assert fn.tree.equal(new_state, state)  # evaluation leaves the statistics alone
    y, pullback, new_state = model.vjp(params, x, state=state)
    assert int(new_state["4"]["num_batches_tracked"]) == 1
    assert int(state["4"]["num_batches_tracked"]) == 0  # the state passed in is never written


# --- LayerNorm ----------------------------------------------------------------------------------


@pytest.mark.parametrize("normalized_shape, x_shape", [(4, (3, 4)), ((2, 5), (3, 2, 5)), (6, (2, 3, 6)), (3, (3,))])
def test_layernorm_equals_torch(normalized_shape, x_shape):
    ln = L.LayerNorm(normalized_shape, eps=1e-4, dtype=np.float64)
    net = torch.nn.LayerNorm(normalized_shape, eps=1e-4).double()
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
    rng = np.random.default_rng(1)
    params = {"weight": frozen(rng.normal(size=shape)), "bias": frozen(rng.normal(size=shape))}
    net.load_state_dict({k: torch.tensor(v) for k, v in params.items()})
    x, dy = rand(x_shape, scale=3.0), rand(x_shape, seed=2)
    y, pullback = ln.vjp(params, x)
    y_torch, grads_torch, dx_torch = torch_value_and_grads(net, x, dy)
    np.testing.assert_allclose(y, y_torch, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(ln.apply(params, x), y, rtol=0, atol=0)
    dparams, dx = pullback(dy)
    np.testing.assert_allclose(dx, dx_torch, rtol=RTOL, atol=1e-12)
    for name in ("weight", "bias"):
        np.testing.assert_allclose(dparams[name], grads_torch[name], rtol=RTOL)
    check_grads(ln, params, x)


def test_layernorm_errors():
    with pytest.raises(ShapeError, match=r"LayerNorm\(4\): expected \(\.\.\., 4\), got \(2, 3\)"):
        L.LayerNorm(4).apply(L.LayerNorm(4).init(0), np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match="LayerNorm: normalized_shape must be an int or a non-empty tuple"):
        L.LayerNorm([4])
    with pytest.raises(ValueError, match="LayerNorm: normalized_shape must be a positive int"):
        L.LayerNorm((4, 0))


# --- the protocol through combinators, value_and_grad and train_step ------------------------------


def mlp_with_state(dtype=np.float64):
    return fn.serial(L.Linear(3, 8, dtype=dtype), L.BatchNorm(8, dtype=dtype), L.ReLU(), L.Dropout(0.25),
                     fn.residual(fn.serial(L.Linear(8, 8, dtype=dtype), L.LayerNorm(8, dtype=dtype),
                                           L.Tanh(), L.Dropout(0.1))),
                     L.Linear(8, 2, dtype=dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_value_and_grad_with_key_and_state_is_the_generic_path_bit_for_bit(dtype):
    model = mlp_with_state(dtype)
    params, state = model.init(0), model.init_state()
    f = fn.value_and_grad(model, fn.losses.mse)
    for step in range(3):
        x, y = rand((16, 3), seed=step).astype(dtype), rand((16, 2), seed=20 + step).astype(dtype)
        key = fn.random.key(step)
        v1, g1, s1 = f(params, x, y, key=key, state=state)
        pred, pullback, s2 = model.vjp(params, x, key=key, state=state)
        v2, dpred = fn.losses.mse.value_and_grad(pred, y)
        g2 = pullback(dpred)[0]
        assert v1 == v2 and fn.tree.equal(g1, g2) and fn.tree.equal(s1, s2)
        assert fn.layout.layout_of(g1).known(fn.tree.leaves(g1)) is not None  # the fast path
        state = s1
    other = f(params, x, y, key=fn.random.key(99), state=state)
    assert other[0] != v1  # another key, other dropout masks


def test_same_key_same_result_and_each_child_its_own_key():
    model = fn.serial(L.Dropout(0.5), L.Dropout(0.5))
    x = frozen(np.ones((50, 40)))
    a = model.apply({}, x, key=fn.random.key(7), train=True)
    assert np.array_equal(a, model.apply({}, x, key=fn.random.key(7), train=True))
    k0, k1 = fn.random.split(fn.random.key(7), 2)
    first = L.Dropout(0.5).apply({}, x, key=k0, train=True)
    np.testing.assert_array_equal(a, L.Dropout(0.5).apply({}, first, key=k1, train=True))
    assert not np.array_equal(first != 0, L.Dropout(0.5).apply({}, x, key=k1, train=True) != 0)


@pytest.mark.parametrize("donate", [False, True])
def test_train_step_with_state_returns_it_and_donation_writes_over_it(donate):
    model = mlp_with_state()
    params, state = model.init(1), model.init_state()
    opt = fn.optim.adam(1e-2)
    step = fn.train_step(model, fn.losses.mse, opt, donate=donate)
    x, y = rand((16, 3)), rand((16, 2), seed=1)
    f = fn.value_and_grad(model, fn.losses.mse)
    value, grads, want_state = f(params, x, y, key=fn.random.key(0), state=state)
    want_params, _ = opt.update(grads, opt.init(params), params)
    old = fn.tree.map(np.copy, state)
    got = step(params, opt.init(params), x, y, key=fn.random.key(0), state=state)
    assert len(got) == 4 and got[0] == value
    assert fn.tree.equal(got[1], want_params) and fn.tree.equal(got[3], want_state)
    written = got[3]["1"]["running_mean"] is state["1"]["running_mean"]
    assert written == donate and fn.tree.equal(state, want_state if donate else old)


def test_a_user_layer_opts_in_to_key_state_and_train():
    """A counter layer with state and noise in training, written by hand."""

    def Noisy():
        def apply(params, x, *, key=None, state=None, train=False):
            y = x + (fn.random.normal(key, x.shape) if train else 0)
            if state is None:
                return y
            return y, {"calls": state["calls"] + 1}

        def vjp(params, x, *, key=None, state=None, train=True):
            out = apply(params, x, key=key, state=state, train=train)
            y = out if state is None else out[0]
            pullback = lambda dy: ({}, dy)  # noqa: E731
            return (y, pullback) if state is None else (y, pullback, out[1])

        return fn.Layer(lambda key: {}, apply, vjp, name="Noisy()", context=True,
                        init_state=lambda: {"calls": np.array(0, np.int64)})

    model = fn.serial(L.Linear(2, 2, dtype=np.float64), Noisy(), L.Linear(2, 1, dtype=np.float64))
    params, state = model.init(0), model.init_state()
    assert list(state) == ["1"]
    x, y = rand((4, 2)), rand((4, 1))
    f = fn.value_and_grad(model, fn.losses.mse)
    v1, g1, s1 = f(params, x, y, key=fn.random.key(0), state=state)
    v2, g2, s2 = f(params, x, y, key=fn.random.key(0), state=s1)
    assert v1 == v2 and fn.tree.equal(g1, g2) and int(s2["1"]["calls"]) == 2
    assert f(params, x, y, key=fn.random.key(1), state=state)[0] != v1
    y_eval, _ = model.apply(params, x, state=state)
    np.testing.assert_allclose(y_eval, model.apply(params, x, key=fn.random.key(5), state=state)[0])


@given(model=fst.architectures(in_features=3, out_features=2, dropout=True, normalization=True,
                               activation_factories=fst.SMOOTH_ACTIVATION_FACTORIES),
       data=st.data(), key=fst.keys(), train=st.booleans())
def test_random_architectures_with_dropout_and_normalization_have_exact_gradients(model, data, key, train):
    params = data.draw(fst.params(model))
    x = data.draw(fst.inputs(3, max_leading_dims=1, min_side=4))
    state = model.init_state()
    # atol 1e-6: a normalization over a nearly constant channel divides rounding by a tiny
    # deviation, which a finite difference then sees (the analytic side is exact)
    check_grads(model, params, x, key=key, state=state, train=train, atol=1e-6)
    f = fn.value_and_grad(model, fn.losses.mse)
    y = np.zeros((len(x), 2))
    got = f(params, x, y, key=key, state=state)
    pred, pullback, want_state = model.vjp(params, x, key=key, state=state)
    value, dpred = fn.losses.mse.value_and_grad(pred, y)
    assert got[0] == value and fn.tree.equal(got[1], pullback(dpred)[0]) and fn.tree.equal(got[2], want_state)


def test_the_typed_states_name_exactly_the_entries():
    from funcnn.layers.normalization import BatchNormState

    assert list(L.BatchNorm(2).init_state()) == list(BatchNormState.__annotations__)
    params = {"w": np.ones(2)}
    states = fn.optim.states
    for opt, typed in [(fn.optim.adam(0.1), states.AdamState), (fn.optim.adamw(0.1), states.AdamState),
                       (fn.optim.rmsprop(0.1), states.RmspropState), (fn.optim.sgd(0.1), states.SgdState)]:
        assert set(opt.init(params)) == set(typed.__required_keys__)
    assert set(fn.optim.sgd(0.1, momentum=0.9).init(params)) == set(states.SgdState.__annotations__)


class ThreadComm:
    """An in-process stand-in for an MPI communicator: ranks are threads, Allreduce sums."""

    def __init__(self, slots, barrier, rank):
        self.slots, self.barrier, self.rank = slots, barrier, rank

    def Allreduce(self, send, recv):  # noqa: N802 -- mpi4py's name
        self.slots[self.rank] = np.array(send, copy=True)
        self.barrier.wait()
        recv[...] = sum(self.slots)
        self.barrier.wait()


def test_sync_batchnorm_over_ranks_equals_one_batchnorm_over_the_whole_batch():
    import threading
    from concurrent.futures import ThreadPoolExecutor

    ranks, x_all = 3, rand((10, 4, 5), seed=3, scale=2.0)
    dy_all = rand(x_all.shape, seed=4)
    rows = [slice(0, 4), slice(4, 7), slice(7, 10)]  # uneven slices of one global batch
    params = batchnorm_params(4)
    bn = L.BatchNorm(4, dtype=np.float64)
    want_y, pullback, want_state = bn.vjp(params, x_all, state=bn.init_state())
    want_grads, want_dx = pullback(dy_all)
    slots, barrier = [None] * ranks, threading.Barrier(ranks)

    def rank_step(rank):
        layer = L.BatchNorm(4, dtype=np.float64, sync=ThreadComm(slots, barrier, rank))
        y, back, state = layer.vjp(params, x_all[rows[rank]], state=layer.init_state())
        return y, back(dy_all[rows[rank]]), state

    with ThreadPoolExecutor(ranks) as pool:
        results = list(pool.map(rank_step, range(ranks)))
    np.testing.assert_allclose(np.concatenate([r[0] for r in results]), want_y, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(np.concatenate([r[1][1] for r in results]), want_dx, rtol=1e-10, atol=1e-13)
    for name in ("weight", "bias"):  # each rank's share; the data-parallel allreduce sums them
        np.testing.assert_allclose(sum(r[1][0][name] for r in results), want_grads[name], rtol=1e-12)
    for r in results:  # the same running statistics on every rank: those of the whole batch
        for name in ("running_mean", "running_var"):
            np.testing.assert_allclose(r[2][name], want_state[name], rtol=1e-12)
    assert L.BatchNorm(4, sync=ThreadComm(slots, barrier, 0)).name == "BatchNorm(4, sync)"
    with pytest.raises(TypeError, match="BatchNorm: sync must be an mpi4py communicator"):
        L.BatchNorm(4, sync=object())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm_state_keeps_its_dtypes_through_training(dtype):
    bn = L.BatchNorm(3, dtype=dtype)
    state = bn.init_state()
    for step in range(3):
        _, _, state = bn.vjp(bn.init(0), rand((5, 3), seed=step).astype(dtype), state=state)
    assert [state[k].dtype for k in ("running_mean", "running_var")] == [np.dtype(dtype)] * 2
    assert state["num_batches_tracked"].dtype == np.int64 and state["num_batches_tracked"].shape == ()
    with pytest.raises(StateError, match=r"state\['running_var'\] must be an array of shape \(3,\) and dtype"):
        bn.apply(bn.init(0), rand((5, 3)).astype(dtype), state={**state, "running_var": state["running_var"].astype(np.float16)})
