"""``fn.fit(..., comm=...)`` under ``mpiexec -n 2`` and ``-n 3``: the one-process run, the
same params on every rank, rank-0-only output and files, resume on another rank count,
BatchNorm per-rank and synced, Dropout. MPI is part of the test extra: a missing
mpiexec fails these tests (see tests/test_distributed.py for the launcher)."""

import pathlib

import numpy as np
import pytest
from helpers.fit_mpi_program import flat_result, run, run_sharded
from test_distributed import mpiexec, run_mpi  # noqa: F401 -- the fixture and the launcher

import funcnn as fn

PROGRAM = pathlib.Path(__file__).resolve().parent / "helpers" / "fit_mpi_program.py"


def ranks_results(folder, n):
    return [dict(np.load(folder / f"rank{r}.npz")) for r in range(n)]


def assert_bitwise_same_on_every_rank(results):
    for other in results[1:]:
        assert other.keys() == results[0].keys()
        for key in results[0]:
            assert np.array_equal(other[key], results[0][key]), key


def assert_is_the_one_process_run(got, want, rtol=1e-10):
    for key, value in fn.tree.flatten(want.params).items():
        np.testing.assert_allclose(got[f"params.{key}"], value, rtol=rtol, atol=1e-13, err_msg=key)
    for name in ("train_loss", "val_loss", "lr", "lr_scale"):
        np.testing.assert_allclose(got[f"history.{name}"], want.history[name], rtol=rtol, err_msg=name)
    assert str(got["stop_reason"]) == str(want.stop_reason)


@pytest.mark.parametrize("ranks", [2, 3])
def test_fit_on_n_ranks_is_the_one_process_run(mpiexec, tmp_path, ranks):
    out = run_mpi(mpiexec, ranks, [PROGRAM, "mlp", tmp_path], tmp_path)
    results = ranks_results(tmp_path, ranks)
    assert_bitwise_same_on_every_rank(results)
    assert_is_the_one_process_run(results[0], run("mlp", None))
    # rank 0 alone prints and writes
    assert out.count("epoch 1/4") == 1 and out.count("epoch 4/4") == 1
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["best-1.ckpt", "best-2.ckpt", "latest.ckpt", "metrics.jsonl"]
    assert len((tmp_path / "ckpt" / "metrics.jsonl").read_text().splitlines()) == 4


def test_a_checkpoint_of_3_ranks_resumes_on_2_as_the_same_run(mpiexec, tmp_path):
    run_mpi(mpiexec, 3, [PROGRAM, "mlp", tmp_path, "--stop-after", 15], tmp_path)  # mid-epoch 3
    stopped = ranks_results(tmp_path, 3)
    assert all(str(r["stop_reason"]) == "interrupted" for r in stopped)
    out = run_mpi(mpiexec, 2, [PROGRAM, "mlp", tmp_path, "--resume"], tmp_path)
    assert "resuming from" in out and "in epoch 3 after 2 of 6 batches" in out
    results = ranks_results(tmp_path, 2)
    assert_bitwise_same_on_every_rank(results)
    assert_is_the_one_process_run(results[0], run("mlp", None))


def test_synced_batchnorm_is_the_one_process_batchnorm(mpiexec, tmp_path):
    run_mpi(mpiexec, 3, [PROGRAM, "syncbn", tmp_path], tmp_path)
    results = ranks_results(tmp_path, 3)
    assert_bitwise_same_on_every_rank(results)
    want = run("syncbn", None)  # sync=None in one process: plain BatchNorm
    # atol 1e-8: the bias of the Linear before the BatchNorm has a zero gradient, so it
    # (and the running mean it shifts) only holds rounding noise, 1e-10, that differs
    got = results[0]
    for prefix, tree_ in (("params", want.params), ("state", want.state)):
        for key, value in fn.tree.flatten(tree_).items():
            np.testing.assert_allclose(got[f"{prefix}.{key}"], value, rtol=1e-9, atol=1e-8, err_msg=key)
    for name in ("train_loss", "val_loss"):
        np.testing.assert_allclose(got[f"history.{name}"], want.history[name], rtol=1e-9, err_msg=name)


@pytest.mark.parametrize("kind", ["bn", "dropout"])
def test_per_rank_batchnorm_and_dropout_agree_on_every_rank(mpiexec, tmp_path, kind):
    run_mpi(mpiexec, 2, [PROGRAM, kind, tmp_path], tmp_path)
    results = ranks_results(tmp_path, 2)
    assert_bitwise_same_on_every_rank(results)  # running statistics averaged: equal everywhere
    one = run(kind, None)
    assert np.all(np.isfinite(results[0]["history.val_loss"]))
    # per-rank statistics and per-rank masks: a different run than one process, but a run
    assert not np.allclose(results[0]["params.0.weight"], one.params["0"]["weight"], rtol=1e-10)


def test_an_error_on_one_rank_is_raised_on_every_rank_without_a_hang(mpiexec, tmp_path):
    out = run_mpi(mpiexec, 2, [PROGRAM, "bn-short", tmp_path], tmp_path)
    assert ("rank 1: ShapeError: serial[1] BatchNorm(8): expected more than 1 value per channel "
            "when training") in out
    assert "rank 0: DistributedError: a training step failed on rank 1: ShapeError" in out


def test_ctrl_c_on_mpiexec_leaves_a_resumable_checkpoint(mpiexec, tmp_path):
    """SIGINT to mpiexec (what Ctrl-C sends), mid-training; then a resume on 3 ranks
    finishes the run as if it had never stopped."""
    import os
    import signal
    import subprocess
    import sys

    from test_distributed import ENV, TIMEOUT

    cmd = [mpiexec, "-n", "2", sys.executable, str(PROGRAM), "long", str(tmp_path), "200"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdin=subprocess.DEVNULL, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines = []
    try:
        for line in proc.stdout:  # wait until training is under way
            lines.append(line)
            if line.split()[:2] == ["epoch", "2/200"]:
                break
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = "".join(lines) + rest
    assert "rank 0 interrupted" in out and "returning what was trained so far (saved to" in out
    latest = fn.load(tmp_path / "ckpt" / "latest.ckpt")
    done = int(latest["progress"]["epoch"])
    assert done >= 2
    resumed = run_mpi(mpiexec, 3, [PROGRAM, "long", tmp_path, done + 1], tmp_path)
    assert "resuming from" in resumed and "rank 0 None" in resumed
    want = run("mlp", None, epochs=done + 1, rows=3000)
    got = np.load(tmp_path / "final.npz")
    for key, value in fn.tree.flatten(want.params).items():
        np.testing.assert_allclose(got[key], value, rtol=1e-9, atol=1e-12, err_msg=key)


# --- the sharded update: element-wise optimizers update 1/N of the params on each rank ------

def assert_close_trees(got: dict, want: dict, prefix: str, rtol=1e-10):
    keys = [k for k in want if k.startswith(prefix)]
    assert keys and sorted(k for k in got if k.startswith(prefix)) == sorted(keys)
    for k in keys:
        np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=1e-13, err_msg=k)


def one_process(name, folder, width=8, epochs=5, batch_size=10):
    result, calls = run_sharded(name, None, folder, width=width, epochs=epochs,
                                batch_size=batch_size)
    assert calls == 0
    return flat_result(result), fn.load(folder / "latest.ckpt")


@pytest.mark.parametrize("name, ranks, width", [
    ("adam", 2, 8),            # 41 params: 20 + 21, the last rank's tail by Bcast
    ("adam", 3, 9),            # 46 params: 15 + 15 + 16
    ("adam", 2, 9),            # 46 params: 23 + 23, no tail
    ("adamw-mask", 3, 8),
    ("sgd-nesterov", 2, 8),
    ("rmsprop", 3, 8),
])
def test_sharded_fit_is_the_one_process_run_with_the_full_state(mpiexec, tmp_path, name, ranks,
                                                                  width):
    run_mpi(mpiexec, ranks, [PROGRAM, "sharded", name, tmp_path, width], tmp_path)
    results = ranks_results(tmp_path, ranks)
    assert_bitwise_same_on_every_rank(results)  # params, full opt_state and history
    steps = 5 * 6
    assert [int(r["range_updates"]) for r in results] == [steps] * ranks  # the sharded path ran
    want, want_ckpt = one_process(name, tmp_path / "one", width)
    for prefix in ("params.", "opt_state.", "history."):
        assert_close_trees(results[0], want, prefix)
    assert results[0]["history.lr_scale"].min() < 1  # lr_on_plateau scaled some updates
    # the checkpoint rank 0 wrote holds every rank's range of the state, not a stale one
    got_ckpt = fn.load(tmp_path / "ckpt" / "latest.ckpt")
    assert_close_trees(fn.tree.flatten(got_ckpt["opt_state"]),
                       fn.tree.flatten(want_ckpt["opt_state"]), "")


def test_sharded_fit_with_a_rank_without_rows(mpiexec, tmp_path):
    """Batches of 2 rows on 3 ranks: rank 2 never has rows and adds zeros to the
    Reduce_scatter (its range of the update still runs)."""
    run_mpi(mpiexec, 3, [PROGRAM, "sharded", "adam", tmp_path, 8, "--batch", 2], tmp_path)
    results = ranks_results(tmp_path, 3)
    assert_bitwise_same_on_every_rank(results)
    assert [int(r["range_updates"]) for r in results] == [5 * 27] * 3
    want, _ = one_process("adam", tmp_path / "one", batch_size=2)
    for prefix in ("params.", "opt_state.", "history."):
        assert_close_trees(results[0], want, prefix)


def test_a_non_elementwise_optimizer_falls_back_to_the_whole_update(mpiexec, tmp_path):
    run_mpi(mpiexec, 2, [PROGRAM, "sharded", "clip-adam", tmp_path, 8], tmp_path)
    results = ranks_results(tmp_path, 2)
    assert_bitwise_same_on_every_rank(results)
    assert [int(r["range_updates"]) for r in results] == [0, 0]
    want, _ = one_process("clip-adam", tmp_path / "one")
    for prefix in ("params.", "opt_state.", "history."):
        assert_close_trees(results[0], want, prefix)


@pytest.mark.parametrize("resume_ranks", [3, 1])
def test_a_sharded_checkpoint_of_2_ranks_resumes_on_another_count(mpiexec, tmp_path, resume_ranks):
    """Stopped mid-epoch 3 (the schedule raises KeyboardInterrupt at update 15 on every rank),
    resumed on 3 ranks (sharded again, other ranges) and on 1: the uninterrupted one-process
    run. A checkpoint with a stale range of mu/nu would give another trajectory."""
    run_mpi(mpiexec, 2, [PROGRAM, "sharded", "adam", tmp_path, 8, "--stop-at", 15], tmp_path)
    stopped = ranks_results(tmp_path, 2)
    assert [str(r["stop_reason"]) for r in stopped] == ["interrupted"] * 2
    saved = fn.load(tmp_path / "ckpt" / "latest.ckpt")
    assert int(saved["opt_state"]["step"]) == 14
    out = run_mpi(mpiexec, resume_ranks, [PROGRAM, "sharded", "adam", tmp_path, 8, "--resume"],
                  tmp_path)
    assert "resuming from" in out
    results = ranks_results(tmp_path, resume_ranks)
    assert_bitwise_same_on_every_rank(results)
    assert [int(r["range_updates"]) for r in results] == [30 - 14 if resume_ranks > 1 else 0] * resume_ranks
    want, _ = one_process("adam", tmp_path / "one")
    for prefix in ("params.", "opt_state.", "history."):
        assert_close_trees(results[0], want, prefix, rtol=1e-9)
