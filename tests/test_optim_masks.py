"""Weight-decay masks, the ndim mask, and freezing with fn.optim.masked."""

import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import funcnn as fn
from funcnn.errors import StructureError


def model_params(dtype=np.float64):
    rng = np.random.default_rng(1)
    return {
        "0": {
            "weight": rng.normal(size=(3, 2)).astype(dtype),
            "bias": rng.normal(size=3).astype(dtype),
        },
        "2": {
            "weight": rng.normal(size=(1, 3)).astype(dtype),
            "bias": rng.normal(size=1).astype(dtype),
        },
    }


def grad_of(params):
    return fn.tree.map(lambda p: np.sin(3.0 * p) + p, params)


def frozen(tree):
    tree = copy.deepcopy(tree)
    for leaf in fn.tree.leaves(tree):
        leaf.setflags(write=False)
    return tree


def run(opt, params, steps, state=None):
    state = opt.init(params) if state is None else state
    for _ in range(steps):
        params, state = opt.update(grad_of(params), state, params)
    return params, state


DECAYING = [
    ("sgd", {"lr": 0.1, "weight_decay": 0.5}),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.5}),
    ("adam", {"lr": 0.01, "weight_decay": 0.5}),
    ("adamw", {"lr": 0.01, "weight_decay": 0.5}),
]
ALL = DECAYING + [("rmsprop", {"lr": 0.01}), ("sgd", {"lr": 0.1})]


def make(name, kwargs, **extra):
    return getattr(fn.optim, name)(**{**kwargs, **extra})


def row_id(row):
    name, kwargs = row
    return name + "".join(f"-{k}={v}" for k, v in kwargs.items() if k != "lr")


# --- weight_decay_mask ---------------------------------------------------------------

BIASES_OUT = {"0": {"weight": True, "bias": False}, "2": {"weight": True, "bias": np.bool_(False)}}


@pytest.mark.parametrize(
    "mask",
    [BIASES_OUT, lambda path, leaf: path.endswith("weight"), fn.optim.ndim_at_least(2)],
    ids=["bool-tree", "callable", "ndim_at_least(2)"],
)
@pytest.mark.parametrize("row", DECAYING, ids=row_id)
def test_weight_decay_mask_excludes_leaves_from_decay(row, mask):
    params = model_params()
    masked_run, _ = run(make(*row, weight_decay_mask=mask), params, 5)
    decayed, _ = run(make(*row), params, 5)
    undecayed, _ = run(make(*row, weight_decay=0.0), params, 5)
    for layer in ("0", "2"):
        assert fn.tree.equal(masked_run[layer]["weight"], decayed[layer]["weight"])
        assert fn.tree.equal(masked_run[layer]["bias"], undecayed[layer]["bias"])
    assert not fn.tree.allclose(decayed, undecayed, rtol=1e-6)  # decay mattered


def test_weight_decay_mask_callable_gets_dotted_paths_and_leaves():
    params = model_params()
    seen = []

    def mask(path, leaf):
        seen.append((path, leaf.shape))
        return True

    run(fn.optim.adamw(weight_decay_mask=mask), params, 1)
    assert seen == [("0.weight", (3, 2)), ("0.bias", (3,)), ("2.weight", (1, 3)), ("2.bias", (1,))]


def test_ndim_at_least_selects_by_ndim():
    params = {"w": np.ones((2, 2)), "b": np.ones(2), "s": np.array(1.0), "k": np.ones((1, 1, 1))}
    assert fn.optim.masks.resolve(fn.optim.ndim_at_least(2), params) == {
        "w": True,
        "b": False,
        "s": False,
        "k": True,
    }
    assert fn.optim.masks.resolve(fn.optim.ndim_at_least(0), params) == dict.fromkeys(params, True)
    with pytest.raises(ValueError, match="ndim_at_least: n must be an int >= 0, got -1"):
        fn.optim.ndim_at_least(-1)


@pytest.mark.parametrize("row", DECAYING, ids=row_id)
def test_weight_decay_mask_errors_name_the_key_path(row):
    params = model_params()
    opt = make(*row, weight_decay_mask={"0": {"weight": True, "bias": False}})
    with pytest.raises(
        StructureError, match=r"params and weight_decay_mask differ at '2': missing"
    ):
        run(opt, params, 1)
    opt = make(*row, weight_decay_mask={**BIASES_OUT, "2": {"weight": 1, "bias": False}})
    with pytest.raises(TypeError, match=r"weight_decay_mask at '2\.weight' must be a bool, got 1"):
        run(opt, params, 1)
    opt = make(*row, weight_decay_mask=lambda path, leaf: leaf.ndim)
    with pytest.raises(TypeError, match=r"weight_decay_mask at '0\.weight' must be a bool, got 2"):
        run(opt, params, 1)


# --- masked: freezing -----------------------------------------------------------------

FREEZE_FIRST = {"0": {"weight": False, "bias": False}, "2": {"weight": True, "bias": True}}


@pytest.mark.parametrize(
    "trainable",
    [FREEZE_FIRST, lambda path, leaf: path.startswith("2.")],
    ids=["bool-tree", "callable"],
)
@pytest.mark.parametrize("row", ALL, ids=row_id)
def test_masked_freezes_leaves_bitwise_and_trains_the_rest_as_usual(row, trainable):
    params = model_params()
    opt = fn.optim.masked(make(*row), trainable)
    start_params, start_state = run(make(*row), params, 2)  # non-zero moments to keep
    new_params, new_state = run(opt, start_params, 4, state=start_state)
    free_params, free_state = run(make(*row), start_params, 4, state=start_state)

    assert new_params["0"] == start_params["0"]  # the very same arrays
    assert fn.tree.equal(new_params["2"], free_params["2"])
    for name in [k for k in new_state if isinstance(new_state[k], dict)]:
        assert fn.tree.equal(new_state[name]["0"], start_state[name]["0"])  # moments unchanged
        assert fn.tree.equal(new_state[name]["2"], free_state[name]["2"])
    assert int(new_state["step"]) == 6 and list(new_state) == list(free_state)


def test_masked_state_moves_between_masked_and_plain_optimizers():
    """Freeze the first layer for a while, then unfreeze: one state layout throughout."""
    params = model_params()
    frozen_opt = fn.optim.masked(fn.optim.adam(0.01), FREEZE_FIRST)
    params_1, state_1 = run(frozen_opt, params, 3)
    assert fn.tree.equal(state_1["mu"]["0"], fn.tree.zeros_like(params["0"]))
    params_2, state_2 = run(fn.optim.adam(0.01), params_1, 3, state=state_1)
    assert not fn.tree.equal(params_2["0"], params["0"])
    assert int(state_2["step"]) == 6


def test_masked_with_a_bool_tree_weight_decay_mask_inside():
    params = model_params()
    inner = fn.optim.adamw(0.01, weight_decay=0.5, weight_decay_mask=BIASES_OUT)
    new_params, _ = run(fn.optim.masked(inner, FREEZE_FIRST), params, 3)
    want, _ = run(inner, params, 3)
    assert new_params["0"] == params["0"]
    assert fn.tree.equal(new_params["2"], want["2"])


@pytest.mark.parametrize("row", ALL, ids=row_id)
def test_masked_update_never_mutates_its_inputs(row):
    opt = fn.optim.masked(make(*row), FREEZE_FIRST)
    params, state = run(opt, model_params(), 2)
    params, state, grads = frozen(params), frozen(state), frozen(grad_of(params))
    before = copy.deepcopy({"grads": grads, "state": state, "params": params})
    opt.update(grads, state, params)
    assert fn.tree.equal({"grads": grads, "state": state, "params": params}, before)


def test_masked_float32_keeps_float32():
    params = model_params(np.float32)
    new_params, state = run(fn.optim.masked(fn.optim.adam(0.01), FREEZE_FIRST), params, 2)
    for leaf in fn.tree.leaves({"params": new_params, "mu": state["mu"], "nu": state["nu"]}):
        assert leaf.dtype == np.float32


def test_masked_argument_errors():
    with pytest.raises(TypeError, match="masked: opt must be an fn.optim.Optimizer, got function"):
        fn.optim.masked(lambda: None, FREEZE_FIRST)
    with pytest.raises(TypeError, match="masked: trainable must be a bool pytree"):
        fn.optim.masked(fn.optim.adam(), None)
    with pytest.raises(TypeError, match="masked: trainable must be a bool pytree"):
        fn.optim.masked(fn.optim.adam(), ["0"])
    opt = fn.optim.masked(fn.optim.adam(), {"0": FREEZE_FIRST["0"]})
    with pytest.raises(StructureError, match=r"params and trainable differ at '2': missing"):
        run(opt, model_params(), 1)
    opt = fn.optim.masked(fn.optim.adam(), lambda path, leaf: "yes")
    with pytest.raises(TypeError, match=r"trainable at '0\.weight' must be a bool, got 'yes'"):
        run(opt, model_params(), 1)


@given(
    bits=st.lists(st.booleans(), min_size=4, max_size=4),
    row=st.sampled_from(ALL),
)
def test_masked_matches_the_plain_optimizer_on_trainable_leaves_only(bits, row):
    params = model_params()
    paths = fn.tree.paths(params)
    trainable = fn.tree.unflatten(dict(zip(paths, bits)))
    new_params, _new_state = run(fn.optim.masked(make(*row), trainable), params, 3)
    free_params, _free_state = run(make(*row), params, 3)
    flat_new, flat_free, flat_old = (fn.tree.flatten(t) for t in (new_params, free_params, params))
    for path, train in zip(paths, bits):
        want = flat_free[path] if train else flat_old[path]
        assert fn.tree.equal({"x": flat_new[path]}, {"x": want}), path
