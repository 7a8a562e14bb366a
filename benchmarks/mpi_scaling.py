"""Data-parallel scaling of a funcnn training step on MPI; writes MPI_RESULTS.md.

    python -m benchmarks.mpi_scaling              # ~2 minutes on 2 cores
    python -m benchmarks.mpi_scaling --quick      # a ~30 s smoke run (figures not for comparison)
    python -m benchmarks.mpi_scaling --out DIR    # write MPI_RESULTS.md, mpi_results.json there

Needs the mpi extra (``pip install -e ".[mpi]"``: mpi4py and MPICH; mpiexec beside this
Python). Every configuration runs in processes of its own, in interleaved rounds (a fresh
random order per round), so a burst of noise hits all of them alike:

- T4 (784-1024-1024-10, batch 256, softmax cross-entropy, Adam, float32): one process
  with one BLAS thread (``comm=None``), ``mpiexec -n 1`` and ``-n 2`` with one BLAS
  thread per rank, and one process with two BLAS threads. Each rank takes its rows of
  the global batch of 256. Three steps on 2 ranks: the hand-written loop,
  ``fn.distributed.data_parallel(fn.value_and_grad(model, loss), comm)`` then
  ``opt.update`` (weighting pass, one Allreduce, the whole update on every rank);
  ``fit``'s step with the whole update (the loss gradient weighted inside the backward,
  an in-place Allreduce: fit with an optimizer it cannot shard); and ``fit``'s sharded
  step (Reduce_scatter, each rank's half of the Adam update, Allgather: fit with Adam).
  Steps/s are of global steps; samples/s = 256 x steps/s.
- Allreduce of float32 buffers on 2 ranks, 1 KiB to 64 MiB (T4's and T6's grads among
  them), and a fit of ``t = latency + bytes / bandwidth`` (ring on 2 ranks); the
  Reduce_scatter and the in-place Allgather of T4's grads that the sharded step runs.

T6 (mnist-cnn, issue 11) joins the step table by itself once ``fn.layers`` has
``Conv2d``, ``MaxPool2d`` and ``Flatten`` (see :func:`t6_bench`). No figure here is
asserted anywhere: these are measurements, not tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path[:1]:
    sys.path.insert(0, str(_ROOT))  # run from anywhere, and always this checkout's funcnn

import numpy as np

from benchmarks import harness
from benchmarks import workloads as W

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# (label, ranks under mpiexec or None for a plain process, BLAS threads per process, step:
# "loop" data_parallel + opt.update, "fit" fit's step with the whole update, "sharded" fit's
# sharded step; see step_worker)
CONFIGS = (
    ("1 process, 1 thread (comm=None)", None, 1, "loop"),
    ("mpiexec -n 1, 1 thread", 1, 1, "loop"),
    ("mpiexec -n 2, 1 thread per rank: data_parallel loop, whole update", 2, 1, "loop"),
    ("mpiexec -n 2, 1 thread per rank: fit's step, whole update", 2, 1, "fit"),
    ("mpiexec -n 2, 1 thread per rank: fit's step, sharded update", 2, 1, "sharded"),
    ("1 process, 2 threads (comm=None)", None, 2, "loop"),
)
BASELINE, TWO_RANKS = CONFIGS[0][0], CONFIGS[4][0]
QUIET_CORES, QUIET_PAUSE = 0.25, 5.0  # see run_quiet
FULL = {"rounds": 5, "steps": 40, "warmup": 5, "allreduce_rounds": 15, "profile_rounds": 10,
        "quiet_tries": 6}
QUICK = {"rounds": 1, "steps": 5, "warmup": 2, "allreduce_rounds": 2, "profile_rounds": 1,
         "quiet_tries": 1}
PROFILE_ROWS = (32, 64, 128, 256, 512)  # batch sizes of the forward + backward profile
T6_LAYERS = ((1, 32, 3), (32, 64, 3))  # Conv2d(in, out, k), then Linear(1600,128), Linear(128,10)


# --- workloads ----------------------------------------------------------------------------


@dataclass
class Bench:
    """One step's ingredients: the model, its loss, optimizer, global batch and batches."""

    model: object
    loss: object
    lr: float
    batch: int
    x: np.ndarray
    y: np.ndarray


def t4_bench(rows: int = 1024) -> Bench:
    import funcnn as fn

    wl = W.workloads()["T4"]
    x, y, _ = W.wide_data(rows)
    return Bench(W.build_funcnn_model(wl.spec, np.float32), fn.losses.softmax_cross_entropy,
                 wl.lr, wl.batch, x.astype(np.float32), y.astype(np.int64))


def t6_missing() -> list[str]:
    import funcnn as fn

    return [name for name in ("Conv2d", "MaxPool2d", "Flatten") if not hasattr(fn.layers, name)]


def t6_bench(rows: int = 512) -> Bench:
    """T6 mnist-cnn of issue 11: x (128, 1, 28, 28), Conv2d(1,32,3) ReLU MaxPool2d(2)
    Conv2d(32,64,3) ReLU MaxPool2d(2) Flatten Linear(1600,128) ReLU Linear(128,10)."""
    import funcnn as fn

    L = fn.layers
    model = fn.serial(L.Conv2d(1, 32, 3), L.ReLU(), L.MaxPool2d(2), L.Conv2d(32, 64, 3),
                      L.ReLU(), L.MaxPool2d(2), L.Flatten(), L.Linear(1600, 128), L.ReLU(),
                      L.Linear(128, 10))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, 1, 28, 28), dtype=np.float32)
    return Bench(model, fn.losses.softmax_cross_entropy, 1e-3, 128, x,
                 rng.integers(0, 10, x.shape[0]))


BENCHES = {"T4": t4_bench, "T6": t6_bench}


def t6_params() -> int:
    """T6's parameter count, from its layers (conv: out*in*k*k + out; linear: out*in + out)."""
    conv = sum(o * i * k * k + o for i, o, k in T6_LAYERS)
    return conv + (1600 * 128 + 128) + (128 * 10 + 10)


# --- workers (run under mpiexec or alone; print one JSON line on rank 0) -------------------


def loop_step(b: Bench, opt, comm):
    """The hand-written loop's step: ``data_parallel`` (weighting pass, one Allreduce),
    then ``opt.update`` of all params on every rank."""
    import funcnn as fn

    step = fn.distributed.data_parallel(fn.value_and_grad(b.model, b.loss), comm)

    def run(params, state, xb, yb):
        loss, grads = step(params, xb, yb)
        return (loss, *opt.update(grads, state, params))

    return run, opt.init


def fit_step(b: Bench, opt, comm, sharded: bool):
    """``fit``'s data-parallel step (funcnn/train.py): this rank's loss gradient weighted by
    its rows' share inside the backward, then either an in-place Allreduce and the whole
    update, or the sharded update (Reduce_scatter, this rank's range, Allgather)."""
    import funcnn as fn
    from funcnn.grad import _value_and_grad_core, loss_gradient_rule

    core = _value_and_grad_core(b.model, loss_gradient_rule(b.loss))
    sharding = None
    if sharded:
        sharding = fn.distributed.sharded_update(opt, b.model.init(fn.random.key(0)), comm)
        assert sharding is not None, "Adam on one float32 layout over 2 ranks shards"

    def run(params, state, xb, yb):
        mine = fn.distributed.shard(len(xb), comm)
        rows = mine.stop - mine.start
        loss, grads = core(params, xb[mine], yb[mine], None, None, rows / len(xb))
        loss = fn.distributed.allreduce_mean(loss, rows, len(xb), comm)
        if sharding is not None:
            return (loss, *sharding.update(grads, state, params))
        grads = fn.distributed.sum_grads(grads, comm, like=params)
        return (loss, *opt.update(grads, state, params))

    def init(params):
        state = opt.init(params)
        return state if sharding is None else sharding.scatter(state, params)

    return run, init


def step_worker(workload: str, steps: int, warmup: int, use_mpi: bool, kind: str) -> dict:
    import funcnn as fn

    comm = None
    if use_mpi:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    b = BENCHES[workload]()
    params = b.model.init(fn.random.key(0))
    opt = fn.optim.adam(b.lr)
    run, init = loop_step(b, opt, comm) if kind == "loop" else fit_step(b, opt, comm,
                                                                          kind == "sharded")
    state = init(params)
    batches = [(b.x[s:s + b.batch], b.y[s:s + b.batch]) for s in range(0, len(b.x), b.batch)]
    times, losses = [], []
    for i in range(warmup + steps):
        if i == warmup and comm is not None:
            comm.Barrier()
        xb, yb = batches[i % len(batches)]
        t0 = time.perf_counter_ns()
        loss, params, state = run(params, state, xb, yb)
        times.append(time.perf_counter_ns() - t0)
        losses.append(float(loss))
    return {"step_ns": times[warmup:], "losses": losses,
            "rows_on_rank": fn.distributed.shard(b.batch, comm).stop
            - fn.distributed.shard(b.batch, comm).start}


def profile_worker(workload: str, rounds: int) -> dict:
    """One process: the parts of a step the cost model in docs/scaling.md is made of, each
    timed ``rounds`` times in a fresh order: forward + backward (``fn.value_and_grad``) on
    batches of PROFILE_ROWS rows, the Adam update of all params and of the first half of
    the flat buffer (what each of 2 ranks runs in the sharded step), and the row-weighting
    pass ``np.multiply(grads, w)`` that precedes the hand-written loop's Allreduce."""
    import funcnn as fn
    from funcnn.optim.base import range_state, update_range

    b = BENCHES[workload](max(PROFILE_ROWS))
    params = b.model.init(fn.random.key(0))
    opt = fn.optim.adam(b.lr)
    value_and_grad = fn.value_and_grad(b.model, b.loss)
    _, grads = value_and_grad(params, b.x[:b.batch], b.y[:b.batch])
    params, state = opt.update(grads, opt.init(params), params)  # the steady state's layouts
    flat = fn.layout.layout_of(grads).flat(grads)
    parts = {f"fwd_bwd_{n}": (lambda n=n: value_and_grad(params, b.x[:n], b.y[:n]))
             for n in PROFILE_ROWS}
    parts["update"] = lambda: opt.update(grads, state, params)
    layout, half = fn.layout.layout_of(params), flat.size // 2
    halves = range_state(opt.rule, layout, state, params, 0, half)
    new_half = np.empty(half, flat.dtype)
    parts["update_half"] = lambda: update_range(opt.rule, layout, flat[:half], halves, params, 0,
                                                half, new_half)
    parts["weight"] = lambda: np.multiply(flat, 0.5)
    rng = np.random.default_rng(2)
    times: dict = {name: [] for name in parts}
    for r in range(rounds + 1):  # round 0 warms up
        for name in rng.permutation(list(parts)):
            for _ in range(3):
                t0 = time.perf_counter_ns()
                parts[name]()
                if r:
                    times[name].append(time.perf_counter_ns() - t0)
    return {"ns": times, "n_params": int(flat.size)}


def allreduce_worker(sizes: list[int], rounds: int) -> dict:
    """Median time of one Allreduce (SUM, float32, in place) per buffer size, after a
    Barrier (so every rank starts it together); the order of sizes changes every round."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rng = np.random.default_rng(1)
    buffers = {n: np.ones(n, np.float32) for n in sizes}
    sharded = sharded_collectives(comm, W.n_params(W.workloads()["T4"].spec), rounds)
    times: dict = {n: [] for n in sizes}
    for r in range(rounds + 1):  # round 0 warms up
        for n in rng.permutation(sizes):
            n = int(n)
            reps = max(3, min(50, int(2e7 // max(n, 1))))
            for _ in range(reps):
                comm.Barrier()
                t0 = time.perf_counter_ns()
                comm.Allreduce(MPI.IN_PLACE, buffers[n])
                if r:
                    times[n].append(time.perf_counter_ns() - t0)
    return {"ranks": comm.Get_size(), "library": MPI.Get_library_version().splitlines()[0],
            "ns": {str(n): t for n, t in times.items()}, "sharded_ns": sharded}


def sharded_collectives(comm, n: int, rounds: int) -> dict:
    """Times of the sharded step's two collectives on ``n`` float32 values, as
    ``fn.distributed.ShardedUpdate`` runs them: Reduce_scatter into a reused buffer, and
    the Allgather of equal blocks in place into a new buffer (the new params)."""
    from mpi4py import MPI

    ranks = comm.Get_size()
    block = n // ranks
    counts = [block] * (ranks - 1) + [n - (ranks - 1) * block]
    grads, summed = np.ones(n, np.float32), np.empty(counts[comm.Get_rank()], np.float32)

    def allgather():
        comm.Allgather(MPI.IN_PLACE, np.empty(n, np.float32)[:ranks * block])

    parts = {"reduce_scatter": lambda: comm.Reduce_scatter(grads, summed, counts, op=MPI.SUM),
             "allgather": allgather}
    times: dict = {name: [] for name in parts}
    for r in range(rounds + 1):  # round 0 warms up
        for name, call in parts.items():
            for _ in range(5):
                comm.Barrier()
                t0 = time.perf_counter_ns()
                call()
                if r:
                    times[name].append(time.perf_counter_ns() - t0)
    return times


# --- the driver ---------------------------------------------------------------------------


def mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return str(beside)
    raise SystemExit(f"mpiexec is not beside {sys.executable}: pip install -e \".[mpi]\"")


def run_worker(ranks: int | None, threads: int, worker_args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(_ROOT), **{v: str(threads) for v in THREAD_VARS}}
    cmd = [sys.executable, "-m", "benchmarks.mpi_scaling", "--worker", *worker_args]
    if ranks is not None:
        cmd = [mpiexec(), "-n", str(ranks), *cmd, "--mpi"]
    done = subprocess.run(cmd, cwd=_ROOT, env=env, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_quiet(ranks: int | None, threads: int, worker_args: list[str], tries: int,
              log) -> tuple[dict, float]:
    """:func:`run_worker`, again (up to ``tries`` times, a pause between) while other
    processes used more than QUIET_CORES cores during the run: on a shared 2-core machine
    one busy neighbour halves what two ranks get. Returns the result and that load."""
    for attempt in range(tries):
        with OthersLoad() as load:
            got = run_worker(ranks, threads, worker_args)
        if load.cores is None or load.cores <= QUIET_CORES:
            break
        log(f"    other processes used {load.cores:.2f} cores: "
            + ("again" if attempt + 1 < tries else "kept (no quiet run)"))
        time.sleep(QUIET_PAUSE)
    return got, load.cores


def measure_steps(workload: str, cfg: dict, rng: np.random.Generator, log) -> dict:
    """Per configuration: the step times of all its runs (``"step"``) and of its quiet
    runs only (``"step_quiet"``, None if none was quiet), and how many were quiet."""
    runs: dict = {label: [] for label, *_ in CONFIGS}  # (other load, step_ns) per run
    losses, rows = {}, {}
    for r in range(cfg["rounds"]):
        for k in rng.permutation(len(CONFIGS)):
            label, ranks, threads, kind = CONFIGS[k]
            got, load = run_quiet(ranks, threads, ["step", workload, str(cfg["steps"]),
                                                   str(cfg["warmup"]), kind],
                                  cfg["quiet_tries"], log)
            runs[label].append((load, got["step_ns"]))
            losses[label], rows[label] = got["losses"], got["rows_on_rank"]
        log(f"  {workload} round {r + 1}/{cfg['rounds']} done")

    def quiet(load):
        return load is None or load <= QUIET_CORES

    return {
        "step": {k: harness.summarize([t for _, ns in v for t in ns]) for k, v in runs.items()},
        "step_quiet": {k: harness.summarize([t for load, ns in v if quiet(load) for t in ns])
                       for k, v in runs.items()},
        "quiet_runs": {k: sum(quiet(load) for load, _ in v) for k, v in runs.items()},
        "losses": losses, "rows_on_rank0": rows,
        "other_load_cores": _mean([load for v in runs.values() for load, _ in v])}


def allreduce_sizes(quick: bool) -> list[int]:
    t4 = W.n_params(W.workloads()["T4"].spec)
    sweep = [256 * 4 ** i for i in range(9 if not quick else 5)]  # 1 KiB .. 64 MiB
    return sorted(set(sweep + [t4, t6_params(), 1_800_000]))


def fit_latency_bandwidth(sizes_bytes: np.ndarray, seconds: np.ndarray) -> tuple[float, float]:
    """Least squares ``t = a + bytes / bw`` (ring on 2 ranks: 2(N-1)/N = 1), weighted by
    1/t so small and big buffers count alike. Returns (a in s, bw in bytes/s)."""
    A = np.column_stack([np.ones_like(sizes_bytes), sizes_bytes]) / seconds[:, None]
    coef, *_ = np.linalg.lstsq(A, np.ones_like(seconds), rcond=None)
    return float(coef[0]), float(1.0 / coef[1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mpi_scaling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke run: few steps and rounds")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent),
                   help="directory for MPI_RESULTS.md and mpi_results.json (default: benchmarks/)")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    p.add_argument("--mpi", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        kind, *rest = args.worker
        if kind == "step":
            result = step_worker(rest[0], int(rest[1]), int(rest[2]), args.mpi, rest[3])
        elif kind == "profile":
            result = profile_worker(rest[0], int(rest[1]))
        else:
            result = allreduce_worker([int(n) for n in rest[1:]], int(rest[0]))
        if not args.mpi or _rank() == 0:
            print(json.dumps(result), flush=True)
        return 0

    cfg = QUICK if args.quick else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def log(msg):
        print(msg, flush=True)

    results = {"machine": machine(), "config": cfg, "quick": args.quick, "workloads": {}}
    results["load_before"] = harness.loadavg()
    t0 = time.perf_counter()
    for workload in ("T4", "T6"):
        missing = t6_missing() if workload == "T6" else []
        if missing:
            results["workloads"][workload] = {"missing": missing}
            log(f"{workload}: skipped, funcnn has no fn.layers.{', '.join(missing)} yet")
            continue
        log(f"{workload}: {len(CONFIGS)} configurations x {cfg['rounds']} rounds")
        results["workloads"][workload] = measure_steps(workload, cfg, rng, log)
        log(f"{workload}: profile of a step's parts (one process, one thread)")
        got, load = run_quiet(None, 1, ["profile", workload, str(cfg["profile_rounds"])],
                              cfg["quiet_tries"], log)
        results["workloads"][workload]["profile"] = {
            "n_params": got["n_params"], "other_load_cores": load,
            "parts": {k: harness.summarize(v) for k, v in got["ns"].items()}}
    sizes = allreduce_sizes(args.quick)
    log(f"Allreduce: {len(sizes)} sizes on 2 ranks")
    got, load = run_quiet(2, 1, ["allreduce", str(cfg["allreduce_rounds"]), *map(str, sizes)],
                          cfg["quiet_tries"], log)
    results["allreduce"] = {"library": got["library"], "ranks": got["ranks"],
                            "sizes": {n: harness.summarize(got["ns"][str(n)]) for n in sizes},
                            "sharded": {k: harness.summarize(v)
                                        for k, v in got["sharded_ns"].items()},
                            "other_load_cores": load}
    results["load_after"] = harness.loadavg()
    results["seconds"] = time.perf_counter() - t0
    (out / "mpi_results.json").write_text(json.dumps(results, indent=1))
    (out / "MPI_RESULTS.md").write_text(render(results))
    log(f"wrote {out / 'MPI_RESULTS.md'} and mpi_results.json ({results['seconds']:.0f} s)")
    return 0


class OthersLoad:
    """CPU used by processes other than this one and its children while a block runs, in
    cores (None without /proc): busy time from /proc/stat minus our own and our waited-for
    children's CPU time (harness.LoadMeter counts this process only)."""

    def __enter__(self):
        self.start, self.t0 = self._counters(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        end, wall = self._counters(), time.perf_counter() - self.t0
        self.cores = (None if self.start is None or end is None else
                      max(0.0, ((end[0] - self.start[0]) - (end[1] - self.start[1])) / wall))
        return False

    @staticmethod
    def _counters():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except OSError:
            return None
        t = os.times()
        busy = (sum(fields[:3]) + sum(fields[5:8])) / os.sysconf("SC_CLK_TCK")
        return busy, t.user + t.system + t.children_user + t.children_system


def _rank() -> int:
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank()


def machine() -> dict:
    info = {"funcnn": harness.funcnn_version(), "cpu": harness.cpu_model(),
            "logical_cpus": os.cpu_count(), "python": sys.version.split()[0],
            "numpy": np.__version__, "blas": harness.blas_info(),
            "env": {k: os.environ.get(k) for k in harness.ENV_VARS}}
    try:
        import mpi4py

        info["mpi4py"] = mpi4py.__version__
    except ImportError:
        info["mpi4py"] = None
    return info


# --- the report ---------------------------------------------------------------------------


def render(res: dict) -> str:
    m = res["machine"]
    blas = "; ".join(f"{b.get('internal_api')} {b.get('version') or ''} "
                     f"({b.get('architecture') or '?'})" for b in m["blas"]) or "unknown"
    lines = [
        "# funcnn on MPI: data-parallel scaling",
        "",
        "Generated by `python -m benchmarks.mpi_scaling`"
        + (" --quick (smoke run: NOT for comparison)" if res["quick"] else "")
        + f" in {res['seconds']:.0f} s. Method: [`README.md`](README.md#mpi-scaling); "
        "cost model: [`../docs/scaling.md`](../docs/scaling.md).",
        "",
        f"- funcnn: {m['funcnn']}; Python {m['python']}, numpy {m['numpy']}, mpi4py "
        f"{m['mpi4py']}, {res['allreduce']['library']}",
        f"- CPU: {m['cpu']}, {m['logical_cpus']} logical CPUs; BLAS: {blas}",
        f"- load average before / after: {_load(res['load_before'])} / {_load(res['load_after'])}",
        f"- every configuration ran {res['config']['rounds']} times in its own processes, "
        f"{res['config']['steps']} timed steps after {res['config']['warmup']} untimed ones, "
        "in a fresh random order per round; figures are medians (10th-90th percentile); a "
        f"run during which other processes used more than {QUIET_CORES} cores was run again "
        f"(up to {res['config']['quiet_tries']} times)",
        "",
    ]
    for key, w in res["workloads"].items():
        if "missing" in w:
            lines += [f"## {key}", "", f"Not measured: funcnn has no "
                      f"`fn.layers.{'`, `fn.layers.'.join(w['missing'])}` yet (issue 11). The row "
                      "appears here by itself once they exist (`t6_bench` in mpi_scaling.py).", ""]
            continue
        lines += step_table(key, w)
    lines += allreduce_table(res["allreduce"])
    return "\n".join(lines) + "\n"


def step_table(key: str, w: dict) -> list[str]:
    """The step table: from the quiet runs when every configuration had one, else all."""
    quiet = all(w["step_quiet"][label] for label, *_ in CONFIGS)
    use = w["step_quiet"] if quiet else w["step"]
    base = use[BASELINE]["median"]
    batch = 256 if key == "T4" else 128
    lines = [f"## {key}: one global step of batch {batch}", "",
             ("Figures from the quiet runs" if quiet else
              "Figures from all runs (some configuration had no quiet run)")
             + "; the last column is the median over all runs, loaded or not.", "",
             "| configuration | rows per rank | step, ms | steps/s | samples/s | speed-up vs "
             "1 process, 1 thread | quiet runs | all runs: step, ms |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, *_ in CONFIGS:
        s, a = use[label], w["step"][label]
        lines.append(f"| {label} | {w['rows_on_rank0'][label]} | {s['median'] * 1e3:.1f} "
                     f"({s['p10'] * 1e3:.1f}-{s['p90'] * 1e3:.1f}) | {1 / s['median']:.1f} | "
                     f"{batch / s['median']:.0f} | {base / s['median']:.2f}x | "
                     f"{w['quiet_runs'][label]} | {a['median'] * 1e3:.1f} |")
    ratio = base / use[TWO_RANKS]["median"]
    first = slice(0, 5)  # float32: later steps drift apart by rounding (summation order)
    same = all(np.allclose(v[first], w["losses"][BASELINE][first], rtol=1e-5)
               for v in w["losses"].values())
    lines += ["", f"Target (issue 12): 2 ranks >= 1.6x one single-threaded rank on T4. "
              f"Measured (fit's sharded step): **{ratio:.2f}x**, "
              f"{'met' if ratio >= 1.6 else 'not met'}."
              if key == "T4" else f"2 ranks vs one single-threaded rank: {ratio:.2f}x.",
              "", f"The first 5 losses of every configuration agree to 1e-5 relative: {same}. "
              f"Other processes used {_cores(w.get('other_load_cores'))} on average meanwhile.",
              ""]
    return lines + profile_table(key, w["profile"])


def profile_fit(parts: dict) -> tuple[float, float]:
    """Least squares ``fwd_bwd(b) = c0 + c1 * b`` over the profiled batch sizes (seconds),
    ``c0`` held at 0 or more (a time per step cannot be negative; caches can make the
    time per row grow with the batch, which tilts a free fit below zero)."""
    rows = np.array(PROFILE_ROWS, float)
    t = np.array([parts[f"fwd_bwd_{n}"]["median"] for n in PROFILE_ROWS])
    c1, c0 = np.polyfit(rows, t, 1)
    if c0 < 0:
        c0, c1 = 0.0, float(rows @ t / (rows @ rows))
    return float(c0), float(c1)


def profile_table(key: str, prof: dict) -> list[str]:
    parts = prof["parts"]
    c0, c1 = profile_fit(parts)
    lines = [f"### {key}: where a step's time goes (one process, one BLAS thread)", "",
             "| part | ms |", "| --- | --- |"]
    for n in PROFILE_ROWS:
        ms = parts[f"fwd_bwd_{n}"]["median"] * 1e3
        lines.append(f"| forward + backward, {n} rows | {ms:.2f} |")
    lines += [f"| Adam update, all {prof['n_params']:,} params | "
              f"{parts['update']['median'] * 1e3:.2f} |",
              f"| Adam update, the first half of the flat buffer (one of 2 ranks, sharded) | "
              f"{parts['update_half']['median'] * 1e3:.2f} |",
              f"| row weighting before the Allreduce (data_parallel) | "
              f"{parts['weight']['median'] * 1e3:.2f} |", "",
              f"Other processes used {_cores(prof.get('other_load_cores'))} meanwhile.", "",
              f"Fit: forward + backward = {c0 * 1e3:.2f} ms + {c1 * 1e6:.1f} µs x rows. With N "
              "ranks fit's sharded step is about fit(rows / N) + update / N + Reduce_scatter + "
              "Allgather; the data_parallel loop's is fit(rows / N) + update + weighting + "
              "Allreduce (docs/scaling.md).", ""]
    return lines


def allreduce_table(ar: dict) -> list[str]:
    sizes = sorted(ar["sizes"], key=int)
    t4, t6 = W.n_params(W.workloads()["T4"].spec), t6_params()
    names = {t4: "T4 grads", t6: "T6 grads", 1_800_000: "a 1.8M-param model"}
    lines = [f"## Allreduce on {ar['ranks']} ranks (float32, SUM, in place)", "",
             "| values | bytes | time, µs | bus bandwidth, GB/s | |",
             "| --- | --- | --- | --- | --- |"]
    b, t = [], []
    load = f"Other processes used {_cores(ar.get('other_load_cores'))} on average meanwhile."
    for n in sizes:
        s = ar["sizes"][n]
        nbytes = int(n) * 4
        bus = 2 * (ar["ranks"] - 1) / ar["ranks"] * nbytes / s["median"]
        lines.append(f"| {int(n):,} | {_bytes(nbytes)} | {s['median'] * 1e6:.1f} "
                     f"({s['p10'] * 1e6:.1f}-{s['p90'] * 1e6:.1f}) | {bus / 1e9:.2f} | "
                     f"{names.get(int(n), '')} |")
        b.append(nbytes)
        t.append(s["median"])
    latency, bandwidth = fit_latency_bandwidth(np.array(b, float), np.array(t))
    lines += ["", f"Fit of `t = latency + bytes / bandwidth` (2 ranks, so the ring's "
              f"2(N-1)/N is 1): latency **{latency * 1e6:.1f} µs**, bandwidth "
              f"**{bandwidth / 1e9:.2f} GB/s** (shared memory between two processes on one "
              f"machine, not a network). {load}", ""]
    sharded = ar.get("sharded")
    if sharded:
        rs, ag = sharded["reduce_scatter"], sharded["allgather"]
        lines += [f"The sharded step's collectives on T4's {t4:,} values, {ar['ranks']} ranks: "
                  f"Reduce_scatter {rs['median'] * 1e6:.0f} µs ({rs['p10'] * 1e6:.0f}-"
                  f"{rs['p90'] * 1e6:.0f}), Allgather in place into a new buffer "
                  f"{ag['median'] * 1e6:.0f} µs ({ag['p10'] * 1e6:.0f}-{ag['p90'] * 1e6:.0f}).", ""]
    return lines


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _cores(cores) -> str:
    return "n/a" if cores is None else f"{cores:.2f} cores"


def _load(avg) -> str:
    return "n/a" if avg is None else " ".join(f"{v:.2f}" for v in avg)


if __name__ == "__main__":
    sys.exit(main())
