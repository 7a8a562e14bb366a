"""fit's per-epoch records, callbacks, metrics.jsonl, lr_on_plateau and eval_params="ema"."""

import json

import numpy as np
import pytest
import torch

import funcnn as fn
from funcnn.callbacks import EpochRecord, ReduceLROnPlateau

L = fn.layers


def problem(n=120, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(n, 2))
    return x, np.sin(x[:, :1]) * x[:, 1:]


def model():
    return fn.serial(L.Linear(2, 16, dtype=np.float64), L.Tanh(), L.Linear(16, 1, dtype=np.float64))


def fit(opt=None, **kwargs):
    m = model()
    settings = {"epochs": 6, "batch_size": 20, "key": 1, "val": problem(40, seed=1), "progress": "silent",
                **kwargs}
    return fn.fit(m, fn.losses.mse, opt or fn.optim.sgd(0.1), m.init(0), problem(), **settings)


@pytest.mark.parametrize("settings", [
    {"factor": 0.5, "patience": 1}, {"factor": 0.1, "patience": 2, "cooldown": 2},
    {"factor": 0.3, "patience": 0, "threshold": 0.05, "min_scale": 0.05},
])
def test_plateau_rule_is_torchs(settings):
    losses = [1.0, 0.9, 0.95, 0.96, 0.97, 0.89, 0.89, 0.9, 0.7, 0.8, 0.8, 0.8, 0.8, 0.8, 0.6, 0.65]
    rule = ReduceLROnPlateau(**settings).check()
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    torch_rule = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=settings["factor"], patience=settings["patience"],
        threshold=settings.get("threshold", 1e-4), cooldown=settings.get("cooldown", 0),
        min_lr=settings.get("min_scale", 0.0))
    state = rule.init()
    for loss in losses:
        state = rule.update(state, loss)
        torch_rule.step(loss)
        assert float(state["scale"]) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)


def test_callbacks_see_every_epoch_and_can_stop():
    seen = []
    result = fit(callbacks=[seen.append])
    assert [r.epoch for r in seen] == list(range(1, 7)) and all(isinstance(r, EpochRecord) for r in seen)
    np.testing.assert_array_equal([r.val_loss for r in seen], result.history["val_loss"])
    assert seen[-1].best_loss == result.best[0].loss and seen[-1].best_epoch == result.best[0].epoch
    stopped = fit(callbacks=[lambda r: "stop" if r.epoch == 2 else None, seen.append])
    assert stopped.stop_reason == "callback" and len(stopped.history["train_loss"]) == 2
    with pytest.raises(TypeError, match=r"fit: callbacks\[0\] must be a function of an EpochRecord"):
        fit(callbacks=[3])


def test_metrics_log_has_one_json_line_per_epoch_and_survives_resume(tmp_path):
    class Interrupt:
        def __init__(self, inner, after):
            self.inner, self.after, self.calls = inner, after, 0
            self.init = inner.init

        def update(self, grads, state, params):
            self.calls += 1
            if self.calls == self.after:
                raise KeyboardInterrupt
            return self.inner.update(grads, state, params)

    full = fit(checkpoint_dir=tmp_path / "full")
    lines = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, 7))
    assert [json.loads(line)["val_loss"] for line in lines] == full.history["val_loss"].tolist()
    part = fit(opt=Interrupt(fn.optim.sgd(0.1), after=6 * 3 + 2), checkpoint_dir=tmp_path / "cut")
    assert part.stop_reason == "interrupted"
    (tmp_path / "cut" / "metrics.jsonl").write_text("garbage of a process killed mid-write\n")
    resumed = fit(checkpoint_dir=tmp_path / "cut", resume=True)
    assert fn.tree.equal(resumed.params, full.params)
    got = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    want = [json.loads(line) for line in lines]
    assert [{k: v for k, v in g.items() if k != "seconds"} for g in got] == [
        {k: v for k, v in w.items() if k != "seconds"} for w in want]


def test_lr_on_plateau_scales_the_step_and_resumes(tmp_path):
    rule = ReduceLROnPlateau(factor=0.5, patience=0, threshold=0.2)
    result = fit(opt=fn.optim.sgd(0.3), epochs=8, lr_on_plateau=rule, checkpoint_dir=tmp_path / "a")
    scales = result.history["lr_scale"]
    assert scales[0] == 1.0 and scales[-1] < 1.0 and np.all(np.diff(scales) <= 0)
    np.testing.assert_allclose(result.history["lr"], 0.3 * scales)
    # a smaller step is a smaller lr: one epoch at scale s equals plain SGD with lr 0.3 * s
    m, s = model(), float(scales[-1])
    x, y = problem()
    f = fn.value_and_grad(m, fn.losses.mse)
    params = m.init(0)
    by_scale = fn.tree.map(lambda p, g: p + s * ((p - 0.3 * g) - p), params, f(params, x, y)[1])
    by_lr = fn.tree.map(lambda p, g: p - (0.3 * s) * g, params, f(params, x, y)[1])
    assert fn.tree.allclose(by_scale, by_lr, rtol=1e-12, atol=1e-15)
    first = fit(opt=fn.optim.sgd(0.3), epochs=4, lr_on_plateau=rule, checkpoint_dir=tmp_path / "b")
    resumed = fit(opt=fn.optim.sgd(0.3), epochs=8, lr_on_plateau=rule, checkpoint_dir=tmp_path / "b",
                  resume=True)
    assert first.history["lr_scale"].size == 4
    assert fn.tree.equal(resumed.params, result.params)
    np.testing.assert_array_equal(resumed.history["lr_scale"], scales)
    with pytest.raises(ValueError, match=r"ReduceLROnPlateau: factor must be a number in \[0.0, 1.0\)"):
        fit(lr_on_plateau=ReduceLROnPlateau(factor=2.0))
    with pytest.raises(TypeError, match="lr_on_plateau must be an fn.callbacks.ReduceLROnPlateau"):
        fit(lr_on_plateau=0.5)


def test_eval_params_ema_validates_and_keeps_the_average():
    opt = fn.optim.ema(fn.optim.adam(1e-2), decay=0.9)
    result = fit(opt=opt, eval_params="ema", keep_best=1)
    m = model()
    x_val, y_val = problem(40, seed=1)
    assert fn.losses.mse(m.apply(result.best[0].params, x_val), y_val) == result.best[0].loss
    last = fit(opt=opt, eval_params="ema", epochs=1)
    assert fn.tree.equal(last.best[0].params, fn.optim.ema_params(last.opt_state))
    assert not fn.tree.equal(last.best[0].params, last.params)
    with pytest.raises(fn.errors.StructureError, match="ema"):
        fit(opt=fn.optim.adam(1e-2), eval_params="ema")
    with pytest.raises(ValueError, match="fit: eval_params must be 'params' or 'ema'"):
        fit(eval_params="average")
