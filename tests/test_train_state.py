"""``fit`` with model state (BatchNorm) and random layers (Dropout): keys per batch,
validation in evaluation mode, state in best-k and checkpoints, bit-exact resume."""

import os

import numpy as np
import pytest

import funcnn as fn
from funcnn.train import batch_key

L = fn.layers


def model_with_state(dtype=np.float64):
    return fn.serial(L.Linear(1, 16, dtype=dtype), L.BatchNorm(16, dtype=dtype), L.ReLU(),
                     L.Dropout(0.2), L.Linear(16, 1, dtype=dtype))


def sine(n=96, seed=0, dtype=np.float64):
    x = np.random.default_rng(seed).uniform(0, 2 * np.pi, size=(n, 1)).astype(dtype)
    return x, np.sin(x)


def run(model=None, epochs=4, **kwargs):
    model = model or model_with_state()
    settings = {"epochs": epochs, "batch_size": 16, "key": 3, "val": sine(40, seed=1),
                "progress": "silent", **kwargs}
    return fit_with(model, **settings)


def fit_with(model, **kwargs):
    return fn.fit(model, fn.losses.mse, fn.optim.adam(1e-2), model.init(0), sine(), **kwargs)


def test_fit_is_the_hand_written_loop_with_keys_and_state():
    model = model_with_state()
    result = run(model)
    params, state, opt = model.init(0), model.init_state(), fn.optim.adam(1e-2)
    opt_state = opt.init(params)
    x, y = sine()
    x_val, y_val = sine(40, seed=1)
    f = fn.value_and_grad(model, fn.losses.mse)
    key = fn.random.key(3)
    noise = fn.random.split(key, 2)[1]
    val_losses = []
    for epoch in range(4):
        order = fn.data.batches(x, y, 16, key=fn.random.fold_in(key, epoch))
        for b, (xb, yb) in enumerate(order):
            _, grads, state = f(params, xb, yb, key=batch_key(noise, epoch, b), state=state)
            params, opt_state = opt.update(grads, opt_state, params)
        pred, same = model.apply(params, x_val, state=state)  # evaluation mode
        assert fn.tree.equal(same, state)
        val_losses.append(fn.losses.mse(pred, y_val))
    assert fn.tree.equal(result.params, params) and fn.tree.equal(result.state, state)
    np.testing.assert_array_equal(result.history["val_loss"], val_losses)
    assert int(result.state["1"]["num_batches_tracked"]) == 4 * 6


def test_best_k_entries_carry_their_state_and_early_stopping_restores_it():
    result = run(epochs=6, keep_best=2)
    assert len(result.best) == 2
    for entry in result.best:
        assert list(entry.state) == ["1"]
        assert int(entry.state["1"]["num_batches_tracked"]) == 6 * entry.epoch  # after epoch `epoch`
    assert result.best_state is result.best[0].state
    stopped = run(epochs=30, patience=1)
    if stopped.stop_reason == "early_stopping":
        assert stopped.state is stopped.best[0].state and stopped.params is stopped.best[0].params


def test_same_key_same_run_other_key_other_masks():
    a, b, c = run(), run(), run(key=4)
    assert fn.tree.equal(a.params, b.params) and fn.tree.equal(a.state, b.state)
    assert not fn.tree.equal(a.params, c.params)


def test_a_model_without_randomness_or_state_is_unchanged():
    model = fn.serial(L.Linear(1, 8, dtype=np.float64), L.Tanh(), L.Linear(8, 1, dtype=np.float64))
    result = run(model)
    assert result.state == {} and all(entry.state == {} for entry in result.best)


def test_fit_starts_from_a_given_state():
    model = model_with_state()
    start = model.init_state()
    start["1"]["num_batches_tracked"] = np.array(100, np.int64)
    result = run(model, state=start)
    assert int(result.state["1"]["num_batches_tracked"]) == 100 + 24
    assert int(start["1"]["num_batches_tracked"]) == 100  # never written


def test_checkpoints_hold_the_state_and_resume_is_bit_exact(tmp_path):
    full = run(epochs=5, checkpoint_dir=tmp_path / "full")
    assert os.path.exists(tmp_path / "full" / "best-1.state.ckpt")
    best_state = fn.load(tmp_path / "full" / "best-1.state.ckpt", like=fn.serial(
        L.Linear(1, 16), L.BatchNorm(16, dtype=np.float64)).init_state())
    assert fn.tree.equal(best_state, full.best[0].state)
    assert fn.load(tmp_path / "full" / "best-1.state.ckpt")["1"]["num_batches_tracked"].dtype == np.int64
    calls = {"n": 0}
    interrupted_at = 13  # inside epoch 3

    def stop_after_some_batches(pred, target):
        calls["n"] += 1
        if calls["n"] == interrupted_at:
            raise KeyboardInterrupt
        return fn.losses.mse.value_and_grad(pred, target)

    loss = fn.losses.make_loss(stop_after_some_batches, name="mse")
    model = model_with_state()
    settings = {"epochs": 5, "batch_size": 16, "key": 3, "val": sine(40, seed=1), "progress": "silent",
                "checkpoint_dir": tmp_path / "cut"}
    part = fn.fit(model, loss, fn.optim.adam(1e-2), model.init(0), sine(), **settings)
    assert part.stop_reason == "interrupted"
    resumed = fn.fit(model, fn.losses.mse, fn.optim.adam(1e-2), model.init(0), sine(), resume=True,
                     **settings)
    assert fn.tree.equal(resumed.params, full.params) and fn.tree.equal(resumed.state, full.state)
    for got, want in zip(resumed.best, full.best):
        assert got.epoch == want.epoch and fn.tree.equal(got.state, want.state)
    np.testing.assert_array_equal(resumed.history["train_loss"], full.history["train_loss"])


def test_resume_with_another_state_structure_is_refused(tmp_path):
    run(epochs=2, checkpoint_dir=tmp_path)
    other = fn.serial(L.Linear(1, 16, dtype=np.float64), L.LayerNorm(16, dtype=np.float64), L.ReLU(),
                      L.Dropout(0.2), L.Linear(16, 1, dtype=np.float64))
    with pytest.raises(fn.errors.StructureError, match="state"):
        fit_with(other, epochs=3, batch_size=16, key=3, progress="silent", checkpoint_dir=tmp_path,
                 resume=True)
