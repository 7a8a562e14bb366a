"""``fn.fit(..., comm=MPI.COMM_WORLD)`` under ``mpiexec -n N`` for tests/test_fit_mpi.py.

    python fit_mpi_program.py MODEL OUT [--stop-after K] [--resume]
    python fit_mpi_program.py sharded OPTIMIZER OUT WIDTH [--stop-at K] [--resume] [--batch B]

MODEL is ``mlp``, ``bn`` (per-rank BatchNorm statistics), ``syncbn`` (BatchNorm with
``sync=comm``) or ``dropout``. Every rank writes ``OUT/rank<r>.npz`` (its final params
flattened, its model state, history) and prints progress only on rank 0. With
``--stop-after K`` the K-th update raises KeyboardInterrupt on every rank (the same
step everywhere, as Ctrl-C on mpiexec would); ``--resume`` continues from
``OUT/ckpt``. :func:`run` is also called with ``comm=None`` by the test as the
one-process reference. ``sharded`` runs :func:`run_sharded` (optimizer ``SHARDED[name]``,
a Linear(3, WIDTH) MLP, lr_on_plateau) and also writes the full optimizer state and the
number of range updates the rank ran.
"""

from __future__ import annotations

import sys

import numpy as np

import funcnn as fn

L = fn.layers


def problem(rows: int = 53):
    x = fn.random.uniform(0, (rows, 3), -2.0, 2.0)  # 53 rows, batches of 10: a short last batch
    y = np.sin(x @ np.array([[1.0], [-0.5], [0.25]]))
    xv = fn.random.uniform(1, (17, 3), -2.0, 2.0)
    return (x, y), (xv, np.sin(xv @ np.array([[1.0], [-0.5], [0.25]])))


def model(kind: str, comm):
    f64 = {"dtype": np.float64}
    middle = {"mlp": [], "bn": [L.BatchNorm(8, **f64)], "syncbn": [L.BatchNorm(8, sync=comm, **f64)],
              "dropout": [L.Dropout(0.3)]}[kind]
    return fn.serial(L.Linear(3, 8, **f64), *middle, L.Tanh(), L.Linear(8, 1, **f64))


class StopAfter:
    """An optimizer whose K-th update raises KeyboardInterrupt (Ctrl-C at a known step)."""

    def __init__(self, inner, k):
        self.inner, self.k, self.calls = inner, k, 0
        self.init = inner.init

    def update(self, grads, state, params):
        self.calls += 1
        if self.calls == self.k:
            raise KeyboardInterrupt
        return self.inner.update(grads, state, params)


def run(kind: str, comm, folder=None, *, stop_after=None, resume=False, epochs=4, rows=None):
    net = model(kind, comm)
    train, val = problem(rows or (60 if kind == "bn" else 53))  # per-rank BN: 2+ rows a rank
    opt = fn.optim.adam(0.02)
    if stop_after:
        opt = StopAfter(opt, stop_after)
    return fn.fit(net, fn.losses.mse, opt, net.init(0), train, val=val, epochs=epochs, batch_size=10,
                  key=7, progress="lines", checkpoint_dir=folder, resume=resume, comm=comm, keep_best=2)


# --- the sharded update (fit shards element-wise optimizers across ranks) -----------------

SHARDED = {
    "adam": lambda lr: fn.optim.adam(lr),
    "adamw-mask": lambda lr: fn.optim.adamw(lr, weight_decay=0.2,
                                            weight_decay_mask=fn.optim.ndim_at_least(2)),
    "sgd-nesterov": lambda lr: fn.optim.sgd(lr, momentum=0.9, nesterov=True, weight_decay=0.01),
    "rmsprop": lambda lr: fn.optim.rmsprop(lr),
    "clip-adam": lambda lr: fn.optim.chain(fn.optim.clip_grad_norm(0.5), fn.optim.adam(lr)),  # not
}


def stopping_schedule(stop_at):
    """A decaying lr that raises KeyboardInterrupt when asked for step ``stop_at`` (on every
    rank at the same update, as Ctrl-C on mpiexec would)."""
    def lr(step):
        if step == stop_at:
            raise KeyboardInterrupt
        return 0.02 / (1.0 + 0.05 * step)

    return lr


def run_sharded(name, comm, folder=None, *, width=8, stop_at=None, resume=False, epochs=5,
                batch_size=10):
    """fit with optimizer SHARDED[name] and lr_on_plateau; returns the FitResult and how many
    range updates (update_range calls) this rank ran."""
    import funcnn.distributed as dist

    calls = [0]
    counted = dist.update_range

    def counting(*args, **kwargs):
        calls[0] += 1
        return counted(*args, **kwargs)

    f64 = {"dtype": np.float64}
    net = fn.serial(L.Linear(3, width, **f64), L.Tanh(), L.Linear(width, 1, **f64))
    train, val = problem(53)
    dist.update_range = counting
    try:
        result = fn.fit(net, fn.losses.mse, SHARDED[name](stopping_schedule(stop_at)), net.init(0),
                        train, val=val, epochs=epochs, batch_size=batch_size, key=7,
                        progress="lines",
                        checkpoint_dir=folder, resume=resume, comm=comm, keep_best=2,
                        lr_on_plateau=fn.callbacks.ReduceLROnPlateau(factor=0.5, patience=0,
                                                                     threshold=0.5))
    finally:
        dist.update_range = counted
    return result, calls[0]


def flat_result(result):
    """A FitResult as flat arrays: params, opt_state, history."""
    flat = {f"params.{k}": v for k, v in fn.tree.flatten(result.params).items()}
    flat.update({f"opt_state.{k}": v for k, v in fn.tree.flatten(result.opt_state).items()
                 if not isinstance(v, dict)})
    flat.update({f"history.{k}": v for k, v in result.history.items() if k != "time"})
    return flat


def main_sharded(comm, argv):
    """sharded NAME OUT WIDTH [--stop-at K] [--resume] [--batch B]"""
    name, out, width = argv[0], argv[1], int(argv[2])
    stop_at = int(argv[argv.index("--stop-at") + 1]) if "--stop-at" in argv else None
    batch = int(argv[argv.index("--batch") + 1]) if "--batch" in argv else 10
    result, calls = run_sharded(name, comm, f"{out}/ckpt", width=width, stop_at=stop_at,
                                resume="--resume" in argv, batch_size=batch)
    np.savez(f"{out}/rank{comm.Get_rank()}.npz", stop_reason=str(result.stop_reason),
             range_updates=calls, **flat_result(result))


def main(argv):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if argv[0] == "sharded":
        main_sharded(comm, argv[1:])
        return
    kind, out = argv[0], argv[1]
    if kind == "long":  # many small batches, until Ctrl-C; then --resume with the same epochs
        epochs = int(argv[2])
        result = run("mlp", comm, f"{out}/ckpt", resume=True, epochs=epochs, rows=3000)
        print(f"rank {comm.Get_rank()} {result.stop_reason}", flush=True)
        if comm.Get_rank() == 0 and result.stop_reason is None:
            np.savez(f"{out}/final.npz", **fn.tree.flatten(result.params))
        return
    if kind == "bn-short":  # a last batch of 3 rows: 2 + 1 on two ranks, too few for rank 1
        try:
            run("bn", comm, rows=53)
        except Exception as error:  # noqa: BLE001 -- each rank reports what it raised
            print(f"rank {comm.Get_rank()}: {type(error).__name__}: {error}", flush=True)
        return
    stop_after = int(argv[argv.index("--stop-after") + 1]) if "--stop-after" in argv else None
    result = run(kind, comm, f"{out}/ckpt", stop_after=stop_after, resume="--resume" in argv)
    flat = {f"params.{k}": v for k, v in fn.tree.flatten(result.params).items()}
    flat.update({f"state.{k}": v for k, v in fn.tree.flatten(result.state).items()
                 if not isinstance(v, dict)})
    flat.update({f"history.{k}": v for k, v in result.history.items() if k != "time"})
    flat.update({f"best.{i}": m.params["0"]["weight"] for i, m in enumerate(result.best)})
    np.savez(f"{out}/rank{comm.Get_rank()}.npz", stop_reason=str(result.stop_reason), **flat)


if __name__ == "__main__":
    with np.errstate(all="raise", under="ignore"):
        main(sys.argv[1:])
