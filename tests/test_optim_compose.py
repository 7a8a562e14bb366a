"""Optimizers that compose: chain, the gradient transforms, accumulate, ema.

Each is checked step for step against optax (float64, with jax's x64 switched on for
the oracle only), against funcnn's own built-in rules bit for bit where they must agree,
for purity, dtypes, save/load and resume, and for the errors a user meets.
"""

import numpy as np
import pytest
from helpers.optim_problems import check_pure_update, nested_params, run, wavy_grad

import funcnn as fn
from funcnn.errors import StructureError

O = fn.optim


# --- the table: every composite, with its optax twin -------------------------------------


def composites(ox=None):
    """``(id, funcnn optimizer, optax twin)`` rows (the twins need ``ox``, optax); lr 0.01
    to 0.05 on the wavy problem. MultiSteps accumulates in float32 unless told, funcnn in
    the params' dtype; an ``ema`` row's twin is the rule, whose params optax.ema averages."""

    def multi(inner, k):
        return ox.MultiSteps(inner, every_k_schedule=k, accumulator_dtype=np.float64)

    return [
        ("chain(clip_grad_norm,adam)",
         lambda: O.chain(O.clip_grad_norm(1.0), O.adam(0.01)),
         lambda: ox.chain(ox.clip_by_global_norm(1.0), ox.adam(0.01))),
        ("chain(clip_grad_norm,sgd-momentum)",
         lambda: O.chain(O.clip_grad_norm(0.5), O.sgd(0.05, momentum=0.9)),
         lambda: ox.chain(ox.clip_by_global_norm(0.5), ox.sgd(0.05, momentum=0.9))),
        ("chain(clip_grad_value,sgd)",
         lambda: O.chain(O.clip_grad_value(0.5), O.sgd(0.05)),
         lambda: ox.chain(ox.clip(0.5), ox.sgd(0.05))),
        ("chain(add_decayed_weights,sgd)",
         lambda: O.chain(O.add_decayed_weights(0.1), O.sgd(0.05)),
         lambda: ox.chain(ox.add_decayed_weights(0.1), ox.sgd(0.05))),
        ("chain(clip_grad_norm,add_decayed_weights,adam)",
         lambda: O.chain(O.clip_grad_norm(2.0), O.add_decayed_weights(0.01), O.adam(0.01)),
         lambda: ox.chain(ox.clip_by_global_norm(2.0), ox.add_decayed_weights(0.01),
                          ox.adam(0.01))),
        ("accumulate(sgd,every=3)",
         lambda: O.accumulate(O.sgd(0.05), every=3),
         lambda: multi(ox.sgd(0.05), 3)),
        ("accumulate(adam,every=4)",
         lambda: O.accumulate(O.adam(0.01), every=4),
         lambda: multi(ox.adam(0.01), 4)),
        ("accumulate(chain(clip_grad_norm,adam),every=2)",
         lambda: O.accumulate(O.chain(O.clip_grad_norm(1.0), O.adam(0.01)), every=2),
         lambda: multi(ox.chain(ox.clip_by_global_norm(1.0), ox.adam(0.01)), 2)),
        ("ema(adam,0.9)", lambda: O.ema(O.adam(0.01), 0.9), lambda: ox.adam(0.01)),
        ("accumulate(ema(adam,0.8),every=2)",
         lambda: O.accumulate(O.ema(O.adam(0.01), 0.8), every=2),
         lambda: multi(ox.adam(0.01), 2)),
    ]


ROWS = composites()
ROW_IDS = [row[0] for row in ROWS]
EMA_DECAY = {"ema(adam,0.9)": 0.9, "accumulate(ema(adam,0.8),every=2)": 0.8}


def optax_trajectory(optax_opt, params, steps, ema_decay=None, every=1):
    """optax on the same problem, float64; with ``ema_decay``, also optax.ema(decay)
    of the params after each real update (every ``every`` calls)."""
    import jax
    import jax.numpy as jnp
    import optax

    to_jax = lambda t: fn.tree.map(jnp.asarray, t)
    to_np = lambda t: fn.tree.map(np.asarray, t)
    enable_x64 = getattr(jax, "enable_x64", None)
    if enable_x64 is None:  # older jax
        from jax.experimental import enable_x64
    with enable_x64(True):
        opt, p = optax_opt(), to_jax(params)
        state, update = opt.init(p), jax.jit(opt.update)  # MultiSteps is slow unjitted
        average = optax.ema(ema_decay) if ema_decay is not None else None
        ema_state = average.init(p) if average else None
        averaged = p
        for i in range(steps):
            updates, state = update(to_jax(wavy_grad(to_np(p))), state, p)
            p = optax.apply_updates(p, updates)
            if average and (i + 1) % every == 0:
                averaged, ema_state = average.update(p, ema_state)
        return to_np(p), to_np(averaged)


def assert_tree_close(got, want, rtol=1e-12, atol=1e-14):
    fn.tree.assert_same_structure(want, got)
    flat_got = fn.tree.flatten(got)
    for path, w in fn.tree.flatten(want).items():
        np.testing.assert_allclose(flat_got[path], w, rtol=rtol, atol=atol, err_msg=path)


@pytest.mark.parametrize("steps", [1, 25])
@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_matches_optax_step_for_step(row, steps):
    optax = pytest.importorskip("optax")
    name = row[0]
    twin = {r[0]: r[2] for r in composites(optax)}[name]
    params = nested_params()
    ours, state = run(row[1](), params, steps)
    every = 2 if name.startswith("accumulate(ema") else 1
    theirs, theirs_ema = optax_trajectory(twin, params, steps, EMA_DECAY.get(name), every)
    assert_tree_close(ours, theirs)
    if name in EMA_DECAY:
        if steps >= every:
            assert_tree_close(O.ema_params(state), theirs_ema)
        else:  # no real update yet: the average is the initial params
            assert fn.tree.equal(O.ema_params(state), params)
    if steps >= 4:
        assert not fn.tree.allclose(ours, params, rtol=1e-3)  # the test can fail: params moved


def test_clip_grad_value_matches_torch_clip_grad_value_then_sgd():
    torch = pytest.importorskip("torch")
    params = nested_params()
    ours, _ = run(O.chain(O.clip_grad_value(0.5), O.sgd(0.05, momentum=0.9)), params, 10)
    paths = fn.tree.paths(params)
    tensors = [torch.tensor(leaf, requires_grad=True) for leaf in fn.tree.leaves(params)]
    opt = torch.optim.SGD(tensors, lr=0.05, momentum=0.9, foreach=False)
    for _ in range(10):
        current = fn.tree.unflatten({p: t.detach().numpy() for p, t in zip(paths, tensors)})
        grads = fn.tree.flatten(wavy_grad(current))
        for path, t in zip(paths, tensors):
            t.grad = torch.from_numpy(grads[path].copy())
        torch.nn.utils.clip_grad_value_(tensors, 0.5)
        opt.step()
    theirs = fn.tree.unflatten({p: t.detach().numpy() for p, t in zip(paths, tensors)})
    assert_tree_close(ours, theirs)  # torch's p.add_(b, alpha=-lr) may round differently
    assert not fn.tree.allclose(ours, params, rtol=1e-3)


# --- bit for bit against funcnn's own rules ------------------------------------------------


def model_and_data(dtype=np.float32):
    model = fn.serial(fn.layers.Linear(3, 8), fn.layers.Tanh(), fn.layers.Linear(8, 2))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 3)).astype(dtype)
    y = rng.normal(size=(64, 2)).astype(dtype)
    return model, fn.tree.astype(model.init(0), dtype), x, y


@pytest.mark.parametrize("max_norm", [1e-3, 1e6], ids=["clips", "does-not-clip"])
@pytest.mark.parametrize("grads_kind", ["flat", "tree"])
def test_chain_clip_then_adam_is_clip_by_global_norm_then_adam_bitwise(max_norm, grads_kind):
    model, params, x, y = model_and_data()
    step = fn.value_and_grad(model, fn.losses.mse)
    chained = O.chain(O.clip_grad_norm(max_norm), O.adam(0.01))
    adam = O.adam(0.01)
    p1, s1, p2, s2 = params, chained.init(params), params, adam.init(params)
    for _ in range(5):
        grads = step(p1, x, y)[1]
        if grads_kind == "tree":  # separate arrays, not one flat buffer
            grads = fn.tree.map(np.copy, grads)
        p1, s1 = chained.update(grads, s1, p1)
        p2, s2 = adam.update(O.clip_by_global_norm(step(p2, x, y)[1], max_norm), s2, p2)
    assert fn.tree.equal(p1, p2) and fn.tree.equal(s1["1"], s2)
    assert not fn.tree.equal(p1, params)


@pytest.mark.parametrize("mask", [None, O.ndim_at_least(2)], ids=["all", "ndim>=2"])
def test_chain_add_decayed_weights_then_adam_is_adam_with_weight_decay_bitwise(mask):
    model, params, x, y = model_and_data()
    step = fn.value_and_grad(model, fn.losses.mse)
    chained = O.chain(O.add_decayed_weights(0.1, mask=mask), O.adam(0.01))
    built_in = O.adam(0.01, weight_decay=0.1, weight_decay_mask=mask)
    ours, state = run(chained, params, 5, grad_fn=lambda p: step(p, x, y)[1])
    want, want_state = run(built_in, params, 5, grad_fn=lambda p: step(p, x, y)[1])
    assert fn.tree.equal(ours, want) and fn.tree.equal(state["1"], want_state)
    tree_grads = lambda p: fn.tree.map(np.copy, step(p, x, y)[1])
    assert fn.tree.equal(run(chained, params, 5, grad_fn=tree_grads)[0], want)


@pytest.mark.parametrize("rule", [lambda: O.adam(0.01), lambda: O.sgd(0.05, momentum=0.9)],
                         ids=["adam", "sgd"])
def test_degenerate_compositions_are_the_rule_itself_bitwise(rule):
    params = nested_params(np.float32)
    want, want_state = run(rule(), params, 6)
    for opt, inner in [(O.chain(rule()), lambda s: s["0"]),
                       (O.accumulate(rule(), every=1), lambda s: s["inner"]),
                       (O.ema(rule(), 0.99), lambda s: s["inner"])]:
        got, state = run(opt, params, 6)
        assert fn.tree.equal(got, want) and fn.tree.equal(inner(state), want_state)


def test_chain_keeps_the_fused_flat_update_and_donation():
    """Through a clipping chain, a donated train_step still writes adam's update over the
    params buffer it was given: the rule ran on one flat buffer, in place."""
    model, params, x, y = model_and_data()
    opt = O.chain(O.clip_grad_norm(1e-3), O.adam(0.01))
    step = fn.train_step(model, fn.losses.mse, opt, donate=True)
    _, params, state = step(params, opt.init(params), x, y)  # now one flat buffer
    buffer = fn.tree.leaves(params)[0].base
    assert buffer is not None and all(leaf.base is buffer for leaf in fn.tree.leaves(params))
    _, params, state = step(params, state, x, y)
    assert all(leaf.base is buffer for leaf in fn.tree.leaves(params))  # written in place
    assert all(leaf.base is fn.tree.leaves(state["1"]["mu"])[0].base
               for leaf in fn.tree.leaves(state["1"]["mu"]))


# --- accumulate ----------------------------------------------------------------------------


@pytest.mark.parametrize("rule", [lambda: O.adam(0.01), lambda: O.sgd(0.1, momentum=0.9)],
                         ids=["adam", "sgd-momentum"])
def test_k_micro_batches_equal_one_k_times_larger_batch(rule):
    """For a mean loss, the mean of 4 micro-batch grads is the big batch's grad."""
    model, params, x, y = model_and_data(np.float64)
    value_and_grad = fn.value_and_grad(model, fn.losses.mse)
    accumulated, big = O.accumulate(rule(), every=4), rule()
    p_acc, s_acc, p_big, s_big = params, accumulated.init(params), params, big.init(params)
    for _ in range(3):
        for part in range(4):
            before = p_acc
            rows = slice(16 * part, 16 * (part + 1))
            p_acc, s_acc = accumulated.update(value_and_grad(p_acc, x[rows], y[rows])[1],
                                              s_acc, p_acc)
            if part < 3:
                assert p_acc is before  # unchanged in between: the very same arrays
        p_big, s_big = big.update(value_and_grad(p_big, x, y)[1], s_big, p_big)
        assert_tree_close(p_acc, p_big, rtol=1e-13, atol=1e-15)
    assert int(s_acc["step"]) == 12 and int(s_acc["inner"]["step"]) == 3
    assert fn.tree.equal(s_acc["acc_grads"], fn.tree.zeros_like(params))
    assert not fn.tree.allclose(p_acc, params, rtol=1e-3)


def test_accumulate_state_holds_the_running_mean():
    opt = O.accumulate(O.sgd(1.0), every=3)
    params = {"w": np.array([0.0, 0.0])}
    state = opt.init(params)
    for g in ([1.0, 2.0], [3.0, 6.0]):
        params, state = opt.update({"w": np.array(g)}, state, params)
    np.testing.assert_array_equal(state["acc_grads"]["w"], [2.0, 4.0])
    params, state = opt.update({"w": np.array([5.0, 10.0])}, state, params)
    np.testing.assert_array_equal(params["w"], [-3.0, -6.0])  # lr 1 times the mean of 3


# --- ema -----------------------------------------------------------------------------------


def test_ema_params_live_in_state_ema_and_first_update_copies_the_params():
    opt = O.ema(O.adam(0.01), 0.999)
    params = nested_params(np.float32)
    state = opt.init(params)
    assert list(state) == ["step", "lr", "ema", "inner"]
    assert fn.tree.equal(state["ema"], params)
    assert not any(np.shares_memory(a, b) for a, b in
                   zip(fn.tree.leaves(state["ema"]), fn.tree.leaves(params)))
    new, state = opt.update(wavy_grad(params), state, params)
    assert fn.tree.equal(state["ema"], new)  # the debiased weight of update 1 is 1
    assert O.ema_params(state) is state["ema"]
    newer, state = opt.update(wavy_grad(new), state, new)
    w = (1 - 0.999) / (1 - 0.999**2)  # about 1/2: early on, nearly the plain mean
    want = fn.tree.map(lambda a, b: a * np.float32(1 - w) + b * np.float32(w), new, newer)
    assert fn.tree.equal(state["ema"], want) and not fn.tree.equal(want, newer)


def test_ema_params_finds_the_average_inside_wrappers_and_chains():
    params = nested_params()
    inner = O.ema(O.sgd(0.1), 0.9)
    for opt, where in [(inner, lambda s: s["ema"]),
                       (O.accumulate(inner, every=2), lambda s: s["inner"]["ema"]),
                       (O.chain(O.clip_grad_norm(1.0), inner), lambda s: s["1"]["ema"]),
                       (O.masked(inner, lambda path, leaf: True), lambda s: s["ema"])]:
        _, state = run(opt, params, 3)
        assert O.ema_params(state) is where(state)
    with pytest.raises(StructureError, match=r"ema_params: this optimizer state holds no "
                                             r"average of the params \(keys \['lr', 'mu', 'nu', "
                                             r"'step'\]\); make the optimizer with fn.optim.ema"):
        O.ema_params(O.adam().init(params))


@pytest.mark.parametrize("donate", [False, True])
def test_ema_with_donation_gives_the_same_bits(donate):
    model, params, x, y = model_and_data()
    opt = O.ema(O.adam(0.01), 0.9)
    reference = run(opt, params, 4, grad_fn=lambda p: fn.value_and_grad(model, fn.losses.mse)(
        p, x, y)[1])
    step = fn.train_step(model, fn.losses.mse, opt, donate=donate)
    p, s = params, opt.init(params)
    for _ in range(4):
        _, p, s = step(p, s, x, y)
    assert fn.tree.equal(p, reference[0]) and fn.tree.equal(s, reference[1])


# --- purity, dtypes, masked ----------------------------------------------------------------


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_update_never_mutates_its_inputs(row):
    check_pure_update(row[1]())


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_float32_params_keep_float32_params_and_state(row):
    params, state = run(row[1](), nested_params(np.float32), 5)
    assert {leaf.dtype for leaf in fn.tree.leaves(params)} == {np.dtype(np.float32)}
    for path, leaf in fn.tree.flatten(state).items():
        if isinstance(leaf, dict):
            continue
        assert type(leaf) is np.ndarray, path
        assert leaf.dtype in (np.float32, np.int64) or path.endswith("lr"), (path, leaf.dtype)


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_state_lr_is_the_rules_next_lr(row):
    opt = row[1]()
    params = nested_params()
    state = opt.init(params)
    assert float(state["lr"]) in (0.01, 0.05)
    schedule = O.schedules.step_decay(0.1, step_size=1, gamma=0.5)
    opt = O.accumulate(O.chain(O.clip_grad_norm(1.0), O.sgd(schedule)), every=2)
    _, state = run(opt, params, 4)
    assert float(state["lr"]) == float(state["inner"]["1"]["lr"]) == 0.025


def test_masked_composite_freezes_leaves_in_every_nested_state():
    params = {"body": {"w": np.ones((2, 2))}, "head": {"w": np.ones((2, 1))}}
    opt = O.masked(O.ema(O.chain(O.clip_grad_norm(10.0), O.adam(0.1)), 0.9),
                   lambda path, leaf: path.startswith("head"))
    new, state = run(opt, params, 3, grad_fn=lambda p: fn.tree.full_like(p, 1.0))
    assert np.array_equal(new["body"]["w"], params["body"]["w"])
    assert not np.array_equal(new["head"]["w"], params["head"]["w"])
    adam_state = state["inner"]["1"]
    assert not np.any(adam_state["mu"]["body"]["w"]) and np.all(adam_state["mu"]["head"]["w"])
    assert np.array_equal(state["ema"]["body"]["w"], params["body"]["w"])


# --- save, load, resume ------------------------------------------------------------------


@pytest.mark.parametrize("row", ROWS, ids=ROW_IDS)
def test_resume_through_fn_save_equals_an_uninterrupted_run_bitwise(row, tmp_path):
    opt, n = row[1](), 5  # odd: the accumulations stop mid-cycle
    params = nested_params(np.float32)
    straight, straight_state = run(opt, params, 2 * n)
    half, half_state = run(opt, params, n)
    fn.save(tmp_path / "run.ckpt", {"params": half, "state": half_state})
    loaded = fn.load(tmp_path / "run.ckpt", like={"params": params, "state": opt.init(params)})
    assert fn.tree.equal(loaded, {"params": half, "state": half_state})  # {} states included
    resumed, resumed_state = run(opt, loaded["params"], n, state=loaded["state"])
    assert fn.tree.equal(resumed, straight) and fn.tree.equal(resumed_state, straight_state)
    assert not fn.tree.equal(half, straight)


def test_fit_resumes_a_composite_optimizer_bitwise(tmp_path):
    model, params, x, y = model_and_data()
    opt = O.ema(O.accumulate(O.chain(O.clip_grad_norm(0.5), O.adam(0.01)), every=3), 0.9)
    kwargs = {"epochs": 3, "batch_size": 10, "key": 0, "progress": "silent", "val": (x[:8], y[:8])}
    straight = fn.fit(model, fn.losses.mse, opt, params, (x, y), **kwargs)
    fn.fit(model, fn.losses.mse, opt, params, (x, y), **{**kwargs, "epochs": 1},
           checkpoint_dir=tmp_path)
    resumed = fn.fit(model, fn.losses.mse, opt, params, (x, y), **kwargs,
                     checkpoint_dir=tmp_path, resume=True)
    assert fn.tree.equal(resumed.params, straight.params)
    assert fn.tree.equal(resumed.opt_state, straight.opt_state)
    assert np.all(straight.history["lr"] == 0.01)  # fit reads the read-out state["lr"]


# --- errors --------------------------------------------------------------------------------

BAD_ARGUMENTS = [
    # (id, call, exception, message fragment)
    ("clip-negative", lambda: O.clip_grad_norm(-1.0), ValueError,
     "clip_grad_norm: max_norm must be >= 0, got -1.0"),
    ("clip-given-grads", lambda: O.clip_grad_norm({"w": np.ones(2)}), TypeError,
     ("clip_grad_norm(max_norm) makes a chain step: to clip a grads tree now, call "
      "fn.optim.clip_by_global_norm(grads, max_norm)")),
    ("clip-str", lambda: O.clip_grad_norm("1"), TypeError,
     "clip_grad_norm: max_norm must be a number"),
    ("value-negative", lambda: O.clip_grad_value(-0.5), ValueError,
     "clip_grad_value: max_value must be >= 0"),
    ("value-inf", lambda: O.clip_grad_value(float("inf")), ValueError,
     "clip_grad_value: max_value must be finite"),
    ("decay-negative", lambda: O.add_decayed_weights(-1e-4), ValueError,
     "add_decayed_weights: weight_decay must be >= 0"),
    ("decay-mask-list", lambda: O.add_decayed_weights(1e-4, mask=["w"]), TypeError,
     "add_decayed_weights: mask must be"),
    ("chain-empty", lambda: O.chain(), TypeError, "chain: give at least one step"),
    ("chain-rule-first", lambda: O.chain(O.adam(), O.clip_grad_norm(1.0)), TypeError,
     "chain: step 0 is an optimizer, which returns params, not grads; only the last step"),
    ("chain-the-function", lambda: O.chain(O.clip_by_global_norm, O.adam()), TypeError,
     ("chain: step 0 must be a GradientTransform or, last, an Optimizer; got the function "
      "fn.optim.clip_by_global_norm, which clips one grads tree; its chain step is "
      "fn.optim.clip_grad_norm(max_norm)")),
    ("chain-uncalled", lambda: O.chain(O.clip_grad_norm, O.adam()), TypeError,
     "got the function clip_grad_norm (call it to make the step"),
    ("chain-float", lambda: O.chain(O.clip_grad_norm(1.0), 0.01), TypeError,
     "chain: step 1 must be a GradientTransform or, last, an Optimizer; got float"),
    ("every-0", lambda: O.accumulate(O.adam(), every=0), ValueError,
     "accumulate: every must be an int >= 1, got 0"),
    ("every-float", lambda: O.accumulate(O.adam(), every=2.0), TypeError,
     "accumulate: every must be an int >= 1, got 2.0"),
    ("every-bool", lambda: O.accumulate(O.adam(), every=True), TypeError,
     "every must be an int"),
    ("accumulate-transform", lambda: O.accumulate(O.clip_grad_norm(1.0), every=2), TypeError,
     ("accumulate: opt must be an fn.optim.Optimizer (e.g. fn.optim.adam(1e-3)), "
      "got GradientTransform")),
    ("ema-decay-1", lambda: O.ema(O.adam(), 1.0), ValueError,
     "ema: decay must be in [0, 1), got 1.0"),
    ("ema-decay-negative", lambda: O.ema(O.adam(), -0.1), ValueError,
     "ema: decay must be in [0, 1), got -0.1"),
    ("ema-decay-str", lambda: O.ema(O.adam(), "0.9"), TypeError, "ema: decay must be a number"),
    ("ema-swapped", lambda: O.ema(0.999, O.adam()), TypeError,
     "ema: opt must be an fn.optim.Optimizer"),
]


@pytest.mark.parametrize("call, exception, message", [row[1:] for row in BAD_ARGUMENTS],
                         ids=[row[0] for row in BAD_ARGUMENTS])
def test_bad_arguments_fail_at_the_factory_naming_the_argument(call, exception, message):
    with pytest.raises(exception) as info:
        call()
    assert message in str(info.value)


def test_a_state_of_another_optimizer_is_a_structure_error_naming_the_composite():
    params = nested_params()
    grads = wavy_grad(params)
    adam_state = O.adam().init(params)
    with pytest.raises(StructureError, match=r"^chain: state must be a dict with the keys "
                                             r"\['0', '1'\] \(one per step\)"):
        O.chain(O.clip_grad_norm(1.0), O.adam()).update(grads, adam_state, params)
    with pytest.raises(StructureError, match=r"^accumulate: state must be a dict with keys "
                                             r"\['step', 'lr', 'acc_grads', 'inner'\]"):
        O.accumulate(O.adam(), every=2).update(grads, adam_state, params)
    with pytest.raises(StructureError, match=r"^ema: state must be a dict with keys "
                                             r"\['step', 'lr', 'ema', 'inner'\]"):
        O.ema(O.adam(), 0.9).update(grads, adam_state, params)


def test_errors_inside_a_composite_name_the_step():
    params = nested_params()
    bad = {"a": wavy_grad(params)["a"], "b": np.ones(6)}
    opt = O.chain(O.clip_grad_norm(1.0), O.adam())
    with pytest.raises(StructureError, match=r"^chain\[1\] adam: grads at 'b' has shape \(6,\)"):
        opt.update(bad, opt.init(params), params)
    opt = O.chain(O.add_decayed_weights(0.1), O.adam())
    with pytest.raises(StructureError, match=r"^chain\[0\] add_decayed_weights: grads at 'b'"):
        opt.update(bad, opt.init(params), params)
    opt = O.accumulate(O.adam(), every=3)  # refused at the first call, not the third
    with pytest.raises(StructureError, match=r"^accumulate: grads at 'b' has shape \(6,\)"):
        opt.update(bad, opt.init(params), params)
    with pytest.raises(ValueError, match=r"clip_grad_norm: the global norm of grads is inf; "
                                         r"grads at 'b' are not finite"):
        O.chain(O.clip_grad_norm(1.0), O.adam()).update(
            {**wavy_grad(params), "b": np.full(5, np.inf)}, O.chain(
                O.clip_grad_norm(1.0), O.adam()).init(params), params)
