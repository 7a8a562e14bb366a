"""fn.train_step and donated updates: the same bits as the pure two-call loop, reused
memory when donated (and only then), refusals of unsafe buffers, clear errors."""

import tracemalloc

import numpy as np
import pytest

import funcnn as fn
from funcnn.elementwise import BLOCK, BLOCK_SPLIT, PARALLEL_MIN

L = fn.layers

OPTIMIZERS = {
    "sgd": lambda: fn.optim.sgd(0.05),
    "sgd-wd-mask": lambda: fn.optim.sgd(0.05, weight_decay=0.1,
                                        weight_decay_mask=fn.optim.ndim_at_least(2)),
    "momentum": lambda: fn.optim.sgd(0.05, momentum=0.9, weight_decay=0.01),
    "nesterov": lambda: fn.optim.sgd(0.05, momentum=0.9, nesterov=True),
    "rmsprop": lambda: fn.optim.rmsprop(0.01),
    "adam": lambda: fn.optim.adam(0.01),
    "adam-wd-mask": lambda: fn.optim.adam(0.01, weight_decay=0.1,
                                          weight_decay_mask=fn.optim.ndim_at_least(2)),
    "adamw": lambda: fn.optim.adamw(0.01, weight_decay=0.1),
    "masked": lambda: fn.optim.masked(fn.optim.adam(0.01), lambda path, leaf: path != "0.bias"),
}


def small_problem(dtype=np.float64, width=8):
    model = fn.serial(L.Linear(3, width, dtype=dtype), L.Tanh(), L.Linear(width, 2, dtype=dtype))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3)).astype(dtype)
    y = rng.normal(size=(16, 2)).astype(dtype)
    return model, x, y


def two_call_loop(model, loss, opt, params, x, y, steps):
    value_and_grad = fn.value_and_grad(model, loss)
    state, values = opt.init(params), []
    for _ in range(steps):
        value, grads = value_and_grad(params, x, y)
        params, state = opt.update(grads, state, params)
        values.append(value)
    return values, params, state


def step_loop(model, loss, opt, params, x, y, steps, donate):
    step = fn.train_step(model, loss, opt, donate=donate)
    state, values = opt.init(params), []
    for _ in range(steps):
        value, params, state = step(params, state, x, y)
        values.append(value)
    return values, params, state


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("donate", [False, True])
def test_train_step_is_value_and_grad_then_update_bitwise(name, donate):
    model, x, y = small_problem()
    params = model.init(0)
    want = two_call_loop(model, fn.losses.mse, OPTIMIZERS[name](), params, x, y, 6)
    got = step_loop(model, fn.losses.mse, OPTIMIZERS[name](), params, x, y, 6, donate)
    assert got[0] == want[0]
    assert fn.tree.equal(got[1], want[1]) and fn.tree.equal(got[2], want[2])


@pytest.mark.parametrize("name", ["sgd", "nesterov", "rmsprop", "adam-wd-mask", "adamw"])
@pytest.mark.parametrize("threads", [1, 2])
def test_donated_update_matches_pure_on_big_buffers_in_blocks(name, threads, request):
    """Above PARALLEL_MIN elements the kernel runs in blocks, on one thread or two."""
    if threads == 2:
        request.getfixturevalue("two_threads")
    width = PARALLEL_MIN // 3 + 7  # Linear(3, width): 4 * width params > PARALLEL_MIN
    model, x, y = small_problem(np.float32, width=width)
    params = model.init(1)
    pure = step_loop(model, fn.losses.mse, OPTIMIZERS[name](), params, x, y, 3, donate=False)
    donated = step_loop(model, fn.losses.mse, OPTIMIZERS[name](), params, x, y, 3, donate=True)
    assert pure[0] == donated[0]
    assert fn.tree.equal(pure[1], donated[1]) and fn.tree.equal(pure[2], donated[2])


def same(a, b):
    """``(params, state)`` pairs equal bitwise."""
    return fn.tree.equal(a[0], b[0]) and fn.tree.equal(a[1], b[1])


def buffer_of(tree):
    leaf = fn.tree.leaves(tree)[0]
    return leaf.base if leaf.base is not None else leaf


@pytest.mark.parametrize("name", ["sgd", "momentum", "rmsprop", "adam", "adamw"])
def test_donated_update_writes_over_the_old_buffers(name):
    opt = OPTIMIZERS[name]()
    model, x, y = small_problem()
    step = fn.train_step(model, fn.losses.mse, opt, donate=True)
    _, params, state = step(model.init(0), opt.init(model.init(0)), x, y)  # now flat buffers
    entries = [k for k, v in state.items() if isinstance(v, dict)]
    before = [buffer_of(params)] + [buffer_of(state[k]) for k in entries]
    _, new_params, new_state = step(params, state, x, y)
    after = [buffer_of(new_params)] + [buffer_of(new_state[k]) for k in entries]
    assert all(a is b for a, b in zip(before, after))


@pytest.mark.parametrize("donate", [False, True])
def test_the_first_step_never_writes_the_callers_separate_arrays(donate):
    """model.init's leaves are separate arrays: they are gathered into fresh memory."""
    model, x, y = small_problem()
    params = model.init(0)
    for leaf in fn.tree.leaves(params):
        leaf.setflags(write=False)
    opt = fn.optim.adam(0.01)
    state = opt.init(params)
    for leaf in fn.tree.leaves(state["mu"]) + fn.tree.leaves(state["nu"]):
        leaf.setflags(write=False)
    kept = fn.tree.map(np.copy, params)
    fn.train_step(model, fn.losses.mse, opt, donate=donate)(params, state, x, y)
    assert fn.tree.equal(params, kept)


def test_pure_step_never_writes_its_inputs():
    model, x, y = small_problem()
    opt = fn.optim.adam(0.01)
    step = fn.train_step(model, fn.losses.mse, opt)
    _, params, state = step(model.init(0), opt.init(model.init(0)), x, y)
    kept = fn.tree.map(np.copy, {"params": params, "state": state})
    step(params, state, x, y)
    assert fn.tree.equal({"params": params, "state": state}, kept)


def test_donation_refuses_read_only_and_shared_buffers():
    model, x, y = small_problem()
    opt = fn.optim.adam(0.01)
    step = fn.train_step(model, fn.losses.mse, opt, donate=True)
    _, params, state = step(model.init(0), opt.init(model.init(0)), x, y)
    grads = fn.grad(model, fn.losses.mse)(params, x, y)
    want = opt.update(grads, state, params)

    buffer_of(params).setflags(write=False)  # read only: a fresh result, the same bits
    kept = np.copy(buffer_of(params))
    got = opt.update(grads, state, params, donate=True)
    assert same(got, want) and np.array_equal(buffer_of(params), kept)

    shared = {**state, "mu": state["nu"]}  # one buffer in two roles: never overwritten
    kept = np.copy(buffer_of(state["nu"]))
    want = opt.update(grads, shared, fn.tree.map(np.copy, params))
    got = opt.update(grads, shared, fn.tree.map(np.copy, params), donate=True)
    assert same(got, want) and np.array_equal(buffer_of(state["nu"]), kept)


def test_grads_passed_as_params_are_not_overwritten_under_donation():
    opt = fn.optim.sgd(0.1)
    params = {"w": np.arange(4.0), "b": np.ones(2)}
    params, state = opt.update(params, opt.init(params), params)  # now one flat buffer
    want = opt.update(params, state, fn.tree.map(np.copy, params))
    got = opt.update(params, state, params, donate=True)
    assert same(got, want)


def peak_of_second_update(donate):
    """Above PARALLEL_MIN elements the kernel's temporaries are cache-sized blocks."""
    model = fn.serial(L.Linear(64, 8192, dtype=np.float32), L.ReLU(), L.Linear(8192, 64, dtype=np.float32))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 64)).astype(np.float32)
    y = rng.normal(size=(8, 64)).astype(np.float32)
    opt = fn.optim.adam(1e-3)
    value_and_grad = fn.value_and_grad(model, fn.losses.mse)
    params = model.init(0)
    _, grads = value_and_grad(params, x, y)
    params, state = opt.update(grads, opt.init(params), params, donate=donate)
    _, grads = value_and_grad(params, x, y)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        params, state = opt.update(grads, state, params, donate=donate)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before, fn.tree.size(params) * 4


def test_donated_update_allocates_no_new_params_or_state():
    pure_extra, param_bytes = peak_of_second_update(donate=False)
    donated_extra, _ = peak_of_second_update(donate=True)
    assert pure_extra >= 3 * param_bytes  # new params, mu, nu
    # only the kernel's temporaries: two per thread, a block each
    assert donated_extra < 2 * 2 * max(BLOCK, BLOCK_SPLIT) * 4 + 65536 < param_bytes


def test_optimizers_without_donation_run_their_pure_update():
    calls = []
    adam = fn.optim.adam(0.01)

    def update(grads, state, params):  # a user's optimizer: no donate= parameter
        calls.append(1)
        return adam.update(grads, state, params)

    model, x, y = small_problem()
    opt = fn.optim.Optimizer(adam.init, update)
    got = step_loop(model, fn.losses.mse, opt, model.init(0), x, y, 3, donate=True)
    want = two_call_loop(model, fn.losses.mse, adam, model.init(0), x, y, 3)
    assert len(calls) == 3 and got[0] == want[0] and same(got[1:], want[1:])


def test_donation_is_asked_of_the_optimizer_type_not_its_signature():
    adam = fn.optim.adam(0.01)
    assert isinstance(adam, fn.optim.DonatingOptimizer)
    assert not isinstance(fn.optim.masked(adam, {"0": {"weight": True, "bias": False}}),
                          fn.optim.DonatingOptimizer)
    calls = []

    def update(grads, state, params, *, donate=False):  # takes the keyword, but is a plain Optimizer
        calls.append(donate)
        return adam.update(grads, state, params)

    model, x, y = small_problem()
    step_loop(model, fn.losses.mse, fn.optim.Optimizer(adam.init, update), model.init(0), x, y, 2,
              donate=True)
    assert calls == [False, False]


def test_train_step_errors_name_the_argument():
    model, _, y = small_problem()
    opt = fn.optim.adam(0.01)
    with pytest.raises(TypeError, match="train_step: model must be a funcnn Layer"):
        fn.train_step(lambda p, x: x, fn.losses.mse, opt)
    with pytest.raises(TypeError, match="train_step: optimizer must be an fn.optim.Optimizer"):
        fn.train_step(model, fn.losses.mse, (opt.init, opt.update))
    with pytest.raises(TypeError, match="train_step: donate must be a bool"):
        fn.train_step(model, fn.losses.mse, opt, donate="yes")
    with pytest.raises(TypeError, match="plain function has no gradient rule"):
        fn.train_step(model, lambda pred, y: 0.0, opt)
    step = fn.train_step(model, fn.losses.mse, opt)
    with pytest.raises(fn.errors.ShapeError, match=r"serial\[0\] Linear\(3 -> 8\)"):
        step(model.init(0), opt.init(model.init(0)), np.ones((4, 5)), y[:4])


def test_donated_small_model_keeps_one_buffer_over_many_steps():
    """A donated update hands back views of the same buffers each step; the layout must
    keep recognising them (no gathered copies), however many steps run."""
    model, x, y = small_problem(np.float32)
    opt = fn.optim.adam(0.01)
    step = fn.train_step(model, fn.losses.mse, opt, donate=True)
    _, params, state = step(model.init(0), opt.init(model.init(0)), x, y)
    first = buffer_of(params), buffer_of(state["mu"]), buffer_of(state["nu"])
    for _ in range(4 * fn.layout._RECENT):
        _, params, state = step(params, state, x, y)
        assert (buffer_of(params), buffer_of(state["mu"]), buffer_of(state["nu"])) == first
