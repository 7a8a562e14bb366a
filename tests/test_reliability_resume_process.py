"""Resume across real process restarts: kill or Ctrl-C a training process, start it again
with resume=True, and get the uninterrupted run's final params bit for bit.

tests/test_train.py covers resume within one process, with the interrupt raised from the
optimizer (between batches). Here the interrupts are real signals at random moments
(SIGKILL: resume from the last finished epoch; SIGINT: fit saves where it stopped), and,
in-process, a Ctrl-C at every save of the end-of-epoch checkpoint and while the epoch's
progress line is written: the moments when an epoch is recorded but not yet saved.
"""

from __future__ import annotations

import io
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers.reliability import report

import funcnn as fn
import funcnn.train

HELPER = pathlib.Path(__file__).resolve().parent / "helpers" / "fit_process.py"
REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
COUNTS = {"processes": 0, "sigkill": 0, "sigint": 0, "sigint_mid_epoch": 0,
          "sigint_at_epoch_end": 0, "in_process_interrupts": 0}


def start(folder: pathlib.Path, out: pathlib.Path, resume: bool) -> subprocess.Popen:
    COUNTS["processes"] += 1
    args = [sys.executable, str(HELPER), str(folder), str(out)] + (["--resume"] if resume else [])
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, list[str]]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out.splitlines() + err.splitlines()


def wait_for_epoch_lines(proc: subprocess.Popen, n: int) -> None:
    seen = 0
    while seen < n:
        line = proc.stdout.readline()
        assert line, f"the process ended early: {proc.wait()} {proc.stderr.read()}"
        seen += line.startswith("epoch")


def assert_bitwise(got, want) -> None:
    flat_got, flat_want = fn.tree.flatten(got), fn.tree.flatten(want)
    assert list(flat_got) == list(flat_want)
    for key, w in flat_want.items():
        g = flat_got[key]
        assert g.dtype == w.dtype and g.shape == w.shape and g.tobytes() == w.tobytes(), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    code, lines = finish(start(folder / "ckpt", folder / "out", resume=False))
    assert code == 0 and lines[-1] == "done None", lines
    yield fn.load(folder / "out")
    report("resume_process", **COUNTS)


# (signal, epoch lines to wait for, delay after the last one). An epoch takes ~40 ms of
# batches (4096 samples with the compiled fast path), then ~50 ms of checkpointing; the
# delays spread the signals over both.
PLANS = {
    "sigkill-1": [("SIGKILL", 1, None)],
    "sigkill-3": [("SIGKILL", 3, None)],
    "sigkill-5": [("SIGKILL", 5, None)],
    "sigint-0ms": [("SIGINT", 1, 0.0)],
    "sigint-20ms": [("SIGINT", 2, 0.02)],
    "sigint-40ms": [("SIGINT", 3, 0.04)],
    "sigint-60ms": [("SIGINT", 4, 0.06)],
    "sigint-80ms": [("SIGINT", 5, 0.08)],
    "chain-kill-int-kill": [("SIGKILL", 2, None), ("SIGINT", 2, 0.03), ("SIGKILL", 2, None)],
}


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("plan", list(PLANS))
def test_resume_after_real_kills_equals_the_uninterrupted_run(reference, tmp_path, plan):
    rng = random.Random(plan)
    folder, out = tmp_path / "ckpt", tmp_path / "out"
    for i, (name, epochs, delay) in enumerate(PLANS[plan]):
        proc = start(folder, out, resume=i > 0)
        wait_for_epoch_lines(proc, epochs)
        time.sleep(rng.uniform(0.0, 0.1) if delay is None else delay)
        proc.send_signal(getattr(signal, name))
        code, lines = finish(proc)
        if name == "SIGKILL":
            COUNTS["sigkill"] += 1
            assert code == -signal.SIGKILL, lines
        else:
            COUNTS["sigint"] += 1
            assert code in (0, 130) and lines[-1].startswith("done "), lines
            if lines[-1] == "done interrupted":
                latest = fn.load(folder / funcnn.train.LATEST)
                mid = int(latest["progress"]["batch"]) > 0
                COUNTS["sigint_mid_epoch" if mid else "sigint_at_epoch_end"] += 1
        assert not out.exists()
    code, lines = finish(start(folder, out, resume=True))
    assert code == 0 and lines[-1] == "done None", lines
    assert_bitwise(fn.load(out), reference)


# --- Ctrl-C at the end-of-epoch moments, in process ------------------------------------


def small_run(**kwargs):
    x = fn.random.uniform(0, (96, 1), 0.0, 6.0)
    xv = fn.random.uniform(1, (32, 1), 0.0, 6.0)
    model = fn.serial(fn.Linear(1, 8, dtype=np.float64), fn.Tanh(), fn.Linear(8, 1, dtype=np.float64))
    options = {"val": (xv, np.sin(xv)), "epochs": 3, "batch_size": 16, "key": 5, "progress": "silent"}
    options.update(kwargs)
    return fn.fit(model, fn.losses.mse, fn.optim.adam(0.01), model.init(2), (x, np.sin(x)), **options)


def assert_same_run(got, want):
    assert fn.tree.equal(got.params, want.params) and fn.tree.equal(got.opt_state, want.opt_state)
    for name in ("train_loss", "val_loss", "lr"):
        np.testing.assert_array_equal(got.history[name], want.history[name])
    assert [(m.loss, m.epoch) for m in got.best] == [(m.loss, m.epoch) for m in want.best]


def test_ctrl_c_during_every_checkpoint_save_resumes_bit_exact(tmp_path, monkeypatch):
    """fit saves best-1..3 and latest after each epoch; Ctrl-C in any of those saves."""
    full = small_run()
    real_save = funcnn.train.save
    saves_per_epoch = 4  # 3 best + latest, once 3 epochs are kept
    for k in range(1, 2 * saves_per_epoch + 1):

        calls: list = []  # the saves of this k's run

        def interrupting_save(path, tree, k=k, calls=calls):
            calls.append(path)
            if len(calls) == k:
                raise KeyboardInterrupt
            return real_save(path, tree)

        folder = tmp_path / f"k{k}"
        monkeypatch.setattr(funcnn.train, "save", interrupting_save)
        first = small_run(checkpoint_dir=folder)
        monkeypatch.setattr(funcnn.train, "save", real_save)
        assert first.stop_reason == "interrupted"
        resumed = small_run(checkpoint_dir=folder, resume=True)
        assert resumed.stop_reason is None
        assert_same_run(resumed, full)
        assert len(resumed.history["train_loss"]) == 3, k
        COUNTS["in_process_interrupts"] += 1


def test_ctrl_c_while_the_progress_line_is_written_resumes_bit_exact(tmp_path):
    full = small_run()
    for epoch_line in (1, 2):

        class InterruptingStream(io.StringIO):
            """Ctrl-C while the ``epoch_line``-th progress line is written."""

            lines = 0

            def write(self, text, at=epoch_line):
                if text.startswith("epoch"):
                    self.lines += 1
                    if self.lines == at:
                        raise KeyboardInterrupt
                return super().write(text)

        folder = tmp_path / f"line{epoch_line}"
        first = small_run(checkpoint_dir=folder, progress="lines", stream=InterruptingStream())
        assert first.stop_reason == "interrupted"
        assert len(first.history["train_loss"]) == epoch_line  # the epoch is recorded...
        resumed = small_run(checkpoint_dir=folder, resume=True)  # ...and not trained again
        assert_same_run(resumed, full)
        COUNTS["in_process_interrupts"] += 1
