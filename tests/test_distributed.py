"""fn.distributed: data-parallel pieces, tested in one process (comm=None, bad arguments)
and for real under ``mpiexec -n 2`` and ``-n 3`` (the programs in helpers/mpi_programs.py).

MPI is part of the test extra (funcnn[mpi]: mpi4py + the MPICH wheel, whose mpiexec lands
beside the Python executable): a test environment without it fails here, it is not skipped.
"""

import itertools
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from helpers.mpi_programs import train_bn_loop, train_loop
from hypothesis import given
from hypothesis import strategies as st

import funcnn as fn
from funcnn.errors import MPIUnavailableError

dist = fn.distributed
REPO = pathlib.Path(__file__).resolve().parents[1]
PROGRAMS = REPO / "tests" / "helpers" / "mpi_programs.py"
TIMEOUT = 120  # seconds per mpiexec run; a hang fails the test instead of the suite
ENV = {
    **os.environ,
    "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    # one BLAS thread per rank: 3 ranks share 2 cores
    "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    # a system Open MPI (see docs/scaling.md) refuses root and 3 ranks on 2 cores without these
    "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
}


# --- one process ------------------------------------------------------------------------


@given(rows=st.integers(0, 200), ranks=st.integers(1, 70))
def test_shards_cover_every_row_once_contiguously_evenly(rows, ranks):
    pieces = dist.shards(rows, ranks)
    assert len(pieces) == ranks
    assert pieces[0].start == 0 and pieces[-1].stop == rows
    for a, b in itertools.pairwise(pieces):
        assert a.stop == b.start  # contiguous, in rank order: every row exactly once
    sizes = [p.stop - p.start for p in pieces]
    assert min(sizes) >= 0 and max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)  # the extra rows go to the first ranks
    assert sum(sizes) == rows


@pytest.mark.parametrize("args, error, match", [
    ((-1, 2), ValueError, "num_rows must be >= 0, got -1"),
    ((4, 0), ValueError, "num_ranks must be >= 1, got 0"),
    ((4.0, 2), TypeError, "num_rows must be an int, got float 4.0"),
    ((4, True), TypeError, "num_ranks must be an int, got bool True"),
])
def test_shards_rejects_bad_counts(args, error, match):
    with pytest.raises(error, match=re.escape(match)):
        dist.shards(*args)


def test_one_process_is_comm_none():
    params = fn.Linear(2, 3).init(0)
    grads = fn.tree.map(np.ones_like, params)
    f = fn.value_and_grad(fn.Linear(2, 3), fn.losses.mse)
    assert dist.shard(5, None) == slice(0, 5)
    assert (dist.rank(None), dist.num_ranks(None), dist.is_root(None)) == (0, 1, True)
    assert dist.allreduce_grads(grads, 4, 4, None) is grads
    zeros = dist.allreduce_grads(None, 0, 4, None, like=params)
    assert all(np.array_equal(z, np.zeros_like(p)) for z, p in
               zip(fn.tree.leaves(zeros), fn.tree.leaves(params)))
    assert dist.allreduce_mean(0.25, 2, 4, None) == 0.25
    assert dist.data_parallel(f, None) is f
    assert dist.broadcast_params(params, None) is params
    assert dist.check_same({"x": np.ones(3), "lr": 0.1, "name": "a"}, None) is None
    assert dist.on_root(None, lambda a, b=0: a + b, 1, b=2) == 3
    np.testing.assert_array_equal(dist.rank_key(5, None), fn.random.fold_in(5, 0))


def test_one_process_never_imports_mpi4py():
    code = ("import sys, numpy as np, funcnn as fn; d = fn.distributed\n"
            "p = fn.Linear(2, 2).init(0)\n"
            "d.allreduce_grads(p, 1, 1, None); d.broadcast_params(p, None); d.check_same(p, None)\n"
            "d.on_root(None, print, 'x'); d.shard(3, None); d.rank_key(0, None)\n"
            "assert not any(m.startswith('mpi4py') for m in sys.modules)\n"
            "try:\n    d.require_comm('world')\nexcept TypeError:\n    pass\n"
            "assert 'mpi4py.MPI' not in sys.modules  # a wrong comm does not start MPI\n")
    done = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("comm, got", [
    ("world", "got str 'world'"),
    (1, "got int 1"),
    (object, "got type <class 'object'>"),
])
def test_wrong_comm_says_what_a_comm_is(comm, got):
    with pytest.raises(TypeError, match="comm must be an mpi4py intracommunicator such as "
                                        r"MPI\.COMM_WORLD \(from mpi4py import MPI\), or None "
                                        f"for one process; {re.escape(got)}"):
        dist.shard(4, comm)


def test_comm_without_mpi4py_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now raises ImportError
    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)
    for call in (lambda: dist.require_comm("world"), lambda: dist.check_same({}, 1),
                 lambda: dist.allreduce_grads({}, 1, 1, object())):
        with pytest.raises(MPIUnavailableError, match=re.escape('pip install "funcnn[mpi]"')):
            call()
    assert issubclass(MPIUnavailableError, ImportError)


@pytest.mark.parametrize("call, error, match", [
    (lambda: dist.allreduce_grads({}, 5, 4, None), ValueError,
     "allreduce_grads: rows_on_rank=5 is more than rows_in_batch=4"),
    (lambda: dist.allreduce_grads({}, 0, 0, None), ValueError,
     "allreduce_grads: rows_in_batch must be >= 1, got 0"),
    (lambda: dist.allreduce_grads(None, 0, 4, None), ValueError,
     "grads is None with rows_on_rank=0; pass like=params"),
    (lambda: dist.allreduce_grads(None, 2, 4, None, like={}), ValueError,
     "grads is None with rows_on_rank=2; pass grads of its rows"),
    (lambda: dist.allreduce_mean(1.0, -1, 4, None), ValueError,
     "allreduce_mean: rows_on_rank must be >= 0, got -1"),
    (lambda: dist.data_parallel("step", None), TypeError,
     "data_parallel: expected a function f(params, x, y) -> (value, grads)"),
    (lambda: dist.check_same({"loss": fn.losses.mse}, None, what="arguments"), TypeError,
     "check_same(arguments): cannot compare leaf 'loss' of type Loss across ranks"),
    (lambda: dist.check_same([np.array([None])], None), TypeError,
     "check_same(params): leaf '[0]' is an object array"),
])
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=re.escape(match)):
        call()


# --- under mpiexec ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mpiexec():
    """The mpiexec of this environment: beside sys.executable (the MPICH wheel puts it in the
    virtual environment's bin/), else on PATH (a system MPI). Missing MPI is a failure."""
    beside = pathlib.Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.fail(f"mpiexec is neither beside {sys.executable} nor on PATH: the MPI tests need "
                    'the test extra, which includes funcnn[mpi]: pip install -e ".[test]"')
    probe = subprocess.run([sys.executable, "-c", "import mpi4py"], capture_output=True,
                           text=True, timeout=TIMEOUT)
    if probe.returncode != 0:
        pytest.fail(f'mpi4py is not importable (pip install -e ".[test]"): {probe.stderr}')
    return found


def run_mpi(mpiexec, n, args, cwd):
    """``mpiexec -n n python args...`` in ``cwd``; killed (whole process group) after TIMEOUT."""
    cmd = [mpiexec, "-n", str(n), sys.executable, *map(str, args)]
    proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} hung for {TIMEOUT} s\n{out}\n{err}")
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}\n{out}\n{err}"
    return out


@pytest.mark.parametrize("ranks, rows, batch", [
    (2, 49, 16),  # batches 16, 16, 16, 1: shards 8+8, and 1+0 (rank 1 has no rows)
    (3, 50, 16),  # batches 16, 16, 16, 2: shards 6+5+5, and 1+1+0
])
def test_hand_written_loop_on_n_ranks_is_the_one_process_run(mpiexec, tmp_path, ranks, rows,
                                                              batch):
    epochs = 3
    last = dist.shards(rows % batch, ranks)
    assert rows % batch and any(s.stop == s.start for s in last)  # uneven, and a rank with 0 rows
    run_mpi(mpiexec, ranks, [PROGRAMS, "train", rows, batch, epochs, tmp_path], tmp_path)
    got = [dict(np.load(tmp_path / f"train-rank{r}.npz")) for r in range(ranks)]
    one = train_loop(None, rows, batch, epochs)
    steps = epochs * -(-rows // batch)
    for name, reference in one.items():
        for r in range(1, ranks):  # every step's params, loss and val loss: the same bits
            np.testing.assert_array_equal(got[r][name], got[0][name], err_msg=f"{name} rank {r}")
        np.testing.assert_allclose(got[0][name], reference, rtol=1e-10, atol=0, err_msg=name)
    assert one["auto_params"].shape[0] == steps == got[0]["auto_params"].shape[0]
    np.testing.assert_array_equal(got[0]["auto_params"], got[0]["by_hand_params"])
    assert not np.array_equal(one["auto_params"][0], one["auto_params"][-1])  # it trained


@pytest.mark.parametrize("ranks", [2, 3])
def test_batchnorm_state_and_dropout_keys_on_n_ranks(mpiexec, tmp_path, ranks):
    rows, batch, epochs = 48, 12, 2  # equal shares (6+6, 4+4+4), as BatchNorm(sync=comm) needs
    run_mpi(mpiexec, ranks, [PROGRAMS, "train_bn", rows, batch, epochs, tmp_path], tmp_path)
    got = [dict(np.load(tmp_path / f"train_bn-rank{r}.npz")) for r in range(ranks)]
    one = train_bn_loop(None, rows, batch, epochs)
    for name in one:  # params and state, after every step: the same bits on every rank
        for r in range(1, ranks):
            np.testing.assert_array_equal(got[r][name], got[0][name], err_msg=f"{name} rank {r}")
    for name in ("sync_params", "sync_state"):  # the global batch's statistics: one process
        np.testing.assert_allclose(got[0][name], one[name], rtol=1e-10, atol=0, err_msg=name)
    # per-rank statistics (and per-rank Dropout masks): not the one-process run, but after
    # the first step the running mean (state[:8]) is, being linear in the batch means
    np.testing.assert_allclose(got[0]["per_rank_state"][0, :8], one["per_rank_state"][0, :8],
                               rtol=1e-10, atol=0)
    assert not np.allclose(got[0]["per_rank_params"][-1], one["per_rank_params"][-1], rtol=1e-3)


@pytest.fixture(scope="module")
def checks(mpiexec, tmp_path_factory):
    """helpers/mpi_programs.py checks on 3 ranks: {check name: [result of rank 0, 1, 2]}."""
    out = tmp_path_factory.mktemp("mpi-checks")
    run_mpi(mpiexec, 3, [PROGRAMS, "checks", out], out)
    ranks = [json.loads((out / f"checks-rank{r}.json").read_text()) for r in range(3)]
    return {name: [rank[name] for rank in ranks] for name in ranks[0]}


def same_on_every_rank(results):
    assert all(r == results[0] for r in results), results
    assert not (isinstance(results[0], dict) and "crashed" in results[0]), results[0]["crashed"]
    return results[0]


def test_check_same_passes_equal_data(checks):
    assert same_on_every_rank(checks["check_data_same"]) == "ok"


def test_check_same_names_the_rank_and_key_of_different_data(checks):
    e = same_on_every_rank(checks["check_data_differs"])  # every rank raises, none hangs
    assert (e["type"], e["rank"], e["path"]) == ("DistributedError", 2, "y")
    assert e["message"].startswith("check_same: data differ between ranks: 'y' holds other "
                                   "values on rank 2 than on rank 0 (a float64 array of shape "
                                   "(20, 1) on both; hash ")
    assert e["message"].endswith("every rank must load the same full data (each takes its own "
                                 "rows of a batch)")


def test_check_same_names_a_differing_argument(checks):
    e = same_on_every_rank(checks["check_args_differ"])
    assert (e["type"], e["rank"], e["path"]) == ("DistributedError", 1, "lr")
    assert "'lr' is 0.01 on rank 1 but 0.001 on rank 0" in e["message"]


def test_check_same_names_an_extra_params_key(checks):
    e = same_on_every_rank(checks["check_params_extra_key"])
    assert (e["type"], e["rank"], e["path"]) == ("DistributedError", 2, "scale")
    assert "rank 2 has 'scale' (a float32 array of shape (3,)" in e["message"]
    assert "fn.distributed.broadcast_params(params, comm)" in e["message"]


def test_broadcast_params_gives_root_params_in_one_buffer(checks):
    got = same_on_every_rank(checks["check_broadcast"])
    assert got == {"equal_root": True, "keys": ["0.weight", "0.bias", "2.weight", "2.bias"],
                   "one_buffer": True, "input_untouched": True}


def test_broadcast_params_follows_root_key_order(checks):
    got = same_on_every_rank(checks["check_broadcast_key_order"])
    assert got == {"keys": ["a", "b"], "a": [0.0, 0.0], "b": [10.0, 10.0, 10.0]}


def test_broadcast_params_names_a_structure_difference(checks):
    e = same_on_every_rank(checks["check_broadcast_structure"])
    assert (e["type"], e["rank"], e["path"]) == ("DistributedError", 1, "weight")
    assert ("'weight' is a float32 array of shape (4, 2) on rank 1 but a float32 array of shape "
            "(3, 2) on rank 0; every rank must build the same model") in e["message"]


def test_broadcast_params_of_mixed_dtypes_from_another_root(checks):
    got = same_on_every_rank(checks["check_broadcast_mixed"])
    assert got == {"w": [1.0, 1.0], "b": [1.0], "dtypes": ["float32", "float64"]}


def test_allreduce_grads_weights_rows_and_ignores_a_zero_row_rank(checks):
    # ranks hold 1, 2, 3 (times 10 for b) on 2, 0 (NaN grads) and 1 of 4 rows
    got = same_on_every_rank(checks["check_allreduce_mixed"])
    w = (1.0 * 2 + 3.0 * 1) / 4
    assert got == {"w": [[w, w], [w, w]], "b": [10 * w] * 3, "inner": {},
                   "dtypes": ["float32", "float64"]}


def test_allreduce_grads_with_like_on_a_rank_without_grads(checks):
    got = same_on_every_rank(checks["check_allreduce_zero_rows"])  # ranks 1, 2: 3 rows each
    assert got == {"weight": [[1.5, 1.5], [1.5, 1.5]], "bias": [1.5, 1.5]}


def test_allreduce_mean_is_the_row_weighted_mean(checks):
    # rank r holds the value (r + 1) * [1, 2] on r + 1 rows
    got = same_on_every_rank(checks["check_allreduce_mean"])
    mean = (1 * 1 + 2 * 2 + 3 * 3) / 6
    assert got == pytest.approx([mean, 2 * mean], rel=1e-15)


def test_on_root_writes_once_and_others_wait(checks):
    got = checks["check_on_root_writes"]
    assert got[0] == {"result": "written", "text_after": "0\n"}
    assert got[1] == got[2] == {"result": None, "text_after": "0\n"}  # written before they read


def test_on_root_failure_reaches_every_rank(checks):
    got = checks["check_on_root_fails"]
    assert got[0] == {"type": "OSError", "message": "disk full", "rank": None, "path": None}
    for other in got[1:]:
        assert other["type"] == "DistributedError"
        assert other["message"] == ("on_root: rank 0 failed in check_on_root_fails.<locals>.fail: "
                                    "OSError: disk full")


def test_rank_key_is_fold_in_of_the_rank(checks):
    got = checks["check_rank_key"]
    for r, result in enumerate(got):
        assert result["key"] == result["fold_in"] == result["all"][r]
    assert len({tuple(k) for k in got[0]["all"]}) == 3


def test_shard_on_three_ranks(checks):
    assert same_on_every_rank(checks["check_shards"]) == [[0, 4], [4, 7], [7, 10]]


@pytest.mark.parametrize("name, got", [
    ("module", "got the module mpi4py.MPI (pass its COMM_WORLD)"),
    ("null", "got MPI.COMM_NULL"),
    ("method", "got method <bound method Comm.Get_rank"),
    ("intercomm", "got an intercommunicator (it joins two groups"),
    ("int", "got int 0"),
])
def test_wrong_comm_objects_under_mpi(checks, name, got):
    e = same_on_every_rank(checks["check_wrong_comms"])[name]
    assert e["type"] == "TypeError"
    assert e["message"].startswith("comm must be an mpi4py intracommunicator such as "
                                   "MPI.COMM_WORLD")
    assert got in e["message"]


def test_data_parallel_gives_each_rank_its_key_and_agrees_on_state(checks):
    for r, got in enumerate(checks["check_key_per_rank"]):
        assert got["key"] == got["want"]  # fold_in(key, rank)
        assert got["state_in"] == -1
        assert got["state_out"] == 3  # counters (non-float leaves) are rank 0's: 7 = 3+2+2
    assert len({tuple(g["key"]) for g in checks["check_key_per_rank"]}) == 3


def test_allreduce_state_weights_floats_by_rows_and_takes_rank_0s_counters(checks):
    got = same_on_every_rank(checks["check_allreduce_state"])  # rank r: mean r on 1, 0, 2 rows
    assert got == {"mean": [4 / 3, 4 / 3], "count": 10, "relu": {}, "keys": ["mean", "count"]}


def test_allreduce_grads_names_a_leaf_that_is_not_float(checks):
    e = same_on_every_rank(checks["check_allreduce_int_leaf"])
    assert e["type"] == "TypeError"
    assert e["message"] == ("allreduce_grads: grads leaf 'count' is int64; grads must be float "
                            "arrays")


def test_a_world_of_one_rank_is_one_process(checks):
    got = same_on_every_rank(checks["check_comm_self"])
    assert got == {"data_parallel": True, "allreduce_grads": True, "allreduce_mean": True,
                   "broadcast_params": True, "shard": True, "on_root": 2}


def test_a_sharded_update_failing_on_one_rank_fails_on_every_rank(checks):
    got = checks["check_sharded_update_fails_on_one_rank"]
    assert got[2]["type"] == "FloatingPointError" and "overflow" in got[2]["message"]
    for other in got[:2]:
        assert other["type"] == "DistributedError" and other["rank"] == 2
        assert other["message"].startswith("the optimizer update failed on rank 2: "
                                           "FloatingPointError: overflow")


def test_readme_scaling_out_script_runs_on_two_ranks(mpiexec, tmp_path):
    """The README's N-rank loop, as a script under mpiexec -n 2 (2 epochs)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    blocks = [b for b in blocks if "from mpi4py" in b]
    assert len(blocks) == 1
    script = tmp_path / "train.py"
    script.write_text(blocks[0].replace("range(100)", "range(2)"))
    out = run_mpi(mpiexec, 2, [script], tmp_path)
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["0", "1"], out  # rank 0 prints, once per epoch
    assert float(lines[-1].split()[1]) < 0.1  # the validation loss after two epochs
    saved = fn.load(tmp_path / "sine.ckpt")
    assert list(fn.tree.flatten(saved)) == ["0.weight", "0.bias", "2.weight", "2.bias",
                                            "4.weight", "4.bias"]
