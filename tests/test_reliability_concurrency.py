"""Purity and concurrency over random architectures.

No function mutates its inputs: arrays are frozen (``setflags(write=False)``) and the
dicts holding them refuse item assignment, for value_and_grad, every optimizer's init and
update, every loss, and fit. Results are bitwise repeatable. Eight threads training
independent models (a manual adam loop, and fit) or evaluating one shared params tree
give exactly the single-threaded results, and threads saving and loading one checkpoint
path only ever see whole checkpoints.

tests/test_purity.py covers value_and_grad/apply/vjp with frozen arrays on random
architectures and 8 threads sharing one fixed model; this extends it to the optimizers,
losses, fit, frozen dicts, random architectures under threads, training in threads and
checkpoints.
"""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import funcnn as fn
from funcnn.testing import strategies as fst

THREADS = 8


# --- freezing ------------------------------------------------------------------------


class FrozenDict(dict):
    """A dict that refuses every mutation: funcnn must build new dicts, never edit ours."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("funcnn mutated an input dict")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse


def freeze(tree):
    """A deep copy: read-only arrays inside FrozenDicts."""
    if isinstance(tree, dict):
        return FrozenDict({k: freeze(v) for k, v in tree.items()})
    a = np.array(tree)
    a.setflags(write=False)
    return a


def fingerprint(tree):
    """Every key path with each leaf's dtype, shape and bytes: to prove nothing changed."""
    if isinstance(tree, dict):
        return tuple((k, fingerprint(v)) for k, v in tree.items())
    if isinstance(tree, (tuple, list)):
        return tuple(fingerprint(v) for v in tree)
    a = np.asarray(tree)
    return (a.dtype.str, a.shape, a.tobytes())


def bitwise(a, b) -> bool:
    return fingerprint(a) == fingerprint(b)


OPTIMIZERS = {
    "sgd": fn.optim.sgd(0.05),
    "sgd-nesterov-wd": fn.optim.sgd(0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
    "rmsprop": fn.optim.rmsprop(0.01),
    "adam-wd": fn.optim.adam(0.01, weight_decay=0.1, weight_decay_mask=fn.optim.ndim_at_least(2)),
    "adamw-schedule": fn.optim.adamw(fn.optim.schedules.warmup_cosine(0.01, 2, 10)),
    "masked-adam": fn.optim.masked(fn.optim.adam(0.01), lambda path, leaf: leaf.ndim >= 2),
}
LOSSES = {
    "mse": fn.losses.mse,
    "l1": fn.losses.l1,
    "huber": functools.partial(fn.losses.huber, delta=0.5),
    "sigmoid_binary_cross_entropy": fn.losses.sigmoid_binary_cross_entropy,
    "softmax_cross_entropy": fn.losses.softmax_cross_entropy,
}


def target_for(loss_name, pred, seed):
    if loss_name == "softmax_cross_entropy":
        return fn.random.uniform(seed, pred.shape, 0.0, 1.0, pred.dtype) / pred.shape[-1]
    if loss_name == "sigmoid_binary_cross_entropy":
        return (fn.random.uniform(seed, pred.shape, 0.0, 1.0) > 0.5).astype(pred.dtype)
    return fn.random.normal(seed, pred.shape, pred.dtype)


# --- purity --------------------------------------------------------------------------


@settings(max_examples=30)
@given(model=fst.architectures(in_features=3, out_features=2, dtype=np.float32),
       x=fst.inputs(3, dtype=np.float32), key=fst.keys(), seed=st.integers(0, 2**32 - 1),
       loss_name=st.sampled_from(sorted(LOSSES)))
def test_nothing_mutates_its_inputs_and_everything_repeats(model, x, key, seed, loss_name):
    params, x = freeze(model.init(key)), freeze(x)
    pred = model.apply(params, x)
    y = freeze(target_for(loss_name, pred, seed))
    before = fingerprint((params, x, y))
    loss = LOSSES[loss_name]

    value, grads = fn.value_and_grad(model, loss)(params, x, y)
    again = fn.value_and_grad(model, loss)(params, x, y)
    assert value == again[0] and bitwise(grads, again[1])
    assert loss(freeze(pred), y) == loss(freeze(pred), y) == value
    grads = freeze(grads)
    for name, opt in OPTIMIZERS.items():
        state = freeze(opt.init(params))
        state_before = fingerprint(state)
        first = opt.update(grads, state, params)
        second = opt.update(grads, state, params)
        assert bitwise(first, second), name
        assert fingerprint(state) == state_before, name
        third = opt.update(freeze(grads), freeze(first[1]), freeze(first[0]))  # a second step
        assert bitwise(third, opt.update(grads, first[1], first[0])), name
    assert fingerprint((params, x, y)) == before


def test_fit_does_not_mutate_its_inputs_and_repeats_bitwise(tmp_path):
    model = fn.serial(fn.Linear(3, 8), fn.Tanh(), fn.residual(fn.serial(fn.Linear(8, 8), fn.GELU())),
                      fn.Linear(8, 2))
    x, xv = fn.random.normal(0, (40, 3), np.float32), fn.random.normal(1, (12, 3), np.float32)
    y, yv = np.sin(x[:, :2]), np.sin(xv[:, :2])
    opt = fn.optim.adam(0.01)
    inputs = freeze({"params": model.init(0), "x": x, "y": y, "xv": xv, "yv": yv,
                     "opt_state": opt.init(model.init(0))})
    before = fingerprint(inputs)

    def run(folder=None):
        return fn.fit(model, fn.losses.mse, opt, inputs["params"], (inputs["x"], inputs["y"]),
                      val=(inputs["xv"], inputs["yv"]), opt_state=inputs["opt_state"], epochs=3,
                      batch_size=8, key=1, progress="silent", checkpoint_dir=folder)

    first, second = run(), run(tmp_path)
    assert bitwise(first.params, second.params) and bitwise(first.opt_state, second.opt_state)
    assert all(bitwise(a.params, b.params) for a, b in zip(first.best, second.best))
    assert fingerprint(inputs) == before


# --- threads -------------------------------------------------------------------------


def in_threads(jobs):
    """Run every job in its own thread, all released at once; return results in order."""
    barrier = threading.Barrier(len(jobs))

    def run(job):
        barrier.wait()
        return job()

    threads = ThreadPoolExecutor(max_workers=len(jobs))
    try:
        return list(threads.map(run, jobs))
    finally:
        threads.shutdown()


def model_for(i):
    width = 4 + 2 * i
    return fn.serial(fn.Linear(3, width), fn.Tanh(),
                     fn.residual(fn.serial(fn.Linear(width, width), fn.SiLU())), fn.Linear(width, 2))


def data_for(i, n=64):
    x = fn.random.normal(100 + i, (n, 3), np.float32)
    return x, np.sin(x[:, :2] * (1 + i % 3))


SHARED_OPT = fn.optim.adam(0.01, weight_decay=1e-3)  # one optimizer object for every thread


def manual_training(i, steps=40):
    model, (x, y) = model_for(i), data_for(i)
    params = model.init(i)
    state = SHARED_OPT.init(params)
    step = fn.value_and_grad(model, fn.losses.mse)
    losses = []
    for epoch in range(steps // 4):
        for xb, yb in fn.data.batches(x, y, 16, key=fn.random.fold_in(i, epoch)):
            loss, grads = step(params, xb, yb)
            params, state = SHARED_OPT.update(grads, state, params)
            losses.append(loss)
    return params, state, losses


def fit_training(i):
    model, (x, y) = model_for(i), data_for(i)
    result = fn.fit(model, fn.losses.mse, SHARED_OPT, model.init(i), (x[:48], y[:48]),
                    val=(x[48:], y[48:]), epochs=4, batch_size=8, key=i, progress="silent")
    return result.params, result.opt_state, result.history["val_loss"].tolist(), result.best


@pytest.mark.parametrize("train", [manual_training, fit_training], ids=["manual-adam", "fit"])
def test_threads_training_independent_models_match_single_threaded(train):
    expected = [train(i) for i in range(THREADS)]
    for _ in range(2):
        got = in_threads([functools.partial(train, i) for i in range(THREADS)])
        for i, (g, e) in enumerate(zip(got, expected)):
            assert bitwise(g[0], e[0]) and bitwise(g[1], e[1]), i
            assert g[2] == e[2], i
            if train is fit_training:
                assert [(m.loss, m.epoch) for m in g[3]] == [(m.loss, m.epoch) for m in e[3]]


@settings(max_examples=25)
@given(model=fst.architectures(in_features=4, out_features=2, dtype=np.float32), key=fst.keys())
def test_threads_evaluating_one_shared_params_tree_match_single_threaded(model, key):
    params = freeze(model.init(key))
    batches = [fn.random.normal(i, (256, 4), np.float32) for i in range(THREADS)]
    targets = [fn.random.normal(50 + i, (256, 2), np.float32) for i in range(THREADS)]
    f = fn.value_and_grad(model, fn.losses.mse)
    g = fn.value_and_grad(fn.debug.check_finite(model), fn.losses.mse)

    def evaluate(i):
        x, y = batches[i], targets[i]
        return model.apply(params, x), f(params, x, y), g(params, x, y)

    expected = [evaluate(i) for i in range(THREADS)]
    for _ in range(3):
        got = in_threads([functools.partial(evaluate, i) for i in range(THREADS)])
        for (y1, (v1, g1), (w1, h1)), (y2, (v2, g2), _) in zip(got, expected):
            assert y1.tobytes() == y2.tobytes() and v1 == v2 == w1
            assert bitwise(g1, g2) and bitwise(h1, g2)


def test_threads_saving_and_loading_one_path_see_only_whole_checkpoints(tmp_path):
    """8 writers replace one checkpoint while 2 readers load it: every load is one whole tree."""
    path = tmp_path / "shared.ckpt"
    trees = [{"who": np.array(i), "w": np.full((64, 64), float(i)), "b": np.full(64, -float(i))}
             for i in range(THREADS)]
    fn.save(path, trees[0])
    stop = threading.Event()
    seen = []

    def writer(i):
        for _ in range(6):
            fn.save(path, trees[i])

    def reader():
        while not stop.is_set():
            loaded = fn.load(path)
            assert bitwise(loaded, trees[int(loaded["who"])])
            seen.append(int(loaded["who"]))

    pool = ThreadPoolExecutor(max_workers=2)
    readers = [pool.submit(reader) for _ in range(2)]
    try:
        in_threads([functools.partial(writer, i) for i in range(THREADS)])
    finally:
        stop.set()
        pool.shutdown()
    for r in readers:
        r.result()
    assert len(seen) > 0 and bitwise(fn.load(path), trees[int(fn.load(path)["who"])])
    assert sorted(os.listdir(tmp_path)) == ["shared.ckpt"]  # no temp file left by any thread
