"""The update of one range of the flat buffers (what ``fit(comm=...)`` runs on each rank):
bitwise the whole-tree update there, for every element-wise optimizer; and which
optimizers are element-wise."""

import itertools

import numpy as np
import pytest
from helpers.optim_problems import frozen, nested_params, wavy_grad

import funcnn as fn
from funcnn.errors import StructureError
from funcnn.layout import layout_of
from funcnn.optim.base import range_state, update_range

ELEMENTWISE = [
    ("sgd", {"lr": 0.05}),
    ("sgd", {"lr": 0.05, "momentum": 0.9}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
    ("sgd", {"lr": 0.05, "weight_decay": 0.1, "weight_decay_mask": fn.optim.ndim_at_least(2)}),
    ("rmsprop", {"lr": 0.01}),
    ("adam", {"lr": fn.optim.schedules.cosine_decay(0.01, 5)}),
    ("adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("adamw", {"lr": 0.01}),
    ("adamw", {"lr": 0.01, "weight_decay": 0.3, "weight_decay_mask": fn.optim.ndim_at_least(2)}),
]


def row_id(row):
    name, kwargs = row
    return name + "".join(f"-{k}" for k in kwargs if k != "lr")


def ranged_updates(opt, params, cuts, steps):
    """``steps`` updates, each range ``[cuts[i], cuts[i+1])`` of the flat buffers updated
    on its own (as one rank would), the new params joined again after every step."""
    rule, layout = opt.rule, layout_of(params)
    state = opt.init(params)
    states = [range_state(rule, layout, state, params, lo, hi) for lo, hi in itertools.pairwise(cuts)]
    for _ in range(steps):
        grads = layout.flat(wavy_grad(params))
        new_flat = np.empty(layout.size, layout.dtype)
        states = [update_range(rule, layout, grads[lo:hi], s, params, lo, hi, new_flat[lo:hi])
                  for s, lo, hi in zip(states, cuts, cuts[1:])]
        params = layout.views(new_flat)
    return params, states


@pytest.mark.parametrize("row", ELEMENTWISE, ids=row_id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ranges_give_the_bits_of_the_whole_update(row, dtype):
    name, kwargs = row
    opt = getattr(fn.optim, name)(**kwargs)
    params = nested_params(dtype)  # 12 + 5 elements: the cuts below split both leaves
    want_params, want_state = params, opt.init(params)
    for _ in range(4):
        want_params, want_state = opt.update(wavy_grad(want_params), want_state, want_params)
    cuts = [0, 5, 6, 13, 17]
    got_params, states = ranged_updates(opt, params, cuts, 4)
    layout = layout_of(params)
    for path, want in fn.tree.flatten(want_params).items():
        np.testing.assert_array_equal(fn.tree.flatten(got_params)[path], want, err_msg=path)
    for name_ in opt.rule.entries:
        joined = np.concatenate([s[name_] for s in states])
        np.testing.assert_array_equal(joined, layout.flat(want_state[name_], False), err_msg=name_)
    for s in states:
        assert int(s["step"]) == 4 and float(s["lr"]) == float(want_state["lr"])
        assert list(s) == list(want_state)


def test_range_state_copies_and_leaves_the_state_alone():
    opt = fn.optim.adam(0.01)
    params = nested_params()
    state = frozen(opt.update(wavy_grad(params), opt.init(params), params)[1])
    layout = layout_of(params)
    cut = range_state(opt.rule, layout, state, params, 3, 9)
    np.testing.assert_array_equal(cut["mu"], layout.flat(state["mu"], False)[3:9])
    assert cut["mu"].flags.writeable and cut["step"] is state["step"]
    new_p = np.empty(6)
    update_range(opt.rule, layout, np.ones(6), cut, params, 3, 9, new_p)  # frozen: no write


def test_a_schedule_that_raises_leaves_the_range_state_as_it_was():
    def schedule(step):
        if step == 1:
            raise KeyboardInterrupt
        return 0.1

    opt = fn.optim.adam(schedule)
    params = nested_params()
    layout = layout_of(params)
    cut = range_state(opt.rule, layout, opt.init(params), params, 0, layout.size)
    before = {k: np.copy(v) for k, v in cut.items()}
    with pytest.raises(KeyboardInterrupt):  # asks schedule(1) for the next state's lr
        update_range(opt.rule, layout, np.ones(layout.size), cut, params, 0, layout.size,
                     np.empty(layout.size))
    for k, v in before.items():
        np.testing.assert_array_equal(cut[k], v, err_msg=k)


def test_range_state_checks_the_state_against_params():
    opt = fn.optim.adam(0.01)
    params = nested_params()
    state = fn.optim.sgd(0.1, momentum=0.9).init(params)
    with pytest.raises(StructureError, match=r"adam: state must be a dict with keys \['step', 'lr', 'mu', 'nu'\]"):
        range_state(opt.rule, layout_of(params), state, params, 0, 4)


@pytest.mark.parametrize("row", ELEMENTWISE, ids=row_id)
def test_the_built_in_rules_are_elementwise(row):
    name, kwargs = row
    opt = getattr(fn.optim, name)(**kwargs)
    assert isinstance(opt, fn.optim.ElementwiseOptimizer)
    init, update = opt  # still an (init, update) pair
    assert (init, update) == (opt.init, opt.update)


@pytest.mark.parametrize("opt", [
    fn.optim.chain(fn.optim.clip_grad_norm(1.0), fn.optim.adam(0.01)),
    fn.optim.accumulate(fn.optim.adam(0.01), every=2),
    fn.optim.ema(fn.optim.sgd(0.1), decay=0.9),
    fn.optim.masked(fn.optim.adam(0.01), {"a": {"w": True}, "b": False}),
], ids=["chain", "accumulate", "ema", "masked"])
def test_composites_are_not_elementwise(opt):
    assert not isinstance(opt, fn.optim.ElementwiseOptimizer)
