"""Programs that tests/test_distributed.py runs under ``mpiexec -n N``.

    python mpi_programs.py train ROWS BATCH EPOCHS OUT   # the hand-written loop
    python mpi_programs.py train_bn ROWS BATCH EPOCHS OUT   # with BatchNorm state and Dropout
    python mpi_programs.py checks OUT                     # one result per check

Each rank writes ``OUT/<program>-rank<r>.npz`` (train) or ``.json`` (checks); the test
reads them. :func:`train_loop` is also called in the test's own process with
``comm=None``, as the one-process reference. Runs strict, as the test suite does.
"""

from __future__ import annotations

import json
import pathlib
import sys
import traceback
import warnings

import numpy as np

import funcnn as fn

dist = fn.distributed


def problem(rows: int):
    x = fn.random.uniform(0, (rows, 3), -2.0, 2.0)
    y = np.sin(x @ np.array([[1.0], [-0.5], [0.25]]))
    xv = fn.random.uniform(1, (rows // 2 + 1, 3), -2.0, 2.0)
    return x, y, xv, np.sin(xv @ np.array([[1.0], [-0.5], [0.25]]))


def train_loop(comm, rows: int, batch: int, epochs: int) -> dict:
    """The README's loop on N ranks, float64, twice: with ``data_parallel`` and with the
    pieces by hand (shard, value_and_grad, allreduce_grads, allreduce_mean). Returns the
    flat params after every step, the losses and the validation losses of both."""
    model = fn.serial(fn.Linear(3, 8, dtype=np.float64), fn.Tanh(),
                      fn.Linear(8, 1, dtype=np.float64))
    x, y, xv, yv = problem(rows)
    dist.check_same({"x": x, "y": y}, comm, what="data")
    params0 = dist.broadcast_params(model.init(0), comm)
    dist.check_same(params0, comm)
    opt = fn.optim.adam(0.01)
    value_and_grad = fn.value_and_grad(model, fn.losses.mse)
    auto = dist.data_parallel(value_and_grad, comm)

    def by_hand(params, xb, yb):
        mine = dist.shard(len(xb), comm)
        n = mine.stop - mine.start
        loss, grads = value_and_grad(params, xb[mine], yb[mine]) if n else (None, None)
        grads = dist.allreduce_grads(grads, n, len(xb), comm, like=params)
        return dist.allreduce_mean(loss, n, len(xb), comm), grads

    out: dict = {}
    for name, step in (("auto", auto), ("by_hand", by_hand)):
        params, state = params0, opt.init(params0)
        flat, losses, val = [], [], []
        for epoch in range(epochs):
            for xb, yb in fn.data.batches(x, y, batch, key=fn.random.fold_in(0, epoch)):
                loss, grads = step(params, xb, yb)
                params, state = opt.update(grads, state, params)
                losses.append(loss)
                flat.append(np.concatenate([np.ravel(p) for p in fn.tree.leaves(params)]))
            mine = dist.shard(len(xv), comm)
            n = mine.stop - mine.start
            local = fn.losses.mse(model.apply(params, xv[mine]), yv[mine]) if n else None
            val.append(dist.allreduce_mean(local, n, len(xv), comm))
        out[f"{name}_params"] = np.array(flat)
        out[f"{name}_loss"] = np.array(losses)
        out[f"{name}_val"] = np.array(val)
    return out


def train_bn_loop(comm, rows: int, batch: int, epochs: int) -> dict:
    """The loop with model state, float64, twice: BatchNorm(sync=comm) (the global batch's
    statistics: the one-process run) and per-rank BatchNorm followed by Dropout (a key per
    step). Returns the flat params and state after every step of both."""
    x, y, _, _ = problem(rows)
    out: dict = {}
    for name, sync, rate in (("sync", comm, 0.0), ("per_rank", None, 0.25)):
        # (no bias straight before BatchNorm: its true gradient is 0, and Adam would blow
        # the rounding noise in it up into steps of lr that differ from run to run)
        model = fn.serial(fn.Linear(3, 8, dtype=np.float64), fn.Tanh(),
                          fn.layers.BatchNorm(8, dtype=np.float64, sync=sync),
                          fn.layers.Dropout(rate), fn.Linear(8, 1, dtype=np.float64))
        params, state = model.init(0), model.init_state()
        opt = fn.optim.adam(0.01)
        opt_state = opt.init(params)
        step = dist.data_parallel(fn.value_and_grad(model, fn.losses.mse), comm)
        flat_params, flat_state = [], []
        for epoch in range(epochs):
            for i, (xb, yb) in enumerate(fn.data.batches(x, y, batch, key=epoch)):
                key = fn.random.fold_in(epoch, i)
                loss, grads, state = step(params, xb, yb, key=key, state=state)
                params, opt_state = opt.update(grads, opt_state, params)
                flat_params.append(np.concatenate([np.ravel(p) for p in fn.tree.leaves(params)]))
                flat_state.append(np.concatenate([np.ravel(v).astype(np.float64)
                                                  for v in fn.tree.leaves(state)]))
        out[f"{name}_params"], out[f"{name}_state"] = np.array(flat_params), np.array(flat_state)
    return out


# --- checks: each returns something JSON-able, the same kind on every rank -----------------


def error(call) -> dict:
    """Run ``call``; describe the exception it raises (or that it raised none)."""
    try:
        call()
    except Exception as e:  # the test asserts on type, rank, path and message
        return {"type": type(e).__name__, "message": str(e),
                "rank": getattr(e, "rank", None), "path": getattr(e, "path", None)}
    return {"type": None}


def check_data_same(comm):
    x, y, _, _ = problem(20)
    dist.check_same((x, y), comm, what="data")
    return "ok"


def check_data_differs(comm):
    x, y, _, _ = problem(20)
    if comm.rank == comm.size - 1:
        y = y.copy()
        y[7, 0] += 1e-12
    return error(lambda: dist.check_same({"x": x, "y": y}, comm, what="data"))


def check_args_differ(comm):
    args = {"batch_size": 64, "lr": 1e-3 if comm.rank != 1 else 1e-2, "epochs": 3}
    return error(lambda: dist.check_same(args, comm, what="arguments"))


def check_params_extra_key(comm):
    params = fn.Linear(2, 3).init(0)
    if comm.rank == 2:
        params = {**params, "scale": np.ones(3, np.float32)}
    return error(lambda: dist.check_same(params, comm))


def check_broadcast(comm):
    model = fn.serial(fn.Linear(2, 4), fn.ReLU(), fn.Linear(4, 1))
    mine = model.init(comm.rank)  # different values on every rank
    got = dist.broadcast_params(mine, comm)
    dist.check_same(got, comm)
    want = model.init(0)
    layout = fn.layout.layout_of(got)
    return {
        "equal_root": all(np.array_equal(a, b) for a, b in
                          zip(fn.tree.leaves(got), fn.tree.leaves(want))),
        "keys": list(fn.tree.flatten(got)),
        "one_buffer": layout.flat(got) is layout.known(tuple(fn.tree.leaves(got))),
        "input_untouched": all(np.array_equal(a, b) for a, b in
                               zip(fn.tree.leaves(mine), fn.tree.leaves(model.init(comm.rank)))),
    }


def check_broadcast_key_order(comm):
    params = {"a": np.full(2, float(comm.rank)), "b": np.full(3, 10.0 + comm.rank)}
    if comm.rank == 1:
        params = {"b": params["b"], "a": params["a"]}
    got = dist.broadcast_params(params, comm)
    return {"keys": list(got), "a": got["a"].tolist(), "b": got["b"].tolist()}


def check_broadcast_structure(comm):
    params = fn.Linear(2, 3 if comm.rank != 1 else 4).init(0)
    return error(lambda: dist.broadcast_params(params, comm))


def check_broadcast_mixed(comm):
    params = {"w": np.full(2, comm.rank, np.float32), "b": np.full(1, comm.rank, np.float64)}
    got = dist.broadcast_params(params, comm, root=1)
    return {"w": got["w"].tolist(), "b": got["b"].tolist(), "dtypes": [str(got["w"].dtype),
                                                                      str(got["b"].dtype)]}


def check_allreduce_mixed(comm):
    grads = {"w": np.full((2, 2), 1.0 + comm.rank, np.float32), "inner": {},
             "b": np.full(3, 10.0 * (comm.rank + 1))}
    rows = [2, 0, 1, 1][comm.rank]  # 4 ranks at most
    if rows == 0:
        grads = fn.tree.map(lambda a: np.full_like(a, np.nan), grads)
    got = dist.allreduce_grads(grads, rows, 4, comm)
    return {"w": got["w"].tolist(), "b": got["b"].tolist(), "inner": got["inner"],
            "dtypes": [str(got["w"].dtype), str(got["b"].dtype)]}


def check_allreduce_zero_rows(comm):
    params = fn.Linear(2, 2, dtype=np.float64).init(0)
    rows = 0 if comm.rank == 0 else 3
    grads = None if rows == 0 else fn.tree.map(lambda p: np.full_like(p, comm.rank), params)
    total = 3 * (comm.size - 1)
    got = dist.allreduce_grads(grads, rows, total, comm, like=params)
    return {k: v.tolist() for k, v in got.items()}


def check_allreduce_mean(comm):
    value = np.array([1.0, 2.0]) * (comm.rank + 1)
    return dist.allreduce_mean(value, comm.rank + 1, sum(range(1, comm.size + 1)), comm).tolist()


def check_on_root_writes(comm, out):
    path = out / "root-only.txt"

    def write(text):
        with open(path, "a") as f:
            f.write(text)
        return "written"

    result = dist.on_root(comm, write, f"{comm.rank}\n")
    return {"result": result, "text_after": path.read_text()}


def check_on_root_fails(comm, out):
    def fail():
        raise OSError("disk full")
    return error(lambda: dist.on_root(comm, fail))


def check_rank_key(comm):
    key = dist.rank_key(7, comm)
    return {"key": key.tolist(), "fold_in": fn.random.fold_in(7, comm.rank).tolist(),
            "all": comm.allgather(key.tolist())}


def check_shards(comm):
    return [(s.start, s.stop) for s in comm.allgather(dist.shard(10, comm))]


def check_wrong_comms(comm):
    from mpi4py import MPI

    local = comm.Split(comm.rank % 2, comm.rank)
    inter = local.Create_intercomm(0, comm, 1 - comm.rank % 2, tag=5)
    wrong = {"module": MPI, "null": MPI.COMM_NULL, "method": comm.Get_rank,
             "intercomm": inter, "int": 0}
    got = {name: error(lambda c=c: dist.shard(4, c)) for name, c in wrong.items()}
    inter.Free()
    local.Free()
    return got


def check_allreduce_int_leaf(comm):
    grads = {"w": np.ones(2), "count": np.array([3])}
    return error(lambda: dist.allreduce_grads(grads, 1, comm.size, comm))


def check_key_per_rank(comm):
    """data_parallel hands f the rank's own key, fold_in(key, rank), and state through."""
    seen = {}

    def f(params, x, y, *, key=None, state=None):
        seen["key"], seen["state"] = key.tolist(), state
        return 0.0, fn.tree.map(np.zeros_like, params), {"count": np.array(len(x))}

    params = {"w": np.zeros(2)}
    _, _, state = dist.data_parallel(f, comm)(params, np.zeros((7, 1)), np.zeros((7, 1)), key=5,
                                               state={"count": np.array(-1)})
    return {"key": seen["key"], "want": fn.random.fold_in(5, comm.rank).tolist(),
            "state_in": seen["state"]["count"].tolist(), "state_out": state["count"].tolist()}


def check_allreduce_state(comm):
    rows = [1, 0, 2][comm.rank]  # 3 ranks
    state = {"bn": {"mean": np.full(2, float(comm.rank)), "count": np.array(10 + comm.rank)},
             "relu": {}}
    if rows == 0:
        state["bn"]["mean"][:] = np.nan  # a rank without rows: its floats count for nothing
    got = dist.allreduce_state(state, rows, 3, comm)
    return {"mean": got["bn"]["mean"].tolist(), "count": got["bn"]["count"].tolist(),
            "relu": got["relu"], "keys": list(got["bn"])}


def check_comm_self(comm):
    """COMM_SELF, a world of one rank: everything is what it is without MPI."""
    from mpi4py import MPI

    f = fn.value_and_grad(fn.Linear(3, 1), fn.losses.mse)
    params = fn.Linear(3, 1).init(0)
    self = MPI.COMM_SELF
    return {"data_parallel": dist.data_parallel(f, self) is f,
            "allreduce_grads": dist.allreduce_grads(params, 2, 2, self) is params,
            "allreduce_mean": dist.allreduce_mean(0.1, 3, 3, self) == 0.1,
            "broadcast_params": dist.broadcast_params(params, self) is params,
            "shard": dist.shard(5, self) == slice(0, 5), "on_root": dist.on_root(self, len, "ab")}


def check_sharded_update_fails_on_one_rank(comm):
    """A value that overflows in the Adam kernel, in the last rank's range only: that rank
    raises, the others get a DistributedError instead of waiting in the Allgather."""
    params = {"w": np.zeros(10, np.float32)}
    opt = fn.optim.adam(0.1)
    sharded = fn.distributed.sharded_update(opt, params, comm)
    state = sharded.scatter(opt.init(params), params)
    grads = {"w": np.zeros(10, np.float32)}
    if comm.rank == comm.size - 1:
        grads["w"][-1] = 1e30  # summed: 1e30 in the last rank's range; its g * g overflows
    return error(lambda: sharded.update(grads, state, params))


CHECKS = [check_data_same, check_data_differs, check_args_differ, check_params_extra_key,
          check_broadcast, check_broadcast_key_order, check_broadcast_structure,
          check_broadcast_mixed, check_allreduce_mixed, check_allreduce_zero_rows,
          check_allreduce_int_leaf, check_allreduce_mean, check_on_root_writes,
          check_on_root_fails, check_rank_key, check_shards, check_wrong_comms,
          check_key_per_rank, check_allreduce_state, check_comm_self,
          check_sharded_update_fails_on_one_rank]


def main() -> int:
    np.seterr(all="raise", under="ignore")
    warnings.simplefilter("error")
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    program, out = sys.argv[1], pathlib.Path(sys.argv[-1])
    if program in ("train", "train_bn"):
        rows, batch, epochs = map(int, sys.argv[2:5])
        loop = train_loop if program == "train" else train_bn_loop
        np.savez(out / f"{program}-rank{comm.rank}.npz", **loop(comm, rows, batch, epochs))
    elif program == "checks":
        results = {}
        for check in CHECKS:
            takes_out = check.__code__.co_argcount == 2
            try:
                results[check.__name__] = check(comm, out) if takes_out else check(comm)
            except Exception:  # recorded, and the other checks still run on every rank
                results[check.__name__] = {"crashed": traceback.format_exc()}
            comm.Barrier()
        (out / f"checks-rank{comm.rank}.json").write_text(json.dumps(results, indent=1))
    else:
        raise SystemExit(f"unknown program {program!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
