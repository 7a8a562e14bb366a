"""fit: best-k, early stopping, NaN stop, Ctrl-C, bit-exact resume, progress output."""

import io

import numpy as np
import pytest

import funcnn as fn
from funcnn.errors import NonFiniteLossError


def problem(n=200, seed=0):
    x = fn.random.uniform(seed, (n, 1), 0, 2 * np.pi)
    y = np.sin(x)
    xv = fn.random.uniform(seed + 1, (50, 1), 0, 2 * np.pi)
    return (x, y), (xv, np.sin(xv))


def mlp():
    return fn.serial(fn.Linear(1, 16), fn.Tanh(), fn.Linear(16, 1))


def run(epochs=6, **kwargs):
    train, val = problem()
    model = mlp()
    opt = kwargs.pop("opt", None) or fn.optim.adam(0.01)
    options = {"val": val, "epochs": epochs, "batch_size": 32, "key": 3, "progress": "silent"}
    options.update(kwargs)
    return fn.fit(model, fn.losses.mse, opt, model.init(0), train, **options)


class InterruptAfter:
    """An optimizer that raises KeyboardInterrupt (like Ctrl-C) on its n-th update."""

    def __init__(self, opt, n):
        self.inner, self.n, self.calls = opt, n, 0

    def init(self, params):
        return self.inner.init(params)

    def update(self, grads, state, params):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.inner.update(grads, state, params)


def test_best_k_really_are_the_k_lowest_validation_losses():
    result = run(epochs=8, keep_best=3)
    val = result.history["val_loss"]
    order = np.argsort(val, kind="stable")[:3]
    assert [m.epoch for m in result.best] == (order + 1).tolist()  # epochs count from 1
    assert [m.loss for m in result.best] == val[order].tolist()
    model = mlp()
    _, (xv, yv) = problem()
    for m in result.best:  # the kept params are the params of that epoch
        assert fn.losses.mse(model.apply(m.params, xv), yv) == m.loss
    assert result.best_params is result.best[0].params


def test_history_fields():
    result = run(epochs=4)
    assert set(result.history) == {"train_loss", "val_loss", "lr", "time", "lr_scale"}
    assert all(len(v) == 4 and v.dtype == np.float64 for v in result.history.values())
    assert np.all(result.history["lr"] == 0.01) and np.all(result.history["time"] > 0)
    assert result.stop_reason is None


def test_schedule_lr_in_history():
    sched = fn.optim.schedules.exponential_decay(0.01, decay_rate=0.5, decay_steps=7)
    result = run(epochs=3, opt=fn.optim.adam(sched))
    steps_per_epoch = 7  # 200 samples / 32
    np.testing.assert_allclose(result.history["lr"], [sched(e * steps_per_epoch) for e in range(3)])


def test_without_validation_monitors_training_loss():
    train, _ = problem()
    model = mlp()
    result = fn.fit(model, fn.losses.mse, fn.optim.adam(0.01), model.init(0), train, epochs=3,
                    batch_size=50, key=0, progress="silent")
    assert np.all(np.isnan(result.history["val_loss"]))
    assert result.best[0].loss == result.history["train_loss"].min()


def test_early_stopping_restores_best():
    result = run(epochs=60, opt=fn.optim.sgd(0.5), patience=2)  # lr too high: val oscillates
    assert result.stop_reason == "early_stopping"
    epochs_run = len(result.history["val_loss"])
    assert epochs_run < 60
    best_epoch = int(np.argmin(result.history["val_loss"]))
    assert epochs_run - 1 - best_epoch == 2
    assert result.params is result.best[0].params and result.best[0].epoch == best_epoch + 1


def test_nan_loss_stops_with_epoch_and_batch():
    """Finite data can still give a NaN loss (non-finite data is refused up front)."""

    @fn.losses.make_loss
    def mse_nan_on_marked_batch(pred, target):
        value, dpred = fn.losses.mse.value_and_grad(pred, target)
        return (np.nan if (target == 1e6).any() else value), dpred

    train, val = problem()
    x, y = train
    y = y.copy()
    y[150] = 1e6  # marks the batch of epoch 1 that holds sample 150
    model = mlp()
    with pytest.raises(NonFiniteLossError, match=r"training loss is nan at epoch 1, batch \d+ of 7") as info:
        fn.fit(model, mse_nan_on_marked_batch, fn.optim.adam(0.01), model.init(0), (x, y), val=val,
               epochs=3, batch_size=32, key=0, progress="silent")
    partial = info.value.result
    assert all(np.all(np.isfinite(leaf)) for leaf in fn.tree.leaves(partial.params))


def test_ctrl_c_returns_what_was_trained():
    opt = InterruptAfter(fn.optim.adam(0.01), n=7 * 3 + 2)  # during epoch 4
    result = run(epochs=10, opt=opt)
    assert result.stop_reason == "interrupted"
    assert len(result.history["train_loss"]) == 3 and len(result.best) == 3
    assert int(result.opt_state["step"]) == 7 * 3 + 1


@pytest.mark.parametrize("lr", [0.01, fn.optim.schedules.exponential_decay(0.01, 0.5, 7)],
                         ids=["constant-lr", "scheduled-lr"])
@pytest.mark.parametrize("interrupt_at", [7 * 2 + 4, 7 * 4])  # mid-epoch and epoch boundary
def test_resume_after_interrupt_is_bit_exact(tmp_path, interrupt_at, lr):
    full = run(epochs=6, opt=fn.optim.adam(lr))
    first = run(epochs=6, opt=InterruptAfter(fn.optim.adam(lr), n=interrupt_at),
                checkpoint_dir=tmp_path)
    assert first.stop_reason == "interrupted"
    resumed = run(epochs=6, opt=fn.optim.adam(lr), checkpoint_dir=tmp_path, resume=True)
    assert fn.tree.equal(resumed.params, full.params)
    assert fn.tree.equal(resumed.opt_state, full.opt_state)
    for name in ("train_loss", "val_loss", "lr"):
        np.testing.assert_array_equal(resumed.history[name], full.history[name])
    assert [(m.loss, m.epoch) for m in resumed.best] == [(m.loss, m.epoch) for m in full.best]
    assert all(fn.tree.equal(a.params, b.params) for a, b in zip(resumed.best, full.best))


def test_checkpoint_dir_holds_best_k_and_latest(tmp_path):
    result = run(epochs=4, checkpoint_dir=tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["best-1.ckpt", "best-2.ckpt", "best-3.ckpt", "latest.ckpt", "metrics.jsonl"]
    assert fn.tree.equal(fn.load(tmp_path / "best-1.ckpt"), result.best[0].params)
    latest = fn.load(tmp_path / "latest.ckpt")
    assert int(latest["progress"]["epoch"]) == 4 and fn.tree.equal(latest["params"], result.params)


def test_resume_can_extend_training(tmp_path):
    full = run(epochs=5)
    run(epochs=3, checkpoint_dir=tmp_path)
    more = run(epochs=5, checkpoint_dir=tmp_path, resume=True)
    assert fn.tree.equal(more.params, full.params)


def test_resume_with_another_key_is_refused(tmp_path):
    run(epochs=2, checkpoint_dir=tmp_path)
    with pytest.raises(fn.errors.StructureError, match="pass the same key"):
        run(epochs=3, checkpoint_dir=tmp_path, resume=True, key=4)


def test_progress_lines_when_not_a_terminal():
    out = io.StringIO()
    run(epochs=3, progress="auto", stream=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and all(line.startswith(f"epoch {i + 1}/3") for i, line in enumerate(lines))
    assert "\r" not in out.getvalue()


def test_progress_bar_on_a_terminal_and_silent():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    run(epochs=2, progress="auto", stream=out)
    text = out.getvalue()
    assert "\r" in text and "[" in text and text.count("\n") == 2
    quiet = io.StringIO()
    run(epochs=2, progress="silent", stream=quiet)
    assert quiet.getvalue() == ""


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"epochs": 0}, ValueError, "epochs must be a positive int, got 0"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"keep_best": 0}, ValueError, "keep_best must be a positive int"),
        ({"patience": -1}, ValueError, "patience must be a positive int"),
        ({"progress": "fancy"}, ValueError, "progress must be one of"),
        ({"resume": True}, ValueError, "resume=True needs checkpoint_dir"),
        ({"val": (np.ones((3, 1)), np.ones((2, 1)))}, ValueError, "val x and y have different lengths: 3 vs 2"),
        ({"opt": object()}, TypeError, "optimizer must be an Optimizer"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        run(**kwargs)


def test_unknown_keyword_is_rejected():
    with pytest.raises(TypeError, match="unexpected keyword argument 'epoch'"):
        fn.fit(mlp(), fn.losses.mse, fn.optim.adam(0.1), {}, problem()[0], epoch=3, batch_size=3, key=0)


def test_progress_bar_keeps_long_runs_short():
    from funcnn.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    report = Progress("auto", out, epochs=500)
    for epoch in range(500):
        report.batch(epoch, 1, 1, 0.5)
        report.epoch(epoch, 0.5, 0.4, 0.01)
    kept = out.getvalue().count("\n")
    assert kept == 50 and out.getvalue().endswith("\n")


def test_compact_reprs_and_fit_hints():
    result = run(epochs=2)
    text = repr(result)
    assert len(text) < 600 and "FitResult(params=<4 arrays" in text and "2 epochs" in text
    assert repr(result.best[0]).startswith(f"BestModel(loss={result.best[0].loss:.6g}, epoch=")
    model, ((x, y), _) = mlp(), problem()
    with pytest.raises(TypeError, match=r"fit: got 1 positional argument\(s\) after train; pass the data "
                                        r"as one pair, fit\(model, loss, optimizer, params, \(x, y\)"):
        fn.fit(model, fn.losses.mse, fn.optim.adam(0.1), model.init(0), x, y, epochs=1, batch_size=8, key=0)
    with pytest.raises(TypeError, match=r"serial is a Layer, not a function: call model\.apply\(params, x\)"):
        model(model.init(0), x)


def test_resume_messages_count_epochs_and_batches_alike(tmp_path):
    stream = io.StringIO()
    run(epochs=3, opt=InterruptAfter(fn.optim.adam(0.01), n=7 + 2), checkpoint_dir=tmp_path,
        progress="lines", stream=stream)
    assert "interrupted in epoch 2 after 1 of 7 batches" in stream.getvalue()  # the 9th update raised
    stream = io.StringIO()
    run(epochs=3, checkpoint_dir=tmp_path, resume=True, progress="lines", stream=stream)
    assert "resuming from" in stream.getvalue() and "in epoch 2 after 1 of 7 batches" in stream.getvalue()
    stream = io.StringIO()
    run(epochs=3, checkpoint_dir=tmp_path, resume=True, progress="lines", stream=stream)
    assert "already complete (3 of 3 epochs); nothing to train" in stream.getvalue()
