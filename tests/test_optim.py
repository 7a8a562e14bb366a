"""Optimizers: torch.optim and seed equality, convergence, purity, dtypes, resume, errors."""

import numpy as np
import pytest
from helpers.optim_problems import check_pure_update, frozen, nested_params, run, wavy_grad
from hypothesis import given
from hypothesis import strategies as st

import funcnn as fn
from funcnn.errors import StructureError

S = fn.optim.schedules


# --- problems: helpers/optim_problems.py ------------------------------------------------


ALL_OPTIMIZERS = [
    ("sgd", {"lr": 0.05}),
    ("sgd", {"lr": 0.05, "momentum": 0.9}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
    ("rmsprop", {"lr": 0.01}),
    ("adam", {"lr": 0.01}),
    ("adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("adamw", {"lr": 0.01}),
]


def make(name, kwargs):
    return getattr(fn.optim, name)(**kwargs)


def row_id(row):
    name, kwargs = row
    return name + "".join(f"-{k}={v}" for k, v in kwargs.items() if k != "lr")


# --- torch.optim equality ------------------------------------------------------------

TORCH_ROWS = [
    # (name, funcnn kwargs, torch class, torch kwargs)
    ("sgd", {"lr": 0.05}, "SGD", {"lr": 0.05}),
    ("sgd", {"lr": 0.05, "momentum": 0.9}, "SGD", {"lr": 0.05, "momentum": 0.9}),
    (
        "sgd",
        {"lr": 0.05, "momentum": 0.9, "nesterov": True},
        "SGD",
        {"lr": 0.05, "momentum": 0.9, "nesterov": True},
    ),
    ("sgd", {"lr": 0.05, "weight_decay": 0.1}, "SGD", {"lr": 0.05, "weight_decay": 0.1}),
    (
        "sgd",
        {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.1},
        "SGD",
        {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.1},
    ),
    ("adam", {"lr": 0.01}, "Adam", {"lr": 0.01}),
    (
        "adam",
        {"lr": 0.01, "b1": 0.8, "b2": 0.99, "eps": 1e-6},
        "Adam",
        {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6},
    ),
    ("adam", {"lr": 0.01, "weight_decay": 0.1}, "Adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("adamw", {"lr": 0.01}, "AdamW", {"lr": 0.01}),
    ("adamw", {"lr": 0.01, "weight_decay": 0.3}, "AdamW", {"lr": 0.01, "weight_decay": 0.3}),
]


def torch_trajectory(torch, cls_name, kwargs, params, steps, scheduler=None):
    """Run torch.optim on the same problem: grads come from wavy_grad on torch's params."""
    paths = fn.tree.paths(params)
    tensors = [torch.tensor(leaf, requires_grad=True) for leaf in fn.tree.leaves(params)]
    opt = getattr(torch.optim, cls_name)(tensors, foreach=False, **kwargs)
    sched = scheduler(opt) if scheduler else None

    def current():
        return fn.tree.unflatten({p: t.detach().numpy().copy() for p, t in zip(paths, tensors)})

    for _ in range(steps):
        grads = fn.tree.flatten(wavy_grad(current()))
        for path, t in zip(paths, tensors):
            t.grad = torch.from_numpy(grads[path])
        opt.step()
        if sched:
            sched.step()
    return current()


def assert_tree_close(got, want, rtol=1e-12, atol=1e-14):
    fn.tree.assert_same_structure(want, got)
    for path, w in fn.tree.flatten(want).items():
        np.testing.assert_allclose(
            fn.tree.flatten(got)[path], w, rtol=rtol, atol=atol, err_msg=path
        )


@pytest.mark.parametrize("steps", [1, 25])
@pytest.mark.parametrize("row", TORCH_ROWS, ids=lambda r: row_id(r[:2]))
def test_matches_torch_optim_step_for_step(row, steps):
    torch = pytest.importorskip("torch")
    name, kwargs, cls_name, torch_kwargs = row
    params = nested_params()
    ours, state = run(make(name, kwargs), params, steps)
    theirs = torch_trajectory(torch, cls_name, torch_kwargs, params, steps)
    assert int(state["step"]) == steps
    assert_tree_close(ours, theirs)
    assert not fn.tree.allclose(ours, params, rtol=1e-3)  # the test can fail: params moved


@pytest.mark.parametrize(
    "name, schedule, cls_name, make_scheduler",
    [
        (
            "sgd",
            S.step_decay(0.1, step_size=4, gamma=0.5),
            "SGD",
            lambda t, o: t.optim.lr_scheduler.StepLR(o, 4, 0.5),
        ),
        (
            "adam",
            S.exponential_decay(0.05, 0.9),
            "Adam",
            lambda t, o: t.optim.lr_scheduler.ExponentialLR(o, 0.9),
        ),
        (
            "adamw",
            S.cosine_decay(0.05, decay_steps=25, final_value=0.001),
            "AdamW",
            lambda t, o: t.optim.lr_scheduler.CosineAnnealingLR(o, T_max=25, eta_min=0.001),
        ),
    ],
)
def test_schedules_match_torch_lr_schedulers(name, schedule, cls_name, make_scheduler):
    torch = pytest.importorskip("torch")
    params = nested_params()
    ours, _ = run(getattr(fn.optim, name)(schedule), params, 25)
    lr0 = schedule(0)
    theirs = torch_trajectory(
        torch, cls_name, {"lr": lr0}, params, 25, scheduler=lambda o: make_scheduler(torch, o)
    )
    assert_tree_close(ours, theirs)


# --- the seed's formulas, written out -------------------------------------------------


def seed_rmsprop(params, lr, beta, eps, steps):
    """The seed tutorial's RMSProp.step, on a flat dict of arrays."""
    data = {k: v.copy() for k, v in fn.tree.flatten(params).items()}
    s = {k: np.zeros_like(v) for k, v in data.items()}
    for step_count in range(1, steps + 1):
        grads = fn.tree.flatten(wavy_grad(fn.tree.unflatten(data)))
        for k, grad in grads.items():
            s[k] = beta * s[k] + (1 - beta) * (grad**2)
            correction = 1 - beta**step_count
            data[k] = data[k] - lr * grad / (np.sqrt(s[k] / correction) + eps)
    return fn.tree.unflatten(data), fn.tree.unflatten(s)


def seed_adam(params, lr, weight_decay, beta1, beta2, epsilon, steps):
    """The seed tutorial's Adam.step, on a flat dict of arrays."""
    data = {k: v.copy() for k, v in fn.tree.flatten(params).items()}
    v = {k: np.zeros_like(x) for k, x in data.items()}
    s = {k: np.zeros_like(x) for k, x in data.items()}
    for step_count in range(1, steps + 1):
        grads = fn.tree.flatten(wavy_grad(fn.tree.unflatten(data)))
        for k, grad in grads.items():
            g = grad + weight_decay * data[k]
            v[k] = beta1 * v[k] + (1 - beta1) * g
            s[k] = beta2 * s[k] + (1 - beta2) * (g**2)
            v_corr = v[k] / (1 - beta1**step_count)
            s_corr = s[k] / (1 - beta2**step_count)
            data[k] = data[k] - lr * v_corr / (np.sqrt(s_corr) + epsilon)
    return fn.tree.unflatten(data), fn.tree.unflatten(v), fn.tree.unflatten(s)


@pytest.mark.parametrize("steps", [1, 25])
@pytest.mark.parametrize("beta, eps", [(0.9, 1e-8), (0.5, 1e-3), (0.0, 1e-8)])
def test_rmsprop_is_the_seed_rule_bitwise(beta, eps, steps):
    params = nested_params()
    ours, state = run(fn.optim.rmsprop(0.01, beta=beta, eps=eps), params, steps)
    want, want_s = seed_rmsprop(params, 0.01, beta, eps, steps)
    assert fn.tree.equal(ours, want)
    assert fn.tree.equal(state["nu"], want_s)


@pytest.mark.parametrize("steps", [1, 25])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_is_the_seed_rule(weight_decay, steps):
    """Moments bitwise. The step folds the bias corrections into two scalars,
    ``eta sqrt(c2) / c1 * mu / (sqrt(nu) + eps sqrt(c2))`` (two passes fewer than the
    seed's ``eta (mu / c1) / (sqrt(nu / c2) + eps)``), so params agree to rounding."""
    params = nested_params()
    ours, state = run(fn.optim.adam(0.01, weight_decay=weight_decay), params, steps)
    want, want_mu, want_nu = seed_adam(params, 0.01, weight_decay, 0.9, 0.999, 1e-8, steps)
    assert fn.tree.allclose(ours, want, rtol=1e-14, atol=0.0)
    if steps == 1:  # the moments see the same grads: bitwise
        assert fn.tree.equal(state["mu"], want_mu) and fn.tree.equal(state["nu"], want_nu)
    else:
        assert fn.tree.allclose(state["mu"], want_mu, rtol=1e-12, atol=0.0)
        assert fn.tree.allclose(state["nu"], want_nu, rtol=1e-12, atol=0.0)


def test_rmsprop_first_step_differs_from_torch_by_the_bias_correction():
    """The documented difference: torch's uncorrected first step is 1/sqrt(1-beta) larger."""
    torch = pytest.importorskip("torch")
    params = nested_params()
    ours, _ = run(fn.optim.rmsprop(0.01, beta=0.9, eps=1e-12), params, 1)
    theirs = torch_trajectory(torch, "RMSprop", {"lr": 0.01, "alpha": 0.9, "eps": 1e-12}, params, 1)
    ratio = fn.tree.map(lambda t, o, p: (t - p) / (o - p), theirs, ours, params)
    for r in fn.tree.leaves(ratio):
        np.testing.assert_allclose(r, 1 / np.sqrt(0.1), rtol=1e-8)


# --- convergence table -----------------------------------------------------------------

QUAD_D = {"x": np.array([1.0, 3.0, 10.0]), "y": {"z": np.array([[2.0, 5.0], [1.0, 7.0]])}}
QUAD_C = {"x": np.array([1.0, -2.0, 0.5]), "y": {"z": np.array([[3.0, -1.0], [0.25, 2.0]])}}


def quadratic(dtype):
    """f = 1/2 sum d (p - c)**2 (condition number 10), from zeros; the minimum is c."""
    d, c = fn.tree.astype(QUAD_D, dtype), fn.tree.astype(QUAD_C, dtype)
    return fn.tree.zeros_like(c), lambda p: fn.tree.map(lambda p, d, c: d * (p - c), p, d, c), c


def rosenbrock(dtype):
    """f = (1 - x)**2 + 100 (y - x**2)**2 from (-1.2, 1), with 0-d leaves; minimum (1, 1)."""

    def grad(p):
        x, y = p["x"], p["y"]["v"]
        dx = -2.0 * (1.0 - x) - 400.0 * x * (y - x * x)
        dy = 200.0 * (y - x * x)  # NumPy 1.x computes 0-d float32 * Python float in float64:
        return {"x": np.asarray(dx, dtype), "y": {"v": np.asarray(dy, dtype)}}

    start = {"x": np.array(-1.2, dtype), "y": {"v": np.array(1.0, dtype)}}
    return start, grad, {"x": np.array(1.0, dtype), "y": {"v": np.array(1.0, dtype)}}


CONVERGENCE = [
    # (name, kwargs on the quadratic, kwargs on Rosenbrock, step budget on Rosenbrock)
    ("sgd", {"lr": 0.1}, {"lr": 1.5e-3}, 15_000),
    ("sgd", {"lr": 0.05, "momentum": 0.9}, {"lr": 5e-4, "momentum": 0.9}, 5_000),
    (
        "sgd",
        {"lr": 0.05, "momentum": 0.9, "nesterov": True},
        {"lr": 5e-4, "momentum": 0.9, "nesterov": True},
        5_000,
    ),
    (
        "sgd",
        {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-5},
        {"lr": 5e-4, "momentum": 0.9, "weight_decay": 1e-5},
        5_000,
    ),
    ("rmsprop", {"lr": S.cosine_decay(0.05, 500)}, {"lr": S.cosine_decay(3e-3, 6000, 3e-5)}, 9_000),
    ("adam", {"lr": S.cosine_decay(0.1, 500)}, {"lr": 0.03}, 4_000),
    (
        "adamw",
        {"lr": S.cosine_decay(0.1, 500), "weight_decay": 1e-4},
        {"lr": 0.03, "weight_decay": 1e-4},
        4_000,
    ),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("problem", ["quadratic", "rosenbrock"])
@pytest.mark.parametrize("row", CONVERGENCE, ids=lambda r: row_id(r[:2]))
def test_reaches_the_minimum(row, problem, dtype):
    name, quad_kwargs, rosen_kwargs, rosen_budget = row
    kwargs, budget = (
        (quad_kwargs, 1_000) if problem == "quadratic" else (rosen_kwargs, rosen_budget)
    )
    params, grad, minimum = {"quadratic": quadratic, "rosenbrock": rosenbrock}[problem](dtype)
    opt = make(name, kwargs)
    state = opt.init(params)
    for _ in range(budget):
        params, state = opt.update(grad(params), state, params)
        if fn.tree.allclose(params, minimum, rtol=0.0, atol=1e-3):
            break
    assert fn.tree.allclose(params, minimum, rtol=0.0, atol=1e-3), (params, minimum)
    assert all(leaf.dtype == dtype for leaf in fn.tree.leaves(params))


# --- purity, dtypes, the state ---------------------------------------------------------


@pytest.mark.parametrize("row", ALL_OPTIMIZERS, ids=row_id)
def test_update_never_mutates_its_inputs(row):
    params, new_params = check_pure_update(make(*row))
    for new, old in zip(fn.tree.leaves(new_params), fn.tree.leaves(params)):
        assert not np.shares_memory(new, old)


@pytest.mark.parametrize("row", ALL_OPTIMIZERS, ids=row_id)
def test_state_is_a_plain_dict_of_ndarrays_with_named_entries(row):
    opt = make(*row)
    assert isinstance(opt, fn.optim.Optimizer)
    init, _update = opt  # unpacks as a 2-tuple
    state = init(nested_params())
    assert list(state)[:2] == ["step", "lr"]
    assert state["step"].shape == () and state["step"].dtype == np.int64 and int(state["step"]) == 0
    assert state["lr"].shape == () and state["lr"].dtype == np.float64
    for path, leaf in fn.tree.flatten(state).items():
        assert type(leaf) is np.ndarray, path
    for name in list(state)[2:]:
        fn.tree.assert_same_structure(nested_params(), state[name])


@pytest.mark.parametrize("row", ALL_OPTIMIZERS, ids=row_id)
def test_float32_params_keep_float32_params_and_state(row):
    opt = make(*row)
    params = nested_params(np.float32)
    params["c"] = np.ones((2, 2), np.float64)  # a mixed tree: each leaf keeps its dtype
    new_params, state = run(opt, params, 3)
    want = {path: leaf.dtype for path, leaf in fn.tree.flatten(params).items()}
    for t in [new_params] + [state[name] for name in list(state)[2:]]:
        assert {path: leaf.dtype for path, leaf in fn.tree.flatten(t).items()} == want


@pytest.mark.parametrize("row", ALL_OPTIMIZERS, ids=row_id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_d_params_give_zero_d_ndarrays_of_their_dtype(row, dtype):
    opt = make(*row)
    params = {"s": np.array(0.5, dtype), "v": np.ones(2, dtype)}
    new_params, state = run(opt, params, 2)
    for leaf in fn.tree.leaves({"params": new_params, "state": state}):
        assert type(leaf) is np.ndarray
    assert new_params["s"].shape == () and new_params["s"].dtype == dtype
    for name in list(state)[2:]:
        assert state[name]["s"].shape == () and state[name]["s"].dtype == dtype


leaf_shapes = st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple)


@given(
    shapes=st.dictionaries(st.sampled_from("abcde"), leaf_shapes, min_size=1, max_size=4),
    row=st.sampled_from(ALL_OPTIMIZERS),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_tree_shape_updates_leafwise_without_mutation(shapes, row, seed):
    rng = np.random.default_rng(seed)
    params = frozen({k: {"w": rng.normal(size=s)} for k, s in shapes.items()})
    grads = frozen(fn.tree.map(lambda p: rng.normal(size=p.shape), params))
    opt = make(*row)
    state = frozen(opt.init(params))
    new_params, _new_state = opt.update(grads, state, params)
    fn.tree.assert_same_structure(params, new_params)
    for new, old in zip(fn.tree.leaves(new_params), fn.tree.leaves(params)):
        assert new.shape == old.shape and new.dtype == old.dtype
    # Leafwise: updating one leaf alone gives the same result as within the tree.
    key = next(iter(shapes))
    alone, _ = opt.update({key: grads[key]}, opt.init({key: params[key]}), {key: params[key]})
    assert fn.tree.equal(alone[key], new_params[key])


# --- the learning rate held in the state -------------------------------------------------


def test_state_lr_is_the_lr_the_next_update_uses():
    schedule = S.step_decay(0.1, step_size=2, gamma=0.5)
    opt = fn.optim.sgd(schedule)
    params = {"w": np.array([1.0, 2.0])}
    grads = {"w": np.array([1.0, -1.0])}
    state = opt.init(params)
    seen = []
    for _ in range(5):
        lr = float(state["lr"])
        seen.append(lr)
        new_params, state = opt.update(grads, state, params)
        np.testing.assert_array_equal(new_params["w"], params["w"] - lr * grads["w"])
        params = new_params
    assert seen == [0.1, 0.1, 0.05, 0.05, 0.025]
    assert float(state["lr"]) == schedule(5) == 0.025 and int(state["step"]) == 5


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam", "adamw"])
def test_state_lr_follows_a_warmup_schedule_for_every_optimizer(name):
    schedule = S.warmup_cosine(0.1, warmup_steps=3, total_steps=10)
    opt = getattr(fn.optim, name)(schedule)
    params, state = nested_params(), None
    state = opt.init(params)
    assert float(state["lr"]) == 0.0
    for step in range(1, 12):
        params, state = opt.update(wavy_grad(params), state, params)
        assert float(state["lr"]) == schedule(step)
    assert float(state["lr"]) == 0.0


def test_a_constant_lr_is_in_the_state_too():
    state = fn.optim.adam(3e-4).init(nested_params())
    assert float(state["lr"]) == 3e-4


@pytest.mark.parametrize(
    "schedule, match",
    [
        (lambda step: -0.1, "returned -0.1 at step 0"),
        (lambda step: "0.1", "returned '0.1'"),
        (lambda step: float("nan"), "returned nan"),
    ],
)
def test_a_bad_schedule_value_is_reported_with_the_step(schedule, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fn.optim.adam(schedule).init(nested_params())


# --- resume ------------------------------------------------------------------------------


@pytest.mark.parametrize("row", ALL_OPTIMIZERS, ids=row_id)
def test_resume_through_savez_equals_an_uninterrupted_run_bitwise(row, tmp_path):
    name, kwargs = row
    kwargs = {**kwargs, "lr": S.warmup_cosine(kwargs["lr"], warmup_steps=4, total_steps=20)}
    opt, n = make(name, kwargs), 6
    params = nested_params(np.float32)
    straight, straight_state = run(opt, params, 2 * n)

    half, half_state = run(opt, params, n)
    path = tmp_path / "checkpoint.npz"
    np.savez(path, **fn.tree.flatten({"params": half, "state": half_state}))
    with np.load(path, allow_pickle=False) as f:
        loaded = fn.tree.unflatten({k: f[k] for k in f.files})
    resumed, resumed_state = run(opt, loaded["params"], n, state=loaded["state"])

    assert fn.tree.equal(resumed, straight)
    assert fn.tree.equal(resumed_state, straight_state)
    assert not fn.tree.equal(half, straight)


# --- errors --------------------------------------------------------------------------------

BAD_HYPERPARAMETERS = [
    # (factory, kwargs, exception, message fragment)
    (fn.optim.sgd, {"lr": -0.1}, ValueError, "sgd: lr must be >= 0, got -0.1"),
    (fn.optim.sgd, {"lr": "0.1"}, TypeError, "sgd: lr must be a number >= 0 or a schedule"),
    (fn.optim.sgd, {"lr": None}, TypeError, "lr must be a number"),
    (fn.optim.sgd, {"lr": True}, TypeError, "lr must be a number"),
    (fn.optim.sgd, {"lr": float("nan")}, ValueError, "sgd: lr must be finite, got nan"),
    (
        fn.optim.sgd,
        {"lr": 0.1, "momentum": -0.5},
        ValueError,
        "sgd: momentum must be >= 0, got -0.5",
    ),
    (fn.optim.sgd, {"lr": 0.1, "nesterov": True}, ValueError, "nesterov=True needs momentum > 0"),
    (
        fn.optim.sgd,
        {"lr": 0.1, "momentum": 0.9, "nesterov": "yes"},
        TypeError,
        "nesterov must be a bool",
    ),
    (
        fn.optim.sgd,
        {"lr": 0.1, "weight_decay": -1e-4},
        ValueError,
        "sgd: weight_decay must be >= 0",
    ),
    (
        fn.optim.sgd,
        {"lr": 0.1, "weight_decay_mask": [True]},
        TypeError,
        "sgd: weight_decay_mask must be",
    ),
    (
        fn.optim.rmsprop,
        {"lr": 0.1, "beta": 1.0},
        ValueError,
        "rmsprop: beta must be in [0, 1), got 1.0",
    ),
    (fn.optim.rmsprop, {"lr": 0.1, "eps": 0.0}, ValueError, "rmsprop: eps must be > 0, got 0.0"),
    (fn.optim.adam, {"lr": -1e-3}, ValueError, "adam: lr must be >= 0, got -0.001"),
    (fn.optim.adam, {"b1": 1.0}, ValueError, "adam: b1 must be in [0, 1), got 1.0"),
    (fn.optim.adam, {"b1": -0.1}, ValueError, "adam: b1 must be in [0, 1), got -0.1"),
    (fn.optim.adam, {"b2": 1.5}, ValueError, "adam: b2 must be in [0, 1), got 1.5"),
    (fn.optim.adam, {"b2": "0.999"}, TypeError, "adam: b2 must be a number, got '0.999'"),
    (fn.optim.adam, {"eps": -1e-8}, ValueError, "adam: eps must be > 0, got -1e-08"),
    (fn.optim.adam, {"weight_decay": -0.1}, ValueError, "adam: weight_decay must be >= 0"),
    (fn.optim.adamw, {"b1": 1.2}, ValueError, "adamw: b1 must be in [0, 1), got 1.2"),
    (
        fn.optim.adamw,
        {"weight_decay": float("inf")},
        ValueError,
        "adamw: weight_decay must be finite",
    ),
    (fn.optim.adamw, {"weight_decay_mask": "bias"}, TypeError, "adamw: weight_decay_mask must be"),
]


@pytest.mark.parametrize("factory, kwargs, exception, message", BAD_HYPERPARAMETERS)
def test_bad_hyperparameters_fail_at_the_factory_naming_the_argument(
    factory, kwargs, exception, message
):
    with pytest.raises(exception) as info:
        factory(**kwargs)
    assert message in str(info.value)


def test_numpy_numbers_are_accepted_as_hyperparameters():
    opt = fn.optim.adam(np.float32(1e-3), b1=np.float64(0.9), eps=np.float32(1e-7))
    params, state = run(opt, nested_params(np.float32), 2)
    assert params["b"].dtype == np.float32 and state["mu"]["b"].dtype == np.float32


@pytest.mark.parametrize("row", ALL_OPTIMIZERS, ids=row_id)
def test_grads_with_another_structure_name_the_first_differing_key_path(row):
    opt = make(*row)
    params = nested_params()
    state = opt.init(params)
    grads = wavy_grad(params)
    with pytest.raises(StructureError, match=r"'a\.w': missing"):
        opt.update({"a": {}, "b": grads["b"]}, state, params)
    with pytest.raises(StructureError, match=r"'c': unexpected"):
        opt.update({**grads, "c": np.ones(2)}, state, params)
    with pytest.raises(
        StructureError, match=r"grads at 'a\.w' has shape \(4, 3\), expected \(3, 4\)"
    ):
        opt.update({"a": {"w": grads["a"]["w"].T}, "b": grads["b"]}, state, params)
    with pytest.raises(StructureError, match=r"grads at 'b' has dtype float32, expected float64"):
        opt.update({"a": grads["a"], "b": grads["b"].astype(np.float32)}, state, params)
    with pytest.raises(
        StructureError, match=r"grads at 'b' must be an array of shape \(5,\), got list"
    ):
        opt.update({"a": grads["a"], "b": [0.0] * 5}, state, params)


@pytest.mark.parametrize("row", ALL_OPTIMIZERS, ids=row_id)
def test_state_from_another_model_is_a_structure_error(row):
    opt = make(*row)
    params = nested_params()
    other = {"a": {"w": np.ones((3, 4))}, "b": np.ones(6)}
    state = opt.init(other)
    per_leaf = [k for k in state if k not in ("step", "lr")]
    if not per_leaf:  # plain sgd keeps no per-leaf state: nothing to mismatch
        opt.update(wavy_grad(params), state, params)
        return
    with pytest.raises(
        StructureError, match=rf"state\['{per_leaf[0]}'\] at 'b' has shape \(6,\), expected \(5,\)"
    ):
        opt.update(wavy_grad(params), state, params)
    state = opt.init({"a": {"w": np.ones((3, 4))}, "z": np.ones(5)})
    with pytest.raises(StructureError, match=r"'b': missing"):
        opt.update(wavy_grad(params), state, params)


def test_state_of_another_optimizer_is_a_structure_error():
    params = nested_params()
    state = fn.optim.sgd(0.1, momentum=0.9).init(params)
    with pytest.raises(
        StructureError, match=r"adam: state must be a dict with keys \['step', 'lr', 'mu', 'nu'\]"
    ):
        fn.optim.adam().update(wavy_grad(params), state, params)


def test_params_must_be_a_dict_of_floating_arrays():
    with pytest.raises(TypeError, match="params must be a dict pytree, got ndarray"):
        fn.optim.adam().init(np.ones(3))
    with pytest.raises(
        TypeError, match=r"params leaf 'a\.n' must be a floating ndarray, got int64 array"
    ):
        fn.optim.adam().init({"a": {"n": np.arange(3)}})
    with pytest.raises(TypeError, match=r"params leaf 'x' must be a floating ndarray, got float"):
        fn.optim.sgd(0.1).init({"x": 1.0})


def test_a_corrupt_step_count_is_a_structure_error():
    params = nested_params()
    opt = fn.optim.adam()
    state = opt.init(params)
    with pytest.raises(StructureError, match=r"adam: state\['step'\] must be >= 0, got -1"):
        opt.update(wavy_grad(params), {**state, "step": np.array(-1)}, params)
    with pytest.raises(StructureError, match=r"adam: state\['step'\] must be a 0-d integer array"):
        opt.update(wavy_grad(params), {**state, "step": np.array(1.0)}, params)


def test_structure_errors_say_which_optimizer_and_tree():
    params = nested_params()
    opt = fn.optim.sgd(0.1, momentum=0.9)
    with pytest.raises(StructureError, match=r"^sgd: params and grads differ at 'b': missing"):
        opt.update({"a": wavy_grad(params)["a"]}, opt.init(params), params)
