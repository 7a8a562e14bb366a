"""The fast paths (trusted kernels, flat optimizer updates) give the generic path's results.

- ``fn.value_and_grad`` checks params once per layout and runs the same kernels with
  the grads written into one flat buffer (``funcnn.kernel``): compared bit for bit with
  ``model.vjp`` (the generic path), on random architectures, dtypes and inputs;
- optimizers run their rule on flat buffers (``funcnn.layout``): compared bit for bit
  with a plain per-leaf reference of the documented rule, with chained states, states
  loaded from disk, hand-made params, mixed dtypes, masks, freezing, schedules and the
  two-thread path for big buffers;
- everything stays pure (frozen inputs), keeps dtypes, and fails with the messages of
  the generic path.
"""

import copy
import functools
import gc
import math
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import funcnn as fn
from funcnn import elementwise, layout
from funcnn.errors import ShapeError, StructureError
from funcnn.grad import loss_gradient_rule
from funcnn.testing import strategies as fst

L = fn.layers


def generic_value_and_grad(model, loss):
    """The generic path, by hand: ``model.vjp`` (every kernel checks its own params and
    allocates its grads), the loss's rule, the pullback."""
    rule = loss_gradient_rule(loss)

    def value_and_grad(params, x, y, **context):
        pred, pullback, *new_state = model.vjp(params, x, **context)
        value, dpred = rule(pred, y)
        return (value, pullback(dpred)[0], *new_state)

    return value_and_grad


def as_user_layer(model):
    """``model`` as one opaque user layer: its generic ``vjp`` inside the fast path."""
    return fn.Layer(model.init, lambda p, x: model.apply(p, x), lambda p, x: model.vjp(p, x),
                    name="wrapped")


def one_buffer(grads) -> bool:
    """The grads are views into one flat buffer: the fast path made them."""
    return fn.layout.layout_of(grads).known(fn.tree.leaves(grads)) is not None


def frozen(tree):
    def freeze(a):
        a = np.array(a, copy=True)
        a.setflags(write=False)
        return a

    return fn.tree.map(freeze, tree)


def frozen_views(tree):
    """Read-only views of the same memory: any write by a later call would raise."""

    def freeze(a):
        v = a.view()
        v.setflags(write=False)
        return v

    return fn.tree.map(freeze, tree)


def seed_mlp(dtype=np.float32):
    return fn.serial(L.Linear(1, 16, dtype=dtype), L.ReLU(), L.Linear(16, 16, dtype=dtype), L.ReLU(),
                     L.Linear(16, 1, dtype=dtype))


def seed_resnet(dtype=np.float32):
    block = functools.partial(L.ResNetBlock, dtype=dtype)
    return fn.serial(L.Linear(1, 16, dtype=dtype), L.ReLU(), block(16), block(16), block(16),
                     L.Linear(16, 1, dtype=dtype))


def airfoil_model(dtype=np.float32):
    inner = fn.serial(L.Linear(8, 16, dtype=dtype), L.ReLU(), L.ResNetBlock(16, dtype=dtype), L.ReLU(),
                      L.Linear(16, 8, dtype=dtype))
    return fn.serial(L.Linear(5, 8, dtype=dtype), L.ReLU(), fn.residual(inner), L.ReLU(),
                     L.Linear(8, 1, dtype=dtype))


def wide_mlp(dtype=np.float32):
    """Linears with >= MATMUL_MIN weights: their products are np.matmul, not np.dot."""
    return fn.serial(L.Linear(300, 256, dtype=dtype), L.ReLU(), L.Linear(256, 260, dtype=dtype),
                     L.Tanh(), L.Linear(260, 1, dtype=dtype))


MODELS = {"sine-mlp": (seed_mlp, 1), "sine-resnet": (seed_resnet, 1), "airfoil": (airfoil_model, 5),
          "wide": (wide_mlp, 300)}


def test_big_linears_use_matmul_and_small_ones_dot_and_the_first_skips_dx(monkeypatch):
    from funcnn.layers import linear

    assert 256 * 256 >= linear.MATMUL_MIN > 260 * 1
    calls = {"dot": 0, "matmul": 0}

    def counting(name, product):
        def call(*args, **kwargs):
            calls[name] += 1
            return product(*args, **kwargs)
        return call

    for name, product in list(linear._PRODUCTS.items()):
        monkeypatch.setitem(linear._PRODUCTS, name, counting(name, product))
    model = wide_mlp()
    fn.value_and_grad(model, fn.losses.mse)(model.init(0), *batch(300))
    # forward and dW of both big Linears, dx of the second (nobody needs the data's)
    assert calls == {"matmul": 5, "dot": 3}  # and the small Linear's three
    calls.update(dot=0, matmul=0)
    model.vjp(model.init(0), batch(300)[0])[1](np.ones((16, 1), np.float32))
    assert calls == {"matmul": 6, "dot": 3}  # vjp gives dx: the first Linear's too


def batch(features, rows=16, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, features)).astype(dtype), rng.normal(size=(rows, 1)).astype(dtype)


# --- the fast path == the generic path ----------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_value_and_grad_is_the_generic_path_bit_for_bit(name, dtype):
    factory, features = MODELS[name]
    model = factory(dtype)
    params = model.init(3)
    fast = fn.value_and_grad(model, fn.losses.mse)
    slow = generic_value_and_grad(model, fn.losses.mse)
    for seed in range(3):
        x, y = batch(features, seed=seed, dtype=dtype)
        v1, g1 = fast(params, x, y)
        v2, g2 = slow(params, x, y)
        assert v1 == v2 and fn.tree.equal(g1, g2)
        assert all(leaf.dtype == dtype for leaf in fn.tree.leaves(g1))
    assert one_buffer(g1) and not one_buffer(g2)


@given(model=fst.architectures(in_features=3, out_features=2, dtype=np.float32),
       x=fst.inputs(3, dtype=np.float32), key=fst.keys(), x64=st.booleans(), loss=st.sampled_from(
           [fn.losses.mse, fn.losses.l1, functools.partial(fn.losses.huber, delta=0.5)]))
def test_random_architectures_match_the_generic_path(model, x, key, x64, loss):
    params = model.init(key)
    x = x.astype(np.float64) if x64 else x  # float64 data into a float32 model: cast like Linear
    y = fn.random.normal(key, (*x.shape[:-1], 2)).astype(np.float32)
    v1, g1 = fn.value_and_grad(model, loss)(params, x, y)
    v2, g2 = generic_value_and_grad(model, loss)(params, x, y)
    assert v1 == v2 and fn.tree.equal(g1, g2)
    assert one_buffer(g1)  # every built-in model takes the fast path


@pytest.mark.parametrize("dy_dtype", [np.float32, np.float64])
def test_vjp_pullback_dx_and_cotangent_dtypes(dy_dtype):
    model = fn.serial(L.Linear(3, 4), L.Tanh(), fn.residual(fn.serial(L.Linear(4, 4), L.ReLU())))
    params = model.init(0)
    x, _ = batch(3)
    y, pullback = model.vjp(params, x)
    dy = np.linspace(-1, 1, y.size).reshape(y.shape).astype(dy_dtype)
    g1, dx1 = pullback(dy)
    assert dx1.dtype == np.float32  # every kernel casts dy to its own dtype
    assert all(g.dtype == np.float32 for g in fn.tree.leaves(g1))
    g2, dx2 = pullback(dy)
    assert fn.tree.equal(g1, g2) and np.array_equal(dx1, dx2)  # a pullback can be called again


def test_any_input_shape_takes_the_fast_path():
    model = seed_resnet()
    params = model.init(1)
    fast, slow = fn.value_and_grad(model, fn.losses.mse), generic_value_and_grad(model, fn.losses.mse)
    rng = np.random.default_rng(0)
    for shape in [(1,), (2, 3, 1), (0, 1)]:  # 1-D, 3-D, an empty batch (the loss raises)
        x = rng.normal(size=shape).astype(np.float32)
        y = rng.normal(size=(*shape[:-1], 1)).astype(np.float32)
        if shape[0] == 0:
            with pytest.raises(ShapeError, match="empty"):
                fast(params, x, y)
            continue
        v1, g1 = fast(params, x, y)
        v2, g2 = slow(params, x, y)
        assert v1 == v2 and fn.tree.equal(g1, g2) and one_buffer(g1)


def Scale(n, calls=None):
    """A user layer written to the two-argument contract."""
    def init(key):
        return {"scale": np.ones(n, np.float32)}

    def apply(params, x):
        return x * params["scale"]

    def vjp(params, x):
        if calls is not None:
            calls.append("vjp")

        def pullback(dy):
            return {"scale": (dy * x).reshape(-1, n).sum(0)}, dy * params["scale"]

        return apply(params, x), pullback

    return fn.Layer(init, apply, vjp, name=f"Scale({n})")


def test_a_user_layer_is_one_opaque_step_and_the_rest_stays_fast():
    calls = []
    model = fn.serial(L.Linear(2, 3), Scale(3, calls), L.ReLU(), fn.serial(L.Linear(3, 3), L.ReLU()),
                      L.Linear(3, 1))
    params = fn.tree.map(lambda p: p + 0.1, model.init(2))
    x, y = batch(2)
    v1, g1 = fn.value_and_grad(model, fn.losses.mse)(params, x, y)
    v2, g2 = generic_value_and_grad(model, fn.losses.mse)(params, x, y)
    assert v1 == v2 and fn.tree.equal(g1, g2)
    assert one_buffer(g1) and calls == ["vjp", "vjp"]  # its dparams copied into the buffer


def test_a_user_layer_returning_dparams_of_the_wrong_shape_is_named():
    def Bad():
        def vjp(params, x):
            return x, lambda dy: ({"scale": np.ones(2, np.float32)}, dy)
        return fn.Layer(lambda key: {"scale": np.ones(3, np.float32)}, lambda p, x: x, vjp, name="Bad()")

    model = fn.serial(L.Linear(2, 3), Bad())
    with pytest.raises(StructureError, match=r"serial\[1\] Bad\(\): its pullback returned "
                                             r"dparams\['scale'\] of shape \(2,\), expected \(3,\)"):
        fn.value_and_grad(model, fn.losses.mse)(model.init(0), *batch(2, rows=4)[:1], np.ones((4, 3), np.float32))


def test_hand_made_and_reordered_params_give_the_generic_results():
    model = seed_mlp()
    params = model.init(0)
    x, y = batch(1)
    reordered = {"4": params["4"], "0": {"bias": params["0"]["bias"], "weight": params["0"]["weight"]},
                 "2": params["2"]}
    f, g = fn.value_and_grad(model, fn.losses.mse), generic_value_and_grad(model, fn.losses.mse)
    for p in [params, reordered, frozen(params), frozen_views(params)]:
        v1, g1 = f(p, x, y)
        v2, g2 = g(p, x, y)
        assert v1 == v2 and fn.tree.equal(g1, g2)
        assert list(fn.tree.flatten(g1)) == list(fn.tree.flatten(p))  # the params' key order


def test_errors_after_warm_up_are_the_generic_messages():
    model = fn.serial(L.Linear(8, 16), L.ReLU(), L.Linear(16, 1))
    params = model.init(0)
    f = fn.value_and_grad(model, fn.losses.mse)
    x, y = batch(8, rows=64)
    f(params, x, y)  # the layout is checked and trusted from here on
    with pytest.raises(ShapeError, match=r"^serial\[0\] Linear\(8 -> 16\): expected \(\.\.\., 8\), got \(64, 9\)"):
        f(params, np.ones((64, 9), np.float32), y)
    bad = {**params, "2": {"weight": params["2"]["weight"][:, :8], "bias": params["2"]["bias"]}}
    with pytest.raises(StructureError, match=r"Linear\(16 -> 1\): expected weight \(1, 16\)"):
        f(bad, x, y)
    with pytest.raises(StructureError, match="unexpected params keys"):
        f({**params, "7": {}}, x, y)
    with pytest.raises(ShapeError, match=r"pred has shape \(64, 1\) but target has shape \(64,\)"):
        f(params, x, y[:, 0])
    _, pullback = model.vjp(params, x)
    with pytest.raises(ShapeError, match=r"serial: pullback expected dy of shape"):
        pullback(np.ones((64, 2), np.float32))


def test_a_kernel_error_inside_the_fast_path_names_its_layer_path():
    inner = fn.serial(L.Linear(4, 4), L.Softmax(axis=3))  # axis 3 is out of range for 2-d inputs
    model = fn.serial(L.Linear(4, 4), fn.residual(inner))
    params = model.init(0)
    f = fn.value_and_grad(model, fn.losses.mse)
    with pytest.raises(ShapeError, match=r"^serial\[1\]\.residual\.serial\[1\] Softmax\(axis=3\): axis 3"):
        f(params, np.ones((2, 4), np.float32), np.ones((2, 4), np.float32))


def test_the_fast_path_is_pure_repeatable_and_thread_safe():
    model = seed_resnet()
    params = frozen(model.init(4))
    f = fn.value_and_grad(model, fn.losses.mse)
    batches = [tuple(frozen(list(batch(1, rows=8, seed=s)))) for s in range(12)]
    expected = [f(params, x, y) for x, y in batches]
    with ThreadPoolExecutor(max_workers=6) as pool:
        for _ in range(3):
            got = list(pool.map(lambda xy: f(params, *xy), batches))
            for (v, g), (ev, eg) in zip(got, expected):
                assert v == ev and fn.tree.equal(g, eg)
    x, y = batches[0]
    _, g1 = f(params, x, y)
    _, g2 = f(params, x, y)
    assert not np.shares_memory(fn.tree.leaves(g1)[0], fn.tree.leaves(g2)[0])  # fresh buffers


# --- flat optimizer updates == a per-leaf reference -----------------------------------------


def reference(name, kwargs, params, grads, state, mask=None):
    """The documented rules, leaf by leaf, in the documented order of operations."""
    lr = kwargs.get("lr", 1e-3)
    step = int(state["step"])
    eta = lr(step) if callable(lr) else lr
    wd = kwargs.get("weight_decay", 1e-2 if name == "adamw" else 0.0)
    flat_p, flat_g = fn.tree.flatten(params), fn.tree.flatten(grads)
    new_p, entries = {}, {k: {} for k in state if k not in ("step", "lr")}
    t = step + 1
    for path, p in flat_p.items():
        if isinstance(p, dict):  # an empty subtree stays
            new_p[path] = {}
            for tree in entries.values():
                tree[path] = {}
            continue
        g, d = flat_g[path], wd if mask is None or mask(path, p) else 0.0
        if name in ("adam", "adamw"):
            b1, b2, eps = kwargs.get("b1", 0.9), kwargs.get("b2", 0.999), kwargs.get("eps", 1e-8)
            mu, nu = fn.tree.flatten(state["mu"])[path], fn.tree.flatten(state["nu"])[path]
            if name == "adamw":
                p = p * (1.0 - eta * d) if d else p
            elif d:
                g = g + d * p
            mu = b1 * mu + (1.0 - b1) * g
            nu = b2 * nu + (1.0 - b2) * (g * g)
            # eta (mu / c1) / (sqrt(nu / c2) + eps), the bias corrections folded into scalars
            root_c2 = math.sqrt(1.0 - b2**t)
            denom = np.sqrt(nu)
            denom += eps * root_c2
            new_p[path] = p - (mu * (eta * root_c2 / (1.0 - b1**t))) / denom
            entries["mu"][path], entries["nu"][path] = mu, nu
        elif name == "sgd":
            momentum, nesterov = kwargs.get("momentum", 0.0), kwargs.get("nesterov", False)
            g = g + d * p if d else g
            if momentum:
                b = momentum * fn.tree.flatten(state["momentum"])[path] + g
                entries["momentum"][path] = b
                new_p[path] = p - eta * (g + momentum * b if nesterov else b)
            else:
                new_p[path] = p - eta * g
        else:  # rmsprop
            beta, eps = kwargs.get("beta", 0.9), kwargs.get("eps", 1e-8)
            nu = beta * fn.tree.flatten(state["nu"])[path] + (1.0 - beta) * (g * g)
            denom = np.sqrt(nu / (1.0 - beta**t))
            denom += eps
            new_p[path] = p - eta * g / denom
            entries["nu"][path] = nu
    def arrays(flat_tree):  # numpy makes 0-d results scalars
        return fn.tree.unflatten({k: v if isinstance(v, dict) else np.asarray(v, flat_p[k].dtype)
                                  for k, v in flat_tree.items()})

    return arrays(new_p), {k: arrays(v) for k, v in entries.items()}


ROWS = [
    ("adam", {"lr": 0.01, "weight_decay": 1e-6}),
    ("adam", {"lr": 0.01, "b1": 0.8, "b2": 0.99, "eps": 1e-6}),
    ("adamw", {"lr": 0.01, "weight_decay": 0.3}),
    ("sgd", {"lr": 0.05}),
    ("sgd", {"lr": 0.05, "weight_decay": 0.1}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
    ("rmsprop", {"lr": 0.01}),
    ("adam", {"lr": fn.optim.schedules.warmup_cosine(0.01, warmup_steps=2, total_steps=10)}),
]


def row_id(row):
    return row[0] + "".join(f"-{k}" for k in row[1] if k != "lr") + ("-schedule" if callable(row[1]["lr"]) else "")


def wavy(params):
    return fn.tree.map(lambda p: np.asarray(np.sin(3 * p) + 0.5 * p, p.dtype), params)


def check_against_reference(name, kwargs, params, steps, *, mask=None, loaded=False, tmp_path=None,
                            opt=None):
    opt = opt or getattr(fn.optim, name)(**kwargs)
    state = opt.init(params)
    for k in range(steps):
        grads = frozen(wavy(params))
        params, state = frozen_views(params), {**state}
        want_p, want_entries = reference(name, kwargs, params, grads, state, mask)
        params, state = opt.update(grads, state, params)
        assert fn.tree.equal(params, want_p), (name, k)
        for entry, tree in want_entries.items():
            assert fn.tree.equal(state[entry], tree), (name, entry, k)
        assert int(state["step"]) == k + 1
        if loaded and k == 1:  # save and load mid-way: ordinary arrays from here on
            fn.save(tmp_path / "p.npz", params)
            fn.save(tmp_path / "s.npz", state)
            params, state = fn.load(tmp_path / "p.npz"), fn.load(tmp_path / "s.npz")
    return params, state


@pytest.mark.parametrize("row", ROWS, ids=row_id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flat_updates_are_the_reference_rule_bit_for_bit(row, dtype, tmp_path):
    params = fn.tree.astype(seed_resnet().init(0), dtype)
    params = fn.tree.map(lambda p: p + 0.1, params)  # no zero biases
    check_against_reference(*row, params, 5, loaded=True, tmp_path=tmp_path)


@pytest.mark.parametrize("row", ROWS[:3] + ROWS[5:6], ids=row_id)
def test_weight_decay_masks_on_flat_buffers(row):
    name, kwargs = row
    mask = fn.optim.ndim_at_least(2)
    params = fn.tree.map(lambda p: p + 0.1, seed_mlp().init(1))
    opt = getattr(fn.optim, name)(**kwargs, weight_decay_mask=mask)
    check_against_reference(name, {**kwargs, "weight_decay": kwargs.get("weight_decay", 0.1) or 0.1},
                            params, 4, mask=mask, opt=getattr(fn.optim, name)(
                                **{**kwargs, "weight_decay": kwargs.get("weight_decay", 0.1) or 0.1},
                                weight_decay_mask=mask))
    del opt


@given(shapes=st.dictionaries(st.sampled_from("abcde"), st.lists(st.integers(1, 3), max_size=3).map(tuple),
                              min_size=1, max_size=4),
       row=st.sampled_from(ROWS), mixed=st.booleans(), empty=st.booleans())
def test_any_tree_mixed_dtypes_and_empty_subtrees(shapes, row, mixed, empty):
    rng = np.random.default_rng(len(shapes))
    params = {k: {"w": rng.normal(size=s).astype(np.float32 if i % 2 or not mixed else np.float64)}
              for i, (k, s) in enumerate(sorted(shapes.items()))}
    if empty:
        params["z"] = {}
    if any(p.ndim == 0 for p in fn.tree.leaves(params)) and np.__version__.startswith("1."):
        return  # NumPy 1.x computes 0-d float32 with Python floats in float64: not the same bits
    check_against_reference(*row, params, 3)


def test_grads_in_another_key_order_and_numpy_scalars():
    opt = fn.optim.adam(0.01)
    params = {"a": np.ones(3, np.float32), "b": {"c": np.array(0.5, np.float32), "d": np.ones((2, 2), np.float32)}}
    state = opt.init(params)
    params, state = opt.update(wavy(params), state, params)  # flat from here on
    grads = wavy(params)
    other = {"b": {"d": grads["b"]["d"], "c": np.float32(grads["b"]["c"])}, "a": grads["a"]}
    p1, s1 = opt.update(grads, state, params)
    p2, s2 = opt.update(other, state, params)
    assert fn.tree.equal(p1, p2) and fn.tree.equal(s1, s2)
    assert list(fn.tree.flatten(p2)) == list(fn.tree.flatten(params))


def test_frozen_leaves_with_masked_keep_their_arrays():
    params = fn.tree.map(lambda p: p + 0.1, seed_mlp().init(0))
    opt = fn.optim.masked(fn.optim.adam(0.01), lambda path, leaf: path.startswith("4"))
    state = opt.init(params)
    new, state2 = opt.update(wavy(params), state, params)
    for _ in range(3):
        new, state2 = opt.update(wavy(new), state2, new)
    assert new["0"]["weight"] is params["0"]["weight"] and new["2"]["bias"] is params["2"]["bias"]
    assert not np.array_equal(new["4"]["weight"], params["4"]["weight"])
    assert state2["mu"]["0"]["weight"] is state["mu"]["0"]["weight"]


def test_update_never_mutates_and_returns_fresh_buffers():
    opt = fn.optim.adam(0.01, weight_decay=0.1)
    params = fn.tree.map(lambda p: p + 0.1, seed_resnet().init(0))
    state = opt.init(params)
    for _ in range(3):
        params, state = opt.update(wavy(params), state, params)
    grads = wavy(params)
    inputs = {"params": params, "state": state, "grads": grads}
    before = copy.deepcopy(inputs)
    fp, fs, fg = frozen_views(params), {**state, "mu": frozen_views(state["mu"]),
                                         "nu": frozen_views(state["nu"])}, frozen_views(grads)
    new_p, new_s = opt.update(fg, fs, fp)
    again = opt.update(fg, fs, fp)
    new_chained = opt.update(grads, state, params)  # the optimizer's own views: no copies
    assert fn.tree.equal(inputs, before)
    assert fn.tree.equal(again[0], new_p) and fn.tree.equal(new_chained[0], new_p)
    assert fn.tree.equal(new_chained[1], new_s)
    for new in fn.tree.leaves({"p": new_chained[0], "s": new_chained[1]}):
        for old in fn.tree.leaves(inputs):
            assert not np.shares_memory(new, old)


def test_state_is_plain_dict_of_ndarrays_and_saves(tmp_path):
    opt = fn.optim.adam(0.01)
    params = seed_mlp().init(0)
    state = opt.init(params)
    for _ in range(2):
        params, state = opt.update(wavy(params), state, params)
    assert list(state) == ["step", "lr", "mu", "nu"]
    for leaf in fn.tree.leaves(state) + fn.tree.leaves(params):
        assert type(leaf) is np.ndarray and leaf.dtype in (np.float32, np.int64, np.float64)
    fn.save(tmp_path / "s.npz", {"params": params, "state": state})
    loaded = fn.load(tmp_path / "s.npz")
    assert fn.tree.equal(loaded, {"params": params, "state": state})
    assert all(leaf.base is None or leaf.base.ndim != 1 or leaf.base.size == leaf.size
               for leaf in fn.tree.leaves(loaded["params"]))  # ordinary arrays after loading
    p1, s1 = opt.update(wavy(params), state, params)
    p2, s2 = opt.update(wavy(loaded["params"]), loaded["state"], loaded["params"])
    assert fn.tree.equal(p1, p2) and fn.tree.equal(s1, s2)


def test_big_buffers_split_over_threads_give_the_same_bits(monkeypatch, two_threads):
    rng = np.random.default_rng(0)
    params = {"0": {"weight": rng.normal(size=(300, 700)).astype(np.float32), "bias": np.zeros(300, np.float32)},
              "1": {"weight": rng.normal(size=(300, 300)).astype(np.float32), "bias": np.ones(300, np.float32)}}
    grads = wavy(params)
    rows = ROWS[:4] + [("adamw", {"lr": 0.01, "weight_decay": 0.3, "weight_decay_mask": fn.optim.ndim_at_least(2)})]
    results = []
    monkeypatch.setattr(elementwise, "BLOCK_SPLIT", 10007)  # blocks and halves cut through the leaves
    monkeypatch.setattr(elementwise, "BLOCK", 5003)
    for min_size, pool in ((1 << 10, "two"), (1 << 10, None), (1 << 40, None)):  # two threads, blocks, one call
        monkeypatch.setattr(elementwise, "PARALLEL_MIN", min_size)
        if pool is None:
            monkeypatch.setitem(elementwise._pool_state, "current", (elementwise.os.getpid(), None))
        for name, kwargs in rows:
            opt = getattr(fn.optim, name)(**kwargs)
            state = opt.init(params)
            p, state = opt.update(grads, state, params)
            p, state = opt.update(grads, state, p)
            results.append({"params": p, "state": state})
    third = len(results) // 3
    for threaded, blocked, single in zip(results[:third], results[third:2 * third], results[2 * third:]):
        assert fn.tree.equal(threaded, single) and fn.tree.equal(blocked, single)


@pytest.mark.parametrize("setting, workers", [(None, 0), ("1", 0), ("2", 1)])
def test_elementwise_threads_follow_the_environment(monkeypatch, setting, workers):
    if setting is None:
        monkeypatch.delenv("FUNCNN_ELEMENTWISE_THREADS", raising=False)
    else:
        monkeypatch.setenv("FUNCNN_ELEMENTWISE_THREADS", setting)
    monkeypatch.setattr(elementwise.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setitem(elementwise._pool_state, "current", None)
    pool = elementwise._pool()
    assert (0 if pool is None else pool._max_workers) == workers
    if pool is not None:
        pool.shutdown()


def test_a_bad_elementwise_threads_setting_is_named(monkeypatch):
    monkeypatch.setenv("FUNCNN_ELEMENTWISE_THREADS", "4")
    monkeypatch.setitem(elementwise._pool_state, "current", None)
    with pytest.raises(ValueError, match="FUNCNN_ELEMENTWISE_THREADS must be 1 or 2, got '4'"):
        elementwise._pool()


def test_threads_share_one_optimizer_and_keep_numpy_error_handling(two_threads):
    opt = fn.optim.adam(0.01)
    trees = [fn.tree.map(lambda p, s=s: p + s, seed_mlp().init(s)) for s in range(8)]
    states = [opt.init(p) for p in trees]
    expected = [opt.update(wavy(p), s, p) for p, s in zip(trees, states)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda ps: opt.update(wavy(ps[0]), ps[1], ps[0]), zip(trees, states)))
    for (p1, s1), (p2, s2) in zip(got, expected):
        assert fn.tree.equal(p1, p2) and fn.tree.equal(s1, s2)
    out = np.zeros(1 << 18)

    def kernel(lo, hi):  # only the worker thread's half divides by zero
        np.divide(1.0, np.zeros(hi - lo) if lo >= out.size // 2 else np.ones(hi - lo), out[lo:hi])

    with pytest.raises(FloatingPointError):
        elementwise.run_elementwise(kernel, out.size)


def test_big_flat_buffers_are_not_kept_alive():
    opt = fn.optim.adam(0.01)
    params = {"w": np.ones((400, 400), np.float32)}
    state = opt.init(params)
    new, _ = opt.update(wavy(params), state, params)
    buffer = weakref.ref(new["w"].base)
    del new
    gc.collect()
    assert buffer() is None


def test_structure_errors_after_warm_up_are_unchanged():
    opt = fn.optim.adam(0.01)
    params = {"a": {"w": np.ones((3, 4))}, "b": np.ones(5)}
    state = opt.init(params)
    params, state = opt.update(wavy(params), state, params)
    grads = wavy(params)
    with pytest.raises(StructureError, match=r"'a\.w': missing"):
        opt.update({"a": {}, "b": grads["b"]}, state, params)
    with pytest.raises(StructureError, match=r"grads at 'b' has dtype float32, expected float64"):
        opt.update({"a": grads["a"], "b": grads["b"].astype(np.float32)}, state, params)
    with pytest.raises(StructureError, match=r"state\['mu'\] at 'b' has shape \(4,\), expected \(5,\)"):
        opt.update(grads, {**state, "mu": {"a": state["mu"]["a"], "b": np.ones(4)}}, params)
    with pytest.raises(StructureError, match=r"adam: state\['step'\] must be >= 0, got -1"):
        opt.update(grads, {**state, "step": np.array(-1)}, params)


def test_fit_trains_the_same_through_the_fast_paths():
    model = seed_mlp(np.float64)
    x = np.linspace(-3, 3, 64).reshape(-1, 1)
    y = np.sin(x)
    results = [fn.fit(m, fn.losses.mse, fn.optim.adam(0.01), m.init(0), (x, y), epochs=3, batch_size=16,
                      key=0, progress="silent") for m in (model, as_user_layer(model))]
    assert fn.tree.equal(results[0].params, results[1].params)
    assert np.array_equal(results[0].history["train_loss"], results[1].history["train_loss"])


def test_registered_small_buffers_stay_bounded():
    opt = fn.optim.sgd(0.1)
    params = {"w": np.ones(3)}
    state = opt.init(params)
    found = layout.layout_of(params)
    for _ in range(200):
        params, state = opt.update(wavy(params), state, params)
    assert len(found._live) <= 2 * layout._RECENT


def test_concurrent_compiles_and_updates_from_many_threads():
    model = seed_mlp()
    f = fn.value_and_grad(model, fn.losses.mse)
    opt = fn.optim.adam(0.01)
    x, y = batch(1)
    barrier = threading.Barrier(4)

    def run(seed):
        barrier.wait()
        params = model.init(seed)
        state = opt.init(params)
        for _ in range(5):
            _, grads = f(params, x, y)
            params, state = opt.update(grads, state, params)
        return params

    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(run, range(4)))
    for seed, params in enumerate(got):
        assert fn.tree.equal(params, run_serial(model, seed, x, y))


def run_serial(model, seed, x, y):
    f = fn.value_and_grad(as_user_layer(model), fn.losses.mse)
    opt = fn.optim.adam(0.01)
    params = model.init(seed)
    state = opt.init(params)
    for _ in range(5):
        _, grads = f(params, x, y)
        params, state = opt.update(grads, state, params)
    return params


def counting_programs(monkeypatch):
    """Wrap funcnn.grad's compile_program: count compiles and program runs."""
    import importlib

    from funcnn import program

    grad = importlib.import_module("funcnn.grad")  # the module (fn.grad is the function)
    counts = {"compiled": 0, "forward": 0, "backward": 0}

    def compile_and_count(*args):
        built = program.compile_program(*args)

        def forward(*a):
            counts["forward"] += 1
            return built.forward(*a)

        def backward(*a):
            counts["backward"] += 1
            return built.backward(*a)

        counts["compiled"] += 1
        return program.Program(forward, backward, built.source)

    monkeypatch.setattr(grad, "compile_program", compile_and_count)
    return counts


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_built_in_model_compiles_and_later_calls_run_the_program(name, monkeypatch):
    counts = counting_programs(monkeypatch)
    factory, features = MODELS[name]
    model = factory()
    f = fn.value_and_grad(model, fn.losses.mse)
    params = model.init(0)
    for seed in range(3):
        f(params, *batch(features, seed=seed))
    assert counts == {"compiled": 1, "forward": 2, "backward": 2}  # the first call is the checked one
    f(params, *batch(features, rows=5))  # another batch size: the same program
    f(fn.tree.map(np.copy, params), *batch(features))  # other arrays, the same layout
    assert counts["compiled"] == 1 and counts["forward"] == 4
    f(params, *batch(features, dtype=np.float64))  # another input signature: a new program
    assert counts["compiled"] == 2


def test_models_with_state_keys_and_user_layers_compile_too(monkeypatch):
    counts = counting_programs(monkeypatch)
    model = fn.serial(L.Linear(3, 4), L.BatchNorm(4), L.ReLU(), L.Dropout(0.2), Scale(4),
                      fn.residual(fn.serial(L.Linear(4, 4), L.LayerNorm(4))), L.Linear(4, 1))
    f = fn.value_and_grad(model, fn.losses.mse)
    params, state = model.init(0), model.init_state()
    x, y = batch(3)
    for step in range(3):
        _, _, state = f(params, x, y, key=fn.random.key(step), state=state)
    assert counts == {"compiled": 1, "forward": 2, "backward": 2}
