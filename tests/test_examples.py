"""The examples: ``python -m funcnn.examples ...`` end to end, and in-process.

Each example trains for a couple of epochs into a temporary folder; the checks are on
what a user gets: the exit code, the printed metric, a checkpoint that loads into the
model's structure and holds the best params, metrics.json, and the PNGs (when
matplotlib is installed). The airfoil runs read the file that tests/helpers/airfoil_data.py
finds (``$FUNCNN_DATA_DIR``, the loader's cache, or ``../shared/data``) and are skipped
when there is none; the digits runs need no file (the data is in the package).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers.airfoil_data import AIRFOIL, AVAILABLE, MISSING

import funcnn as fn
from funcnn import examples
from funcnn.examples import airfoil, digits, plots, sine, xor
from funcnn.examples.__main__ import main
from funcnn.testing import check_loss_grads

REPO = Path(__file__).resolve().parents[1]
needs_airfoil = pytest.mark.skipif(not AVAILABLE, reason=MISSING)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

MODELS = {
    "xor": xor.model,
    "sine-mlp": sine.mlp,
    "sine-resnet": sine.resnet,
    "airfoil": airfoil.seed_model,
    "airfoil-better": airfoil.better_model,
    "digits": digits.cnn,
}
PNGS = {"digits": ("loss.png", "confusion.png", "misclassified.png")}  # others: PNGS_DEFAULT
PNGS_DEFAULT = ("predictions.png", "loss.png")
CASES = [
    pytest.param("xor", [], "XOR Predictions after training", id="xor"),
    pytest.param("sine-mlp", [], "best validation MSE", id="sine-mlp"),
    pytest.param("sine-resnet", [], "best validation MSE", id="sine-resnet"),
    pytest.param("airfoil", ["--data", str(AIRFOIL)], "test RMSE of the best model",
                 id="airfoil-tutorial", marks=needs_airfoil),
    pytest.param("airfoil", ["--data", str(AIRFOIL), "--recipe", "better"],
                 "test RMSE of the best model", id="airfoil-better", marks=needs_airfoil),
    pytest.param("digits", [], "test accuracy of the best model by validation loss", id="digits"),
]


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -W error -m funcnn.examples ARGS`` with this checkout's funcnn first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [sys.executable, "-W", "error", "-m", "funcnn.examples", *args]
    return subprocess.run(command, check=False, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def _model_key(name: str, extra: list[str]) -> str:
    return "airfoil-better" if "better" in extra else name


def _check_outputs(folder: Path, model: fn.Layer, pngs=PNGS_DEFAULT) -> dict:
    params = fn.load(folder / "best.ckpt", like=model.init(0))  # raises unless structures match
    assert fn.tree.size(params) == fn.tree.size(model.init(0))
    metrics = json.loads((folder / "metrics.json").read_text())
    pngs = [folder / name for name in pngs]
    if plots.available():
        from matplotlib.image import imread

        for png in pngs:
            assert png.read_bytes()[:8] == PNG_MAGIC, png
            image = imread(png)  # a PNG that decodes to a picture, not an empty canvas
            assert image.ndim == 3 and min(image.shape[:2]) > 100, png
            assert image[..., :3].std() > 0.05, png
    else:
        assert not any(p.exists() for p in pngs)
    return metrics


# --- the command line -------------------------------------------------------------------


@pytest.mark.parametrize(("name", "extra", "expected"), CASES)
def test_cli_runs_each_example(tmp_path, name, extra, expected):
    out = tmp_path / "out"
    proc = _cli([name, *extra, "--epochs", "2", "--out", str(out), "--progress", "lines"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr  # (stderr may hold matplotlib's font-cache notice)
    assert expected in proc.stdout
    if name != "xor":
        assert "epoch 2/2" in proc.stdout  # fit's progress, one line per epoch
        assert "\r" not in proc.stdout  # no bar redraws when the output is not a terminal
    metrics = _check_outputs(out, MODELS[_model_key(name, extra)](), PNGS.get(name, PNGS_DEFAULT))
    assert metrics["epochs_run"] == 2


def test_cli_default_out_is_runs_example(tmp_path):
    proc = _cli(["sine-mlp", "--epochs", "1", "--progress", "silent", "--no-plots"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "epoch 1/1" not in proc.stdout  # silent: no progress lines, but the metrics
    assert "best validation MSE" in proc.stdout
    assert (tmp_path / "runs" / "sine-mlp" / "best.ckpt").exists()
    assert not (tmp_path / "runs" / "sine-mlp" / "loss.png").exists()


@pytest.mark.parametrize("argv", [
    [], ["nope"], ["xor", "--epochs", "0"], ["xor", "--epochs", "two"], ["xor", "--seed", "-1"],
    ["sine-mlp", "--progress", "loud"], ["sine-mlp", "--recipe", "better"],
    ["airfoil", "--recipe", "best"], ["airfoil", "--dropout", "0.1"], ["airfoil", "--batchnorm"],
])
def test_cli_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage: python -m funcnn.examples" in capsys.readouterr().err


def test_cli_reports_a_missing_data_file(tmp_path, capsys):
    code = main(["airfoil", "--data", str(tmp_path / "missing.dat"), "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "missing.dat" in err and "airfoil" in err
    assert "--data PATH" in err
    assert not (tmp_path / "best.ckpt").exists()


def test_cli_without_data_and_offline_names_the_data_flag(tmp_path, monkeypatch, capsys):
    def offline(url, *args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(fn.datasets.request, "urlopen", offline)
    monkeypatch.setenv("FUNCNN_DATA_DIR", str(tmp_path / "cache"))
    code = main(["airfoil", "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m funcnn.examples airfoil: airfoil: download from ")
    assert "network is unreachable" in err
    assert "give the path of a local copy (path= in Python, --data PATH on the command line)" in err
    assert "FUNCNN_DATA_DIR" in err and "pass path=" not in err


def test_cli_help_lists_every_example(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert all(name in text for name in examples.NAMES)


# --- in-process -------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["mlp", "resnet"])
def test_sine_in_process_keeps_and_saves_the_best(tmp_path, arch):
    out = io.StringIO()
    result = examples.run(f"sine-{arch}", epochs=4, seed=3, out=tmp_path, progress="silent",
                          stream=out)
    val = result.fit.history["val_loss"]
    assert len(val) == 4
    assert [m.loss for m in result.fit.best] == sorted(val)[:3]
    assert result.metrics["val_mse"] == pytest.approx(val.min(), rel=0, abs=0)
    assert f"{val.min():.4g}" in out.getvalue()
    assert "epoch" not in out.getvalue().split("\n", 1)[1].split("best validation")[0]
    saved = fn.load(tmp_path / "best.ckpt", like=MODELS[f"sine-{arch}"]().init(0))
    assert fn.tree.equal(saved, result.fit.best[0].params)
    model = MODELS[f"sine-{arch}"]()
    data = fn.datasets.sine(dtype=np.float32)
    assert fn.losses.mse(model.apply(saved, data.x_val), data.y_val) == result.metrics["val_mse"]
    _check_outputs(tmp_path, model)


def test_sine_same_seed_same_result_different_seed_different(tmp_path):
    runs = [examples.run("sine-mlp", epochs=2, seed=s, out=tmp_path / str(i), progress="silent",
                         plots=False, stream=io.StringIO()) for i, s in enumerate([5, 5, 6])]
    assert fn.tree.equal(runs[0].fit.params, runs[1].fit.params)
    assert not fn.tree.equal(runs[0].fit.params, runs[2].fit.params)


def _seed_xor_by_hand(epochs: int):
    """The seed's hand-written XOR training, verbatim but for the private RandomState."""
    def sigmoid(x):
        return 1 / (1 + np.exp(-x))

    def sigmoid_deriv(output):
        return output * (1 - output)

    X_xor = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    y_xor = np.array([[0], [1], [1], [0]], dtype=float)
    rs = np.random.RandomState(0)
    W1 = rs.randn(2, 2) * 0.5
    b1 = rs.randn(2) * 0.5
    W2 = rs.randn(2, 1) * 0.5
    b2 = rs.randn(1) * 0.5
    learning_rate = 0.1
    for _ in range(epochs):
        z1 = X_xor.dot(W1) + b1
        a1 = sigmoid(z1)
        z2 = a1.dot(W2) + b2
        y_pred = sigmoid(z2)
        error = y_xor - y_pred
        d_out = error * sigmoid_deriv(y_pred)
        grad_W2 = a1.T.dot(d_out)
        grad_b2 = np.sum(d_out, axis=0)
        error_hidden = d_out.dot(W2.T)
        d_hidden = error_hidden * sigmoid_deriv(a1)
        grad_W1 = X_xor.T.dot(d_hidden)
        grad_b1 = np.sum(d_hidden, axis=0)
        W2 += learning_rate * grad_W2
        b2 += learning_rate * grad_b2
        W1 += learning_rate * grad_W1
        b1 += learning_rate * grad_b1
    return sigmoid(sigmoid(X_xor.dot(W1) + b1).dot(W2) + b2).ravel(), (W1, b1, W2, b2)


def test_xor_reproduces_the_seeds_hand_written_training(tmp_path):
    epochs = 3000
    expected, (W1, _, _, b2) = _seed_xor_by_hand(epochs)
    result = examples.run("xor", epochs=epochs, out=tmp_path, progress="silent",
                          stream=io.StringIO())
    np.testing.assert_allclose(result.metrics["predictions"], expected, rtol=1e-10, atol=0)
    params = result.fit.best[0].params
    np.testing.assert_allclose(params["0"]["weight"], W1.T, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(params["2"]["bias"], b2, rtol=1e-10, atol=1e-14)
    assert result.metrics["correct"] == 0 or result.metrics["loss"] < 1.0


def test_xor_default_run_solves_xor_and_prints_like_the_seed(tmp_path):
    out = io.StringIO()
    result = examples.run("xor", out=tmp_path, progress="lines", plots=False, stream=out)
    assert result.metrics["correct"] == 4
    pred = np.array(result.metrics["predictions"])
    assert np.all(np.abs(pred - [0, 1, 1, 0]) < 0.1)
    text = out.getvalue()
    assert text.count("XOR Predictions in epoch") == 10
    losses = result.fit.history["train_loss"]
    assert len(losses) == 10000 and losses[-1] < losses[0]


def test_xor_loss_gradient_is_the_exact_one():
    pred = np.array([[0.2], [0.7], [0.9], [0.4]])
    target = np.array([[0.0], [1.0], [1.0], [0.0]])
    check_loss_grads(xor.half_sse, pred, target)
    assert xor.half_sse(pred, target) == pytest.approx(0.5 * np.sum((pred - target) ** 2))


@needs_airfoil
def test_airfoil_better_checkpoint_and_standardizer_reproduce_the_test_rmse(tmp_path):
    result = examples.run("airfoil", recipe="better", data=AIRFOIL, epochs=3, seed=1,
                          out=tmp_path, progress="silent", plots=False, stream=io.StringIO())
    model = airfoil.better_model()
    params = fn.load(tmp_path / "best.ckpt", like=model.init(0))
    stats = fn.load(tmp_path / "standardizer.ckpt")
    x, y = fn.datasets.airfoil(AIRFOIL)
    _, _, (x_test, y_test) = fn.data.split(fn.random.split(1, 3)[0], x, y)
    z = model.apply(params, fn.data.standardize(stats["x"], airfoil.better_features(x_test)))
    pred = fn.data.unstandardize(stats["y"], z.astype(np.float64))
    rmse = float(np.sqrt(np.mean((pred - y_test) ** 2)))
    assert rmse == pytest.approx(result.metrics["test_rmse_db"], rel=1e-6)
    assert len(x_test) == 452  # the seed's 50/20/30 split of 1503 rows: 751/300/452


@needs_airfoil
def test_airfoil_batchnorm_and_dropout_save_the_state_that_reproduces_the_test_rmse(tmp_path):
    result = examples.run("airfoil", recipe="better", data=AIRFOIL, epochs=3, seed=1, out=tmp_path,
                          progress="silent", plots=False, stream=io.StringIO(), dropout=0.2,
                          batchnorm=True)
    model = airfoil.better_model(dropout=0.2, batchnorm=True)
    assert [layer.name for layer in model.children][:3] == ["Linear(5 -> 128)", "BatchNorm(128)", "ReLU()"]
    assert sum(layer.name == "Dropout(rate=0.2)" for layer in model.children) == airfoil.BETTER_BLOCKS
    params = fn.load(tmp_path / "best.ckpt", like=model.init(0))
    state = fn.load(tmp_path / "best.state.ckpt", like=model.init_state())
    assert int(state["1"]["num_batches_tracked"]) == 24 * result.fit.best[0].epoch
    stats = fn.load(tmp_path / "standardizer.ckpt")
    x, y = fn.datasets.airfoil(AIRFOIL)
    _, _, (x_test, y_test) = fn.data.split(fn.random.split(1, 3)[0], x, y)
    z, _ = model.apply(params, fn.data.standardize(stats["x"], airfoil.better_features(x_test)), state=state)
    pred = fn.data.unstandardize(stats["y"], z.astype(np.float64))
    assert float(np.sqrt(np.mean((pred - y_test) ** 2))) == pytest.approx(result.metrics["test_rmse_db"], rel=1e-6)
    assert result.metrics["dropout"] == 0.2 and result.metrics["batchnorm"] is True


@needs_airfoil
def test_airfoil_tutorial_recipe_uses_the_tutorials_settings(tmp_path):
    out = io.StringIO()
    result = examples.run("airfoil", data=AIRFOIL, epochs=2, out=tmp_path, progress="silent",
                          plots=False, stream=out)
    assert "batch 16, adam lr 0.001 weight_decay 1e-06" in out.getvalue()
    assert "split 751/300/452" in out.getvalue()
    assert fn.tree.size(result.fit.params) == fn.tree.size(airfoil.seed_model().init(0))
    assert math.isfinite(result.metrics["test_rmse_db"])
    assert result.metrics["baseline_test_rmse_db"] > 5.0


def _digits_run(tmp_path, **options):
    out = io.StringIO()
    options = {"epochs": 2, "seed": 0, "out": tmp_path, "progress": "silent", "plots": False,
               "stream": out, **options}
    return examples.run("digits", **options), out.getvalue()


def test_digits_checkpoint_and_state_reproduce_the_printed_test_accuracy(tmp_path):
    result, text = _digits_run(tmp_path, epochs=3, seed=1)
    model = digits.cnn()
    params = fn.load(tmp_path / "best.ckpt", like=model.init(0))
    state = fn.load(tmp_path / "best.state.ckpt", like=model.init_state())
    best = result.fit.best[0]
    assert best.loss == min(result.fit.history["val_loss"])  # the best by validation loss
    assert int(state["1"]["num_batches_tracked"]) == 34 * best.epoch  # 1085 images in 34 batches
    x_test, y_test = fn.datasets.digits("test")
    logits, _ = model.apply(params, x_test, state=state)  # evaluation mode
    predicted = logits.argmax(axis=-1)
    correct = int(np.sum(predicted == y_test))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test_accuracy"] == correct / 355 == result.metrics["test_accuracy"]
    assert f"(epoch {best.epoch}): {100 * correct / 355:.2f}% ({correct}/355;" in text
    assert metrics["split"] == {"train": 1085, "val": 357, "test": 355}
    assert "fixed split 1085/357/355 (train/val/test)" in text
    counts = np.array(metrics["confusion"])
    assert counts.sum() == 355 and np.trace(counts) == correct
    assert np.array_equal(counts.sum(axis=1), np.bincount(y_test, minlength=10))
    wrong = metrics["misclassified"]
    assert [w["test_index"] for w in wrong] == np.flatnonzero(predicted != y_test).tolist()
    assert all(w["predicted"] == predicted[w["test_index"]] != w["label"] for w in wrong)
    curves = metrics["accuracy_per_epoch"]
    assert len(curves["train"]) == len(curves["validation"]) == 3
    assert curves["validation"][best.epoch - 1] == metrics["val_accuracy"]
    assert len(result.fit.best) == 3  # every epoch's model, for the accuracy curves
    assert [k["epoch"] for k in metrics["best_k"]] == [m.epoch for m in result.fit.best[:3]]
    assert set(result.files) == {"checkpoint", "metrics", "state"}  # plots=False


def test_digits_same_seed_same_result_different_seed_different(tmp_path):
    runs = [_digits_run(tmp_path / str(i), epochs=1, seed=s)[0] for i, s in enumerate([5, 5, 6])]
    assert fn.tree.equal(runs[0].fit.params, runs[1].fit.params)
    assert fn.tree.equal(runs[0].fit.state, runs[1].fit.state)
    assert runs[0].metrics["test_accuracy"] == runs[1].metrics["test_accuracy"]
    assert not fn.tree.equal(runs[0].fit.params, runs[2].fit.params)


def test_digits_default_recipe_learns_quickly(tmp_path):
    """The recipe (schedule squeezed into 6 epochs) already gets most digits right; a
    broken layer, loss, split or lr schedule would not."""
    result, _ = _digits_run(tmp_path, epochs=6)
    history = result.fit.history
    assert history["val_loss"][-1] < 0.2 < history["train_loss"][0]
    assert result.metrics["val_accuracy"] >= 0.95
    assert result.metrics["test_accuracy"] >= 0.95


@pytest.mark.parametrize(("dtype", "rel"), [(np.float64, 1e-12), (np.float32, 1e-4)],
                         ids=["float64", "float32"])
def test_digits_torch_twin_is_the_same_computation(dtype, rel):
    """benchmarks/quality/digits_twin.py (docs/quality.md's twin) runs funcnn's algorithm:
    from the same init, on the same batches with the same dropout masks, its validation
    loss after an epoch equals funcnn's to rounding (float64) or nearly (float32)."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(REPO / "benchmarks" / "quality"))
    try:
        import digits_twin
    finally:
        sys.path.pop(0)
    threads = torch.get_num_threads()
    try:
        theirs = digits_twin.train(seed=3, epochs=1, dtype=dtype)["val_loss_per_epoch"]
    finally:
        torch.set_num_threads(threads)  # train() sets one thread
    model = digits.cnn(dtype=dtype)
    init_key, fit_key = fn.random.split(3)
    train = fn.datasets.digits("train", dtype=dtype)
    ours = fn.fit(model, fn.losses.softmax_cross_entropy, digits.optimizer(1, 34),
                  model.init(init_key), train, val=fn.datasets.digits("val", dtype=dtype), epochs=1,
                  batch_size=32, key=fit_key, state=model.init_state(),
                  progress="silent").history["val_loss"]
    assert ours[0] == pytest.approx(theirs[0], rel=rel)


def test_ctrl_c_keeps_the_best_model_so_far(tmp_path, monkeypatch, capsys):
    real_adam = fn.optim.adam

    def adam_interrupted_in_epoch_3(*args, **kwargs):
        opt, calls = real_adam(*args, **kwargs), []

        def update(grads, state, params):
            calls.append(1)
            if len(calls) == 2 * 79 + 5:  # 79 batches of 64 per epoch
                raise KeyboardInterrupt
            return opt.update(grads, state, params)

        return fn.optim.Optimizer(opt.init, update)

    monkeypatch.setattr(fn.optim, "adam", adam_interrupted_in_epoch_3)
    code = main(["sine-mlp", "--epochs", "10", "--out", str(tmp_path), "--progress", "lines"])
    assert code == 130
    text = capsys.readouterr().out
    assert "interrupted in epoch 3" in text and "best validation MSE" in text
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["stop_reason"] == "interrupted" and metrics["epochs_run"] == 2
    fn.load(tmp_path / "best.ckpt", like=sine.mlp().init(0))


def test_recipe_seed_is_a_deprecated_alias_of_tutorial_on_the_cli(monkeypatch, capsys):
    calls = []

    def fake_run(name, **options):
        calls.append((name, options))
        return examples.ExampleResult({"stop_reason": None}, None, {})

    monkeypatch.setattr("funcnn.examples.__main__.run", fake_run)
    assert main(["airfoil", "--recipe", "seed", "--no-plots"]) == 0
    assert calls[-1][1]["recipe"] == "tutorial"
    assert ("python -m funcnn.examples airfoil: --recipe seed is deprecated; it is now "
            "--recipe tutorial (the same recipe)") in capsys.readouterr().err
    assert main(["airfoil"]) == 0 and calls[-1][1]["recipe"] == "tutorial"  # the default
    assert "deprecated" not in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["airfoil", "--help"])
    usage = capsys.readouterr().out
    assert "--recipe {tutorial,better}" in usage and "seed, its old name, is deprecated" in usage


def test_recipe_seed_is_a_deprecated_alias_of_tutorial_in_python(tmp_path):
    warns = pytest.warns(DeprecationWarning,
                         match="airfoil: recipe 'seed' is now called 'tutorial'; 'seed' will be removed")
    with warns, pytest.raises(fn.errors.DatasetError, match="missing.dat"):  # the data: after
        examples.run("airfoil", recipe="seed", data=tmp_path / "missing.dat", out=tmp_path)


@needs_airfoil
def test_recipe_seed_still_trains_the_tutorial_recipe(tmp_path):
    out = tmp_path / "out"
    proc = _cli(["airfoil", "--data", str(AIRFOIL), "--recipe", "seed", "--epochs", "1",
                 "--out", str(out), "--progress", "silent", "--no-plots"], tmp_path)
    assert proc.returncode == 0, proc.stderr  # and no Python warning: -W error is on
    assert "--recipe seed is deprecated" in proc.stderr
    assert "airfoil (tutorial recipe)" in proc.stdout
    fn.load(out / "best.ckpt", like=airfoil.seed_model().init(0))
    assert json.loads((out / "metrics.json").read_text())["recipe"] == "tutorial"


@pytest.mark.parametrize(("name", "progress_line"), [
    ("sine-mlp", r"^epoch +2/"),  # fit's loop
    ("xor", r"^XOR Predictions in epoch 1000:"),  # xor's own loop
])
def test_ctrl_c_in_a_real_process_exits_130_and_keeps_the_best(tmp_path, name, progress_line):
    """SIGINT, as Ctrl-C sends it, to a real ``python -m funcnn.examples`` mid-training."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    out = tmp_path / "out"
    command = [sys.executable, "-W", "error", "-m", "funcnn.examples", name, "--epochs", "1000000",
               "--out", str(out), "--progress", "lines", "--no-plots"]
    with subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        watchdog = threading.Timer(300, proc.kill)  # a test that fails must not hang
        watchdog.start()
        seen = []
        for line in proc.stdout:  # wait until training is under way, then press Ctrl-C
            seen.append(line)
            if re.match(progress_line, line):
                proc.send_signal(signal.SIGINT)
                break
        stdout, stderr = proc.communicate()
        watchdog.cancel()
    text = "".join(seen) + stdout
    assert re.search(progress_line, text, re.M), text + stderr
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stop_reason"] == "interrupted" and metrics["epochs_run"] >= 2
    fn.load(out / "best.ckpt", like=MODELS[name]().init(0))


def test_without_matplotlib_the_example_says_so_and_still_trains(tmp_path, monkeypatch):
    for module in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert not plots.available()
    out = io.StringIO()
    result = examples.run("sine-mlp", epochs=1, out=tmp_path, progress="silent", stream=out)
    assert plots.MISSING in out.getvalue()
    expected = "matplotlib is not installed (pip install 'funcnn[plot]'); skipping plots"
    assert expected in out.getvalue()
    assert (tmp_path / "best.ckpt").exists() and not (tmp_path / "loss.png").exists()
    assert set(result.files) == {"checkpoint", "metrics"}


def test_unknown_example_and_options_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown example 'sine'.*sine-mlp"):
        examples.run("sine")
    with pytest.raises(ValueError, match="recipe must be one of"):
        examples.run("airfoil", recipe="fast", out=tmp_path)
    with pytest.raises(ValueError, match="progress must be one of"):
        examples.run("xor", progress="loud", out=tmp_path)
