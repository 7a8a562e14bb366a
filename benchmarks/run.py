"""Run the funcnn benchmark suite and write RESULTS.md, results.json and scaling.png.

    python -m benchmarks.run                 # everything (a few minutes on 2 cores)
    python -m benchmarks.run --quick         # ~1 minute smoke run (CI uses this)
    python -m benchmarks.run --only T1,T4    # some sections: T1 T2 T3 T4 T5 T6 memory scaling
    python -m benchmarks.run --out /tmp/b    # write the results somewhere else
    python -m benchmarks.run --before d0fb894  # add that revision's funcnn to T1-T6

Rivals that are not installed (torch, jax, matplotlib, threadpoolctl) are skipped with
a note. No figure here is ever asserted: these are measurements, not tests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path[:1]:
    sys.path.insert(0, str(_ROOT))  # run from anywhere, and always this checkout's funcnn

import numpy as np

from benchmarks import before as before_lib
from benchmarks import harness, report
from benchmarks import workloads as W

WORKLOADS = ("T1", "T2", "T3", "T4", "T5", "T6")
SECTIONS = (*WORKLOADS, "memory", "scaling")
STEP_MEMORY = ("T6",)  # sections that also measure a funcnn step's memory (T4's: "memory")

# Budgets. "block" is the wall time of one implementation's turn in a round; "sections"
# override them for some workloads (T4, T6 take tens of ms a step), "samples" shrinks a
# workload's data set (None: its own size).
FULL = {
    "rounds": 25, "block_seconds": 0.1, "warmup_seconds": 0.3, "epoch_rounds": 11, "samples": None,
    "sections": {
        "T4": {"rounds": 9, "block_seconds": 0.3, "epoch_rounds": 5},
        "T6": {"rounds": 9, "block_seconds": 0.3, "epoch_rounds": 3},
    },
    "check_steps": 5,
    "scaling_batches": [16, 32, 64, 128, 256, 512, 1024, 2048],
    "scaling_widths": [16, 32, 64, 128, 256, 512, 1024, 2048],
    "scaling_rounds": 5, "scaling_block_seconds": 0.1, "scaling_rivals": True,
}
QUICK = {
    "rounds": 3, "block_seconds": 0.02, "warmup_seconds": 0.05, "epoch_rounds": 2, "samples": None,
    "sections": {
        "T4": {"rounds": 2, "block_seconds": 0.05, "epoch_rounds": 1, "samples": 1024},
        "T5": {"samples": 256},
        "T6": {"rounds": 1, "block_seconds": 0.05, "epoch_rounds": 1, "samples": 256},
    },
    "check_steps": 3,
    "scaling_batches": [16, 128], "scaling_widths": [16, 256],
    "scaling_rounds": 2, "scaling_block_seconds": 0.02, "scaling_rivals": False,
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="a ~1 minute smoke run (few rounds, small T4-T6 data sets)")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections out of {','.join(SECTIONS)} (default: all)")
    p.add_argument("--threads", type=int, default=None,
                   help="limit BLAS/OpenMP (threadpoolctl), torch and XLA to this many threads "
                        "(default: each library's own default); e.g. 1 on a loaded machine")
    p.add_argument("--before", metavar="REV", default=None,
                   help="also time funcnn as of git revision REV (e.g. a commit) in T1-T6, "
                        "interleaved with this checkout's funcnn (default: no such row)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent),
                   help="directory for RESULTS.md, results.json, scaling.png (default: benchmarks/)")
    args = p.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        p.error(f"--only: unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    args.only = only
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def limit_threads(n: int):
    """Limit every library to ``n`` threads; returns the threadpoolctl limiter (keep it)."""
    if n == 1:  # XLA reads this when jax starts its CPU backend (not yet started here)
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()
    try:
        import torch

        torch.set_num_threads(n)
    except Exception:  # noqa: BLE001 - torch missing: nothing to limit
        pass
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        log("--threads: threadpoolctl is not installed, so numpy's BLAS keeps its default; "
            "set OPENBLAS_NUM_THREADS for the command instead")
        return None
    return threadpool_limits(limits=n)


def log(msg: str) -> None:
    print(msg, flush=True)


def make_impls(wl, x, y, params0, weights, rivals, *, with_floor: bool, with_seed: bool = True,
               with_scan: bool = True, with_fused: bool = False, with_user_layer: bool = False,
               before: before_lib.Before | None = None):
    impls, notes = [W.funcnn_impl(wl, x, y, params0), W.funcnn_impl(wl, x, y, params0, donate=True)], []
    if before is not None:
        if W.is_cnn(wl.spec) and not hasattr(before.fn.layers, "Conv2d"):
            notes.append(f"funcnn of commit {before.rev} has no Conv2d: its row is skipped")
        else:
            impls.append(W.funcnn_before_impl(wl, x, y, params0, before))
    if with_user_layer:
        impls.append(W.funcnn_user_layer_impl(wl, x, y, params0))
    if with_seed:
        impls.append(W.seed_impl(wl, x, y, weights))
    if rivals.get("torch"):
        impls.append(W.torch_impl(wl, x, y, weights))
        if with_fused:
            impls.append(W.torch_impl(wl, x, y, weights, fused=True))
    else:
        notes.append("torch not installed: its rows are skipped")
    if rivals.get("jax"):
        impls.append(W.jax_impl(wl, x, y, weights))
        if with_scan:
            impls.append(W.jax_scan_impl(wl, x, y, weights))
    else:
        notes.append("jax not installed: its rows are skipped")
    if with_floor:
        impls.append(W.gemm_floor_impl(wl))
    return impls, notes


def batches_for(wl, x, y):
    """The full-size batches of one shuffled epoch (the same for every implementation)."""
    perm = np.random.default_rng(0).permutation(x.shape[0])
    return [(x[perm[s:s + wl.batch]], y[perm[s:s + wl.batch]])
            for s in range(0, x.shape[0] - wl.batch + 1, wl.batch)]


def budget(cfg, key: str) -> dict:
    """The rounds, block seconds, epoch rounds and samples of workload ``key``."""
    default = {name: cfg[name] for name in ("rounds", "block_seconds", "epoch_rounds", "samples")}
    return {**default, **cfg["sections"].get(key, {})}


def run_workload(wl, cfg, rivals, rng, before=None):
    small, cnn = wl.key in report.SMALL_MLPS, W.is_cnn(wl.spec)
    plan = budget(cfg, wl.key)
    wl.n_samples = plan["samples"]
    x, y, data_desc = wl.data()
    params0, weights = W.initial_params(wl)
    impls, notes = make_impls(wl, x, y, params0, weights, rivals, with_floor=not small,
                              with_seed=not cnn, with_scan=not cnn, with_fused=wl.key == "T4",
                              with_user_layer=small, before=before)
    raw = batches_for(wl, x, y)
    runners = [harness.Runner(im, [im.convert(xb, yb) for xb, yb in raw]) for im in impls]

    # Same weights, same batches: the first losses must agree (seed: forward only).
    check = {}
    for r in runners:
        if r.impl.step is None or r.impl.name == "numpy GEMM floor":
            continue
        losses = []
        for _ in range(cfg["check_steps"]):
            xb, yb = r.batches[r.i % len(r.batches)]
            r.i += 1
            losses.append(r.impl.to_float(r.impl.step(xb, yb)))
        check[r.name] = losses

    with harness.LoadMeter() as load:
        harness.time_steps(runners, rounds=plan["rounds"], block_seconds=plan["block_seconds"],
                           warmup_seconds=cfg["warmup_seconds"], rng=rng)
        harness.time_epochs(runners, rounds=plan["epoch_rounds"], rng=rng)
    rows = []
    for r in runners:
        rows.append({
            "name": r.name, "dtype": r.impl.dtype, "note": r.impl.note,
            "step": harness.summarize(r.step_ns), "epoch": harness.summarize(r.epoch_ns),
        })
    return {
        "key": wl.key, "title": wl.title, "layers": wl.desc, "n_params": W.n_params(wl.spec),
        "loss": wl.loss, "lr": wl.lr, "weight_decay": wl.weight_decay, "batch": wl.batch,
        "data": data_desc, "n_samples": int(x.shape[0]),
        "n_batches": W.n_batches(x.shape[0], wl.batch), "rows": rows, "check": check,
        "notes": notes, "other_load_cores": load.others,
        "gemm_gflop_per_step": None if small else W.gemm_flops(wl) * 1e-9,
        "memory": measure_memory(wl.key) if wl.key in STEP_MEMORY else None,
    }


def run_workloads(only, cfg, rivals, rng, before) -> list[dict]:
    """The results of the sections T1-T6 that are in ``only``."""
    all_workloads, done = W.workloads(), []
    for key in WORKLOADS:
        if key in only:
            log(f"{key} {all_workloads[key].title} ...")
            t0 = time.perf_counter()
            res = run_workload(all_workloads[key], cfg, rivals, rng, before)
            res["seconds"] = time.perf_counter() - t0
            done.append(res)
            for row in res["rows"]:
                log(f"  {row['name']:26s} step {report.fmt_time(row['step'] and row['step']['median']):>10s}"
                    f"  epoch {report.fmt_time(row['epoch'] and row['epoch']['median']):>10s}")
            if res["memory"]:
                log_memory(key, res["memory"])
            log(f"  ({res['seconds']:.0f} s, other processes used {res['other_load_cores'] or 0:.2f} cores)")
    return done


def log_memory(key: str, mem: dict) -> None:
    log(f"  memory of a {key} funcnn step: peak {mem['peak_bytes'] / 2**20:.1f} MiB, "
        f"{mem['ratio']:.2f}x what it must hold; donated: {mem['donated_peak_bytes'] / 2**20:.1f} "
        f"MiB, {mem['donated_ratio']:.2f}x")


def measure_memory(key: str) -> dict:
    """Peak traced memory of one funcnn step (the second) of workload ``key`` on one
    batch vs the bytes it must hold, with a pure and with a donated update."""
    import tracemalloc

    import funcnn as fn

    wl = W.workloads()[key]
    wl.n_samples = wl.batch
    x, y, _ = wl.data()
    params0, _ = W.initial_params(wl)
    model = W.build_funcnn_model(wl.spec, np.float32)
    opt = fn.optim.adam(wl.lr, weight_decay=wl.weight_decay)
    value_and_grad = fn.value_and_grad(model, W.funcnn_loss(fn, wl))
    xb, yb = x.astype(np.float32), y.astype(np.int64)
    measured = {}
    for donate in (False, True):
        tracemalloc.start()
        try:
            params = fn.tree.map(np.copy, params0)
            state = opt.init(params)
            # One untimed step first: the steady state of a training loop (an optimizer
            # lays params and state out as one flat buffer each after its first update).
            _, grads = value_and_grad(params, xb, yb)
            params, state = opt.update(grads, state, params, donate=donate)
            del grads
            held, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            _, grads = value_and_grad(params, xb, yb)
            after_grad, peak_grad = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            params, state = opt.update(grads, state, params, donate=donate)
            after_update, peak_update = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        del params, state, grads
        measured[donate] = held, after_grad, peak_grad, after_update, peak_update
    p_bytes = W.n_params(wl.spec) * 4
    act_bytes = W.saved_activations(wl) * 4
    batch_bytes = xb.nbytes + yb.nbytes
    must = p_bytes * 4 + act_bytes  # params + grads + Adam mu, nu + activations
    out = {
        "params_bytes": p_bytes, "grads_bytes": p_bytes, "opt_state_bytes": 2 * p_bytes,
        "batch": wl.batch, "activations_bytes": act_bytes, "batch_bytes": batch_bytes,
        "must_hold_bytes": must,
        "pure_update_floor_bytes": 7 * p_bytes + batch_bytes,
    }
    for donate, prefix in ((False, ""), (True, "donated_")):
        held, after_grad, peak_grad, after_update, peak_update = measured[donate]
        out.update({
            f"{prefix}held_before_bytes": held, f"{prefix}peak_grad_bytes": peak_grad,
            f"{prefix}after_grad_bytes": after_grad, f"{prefix}peak_update_bytes": peak_update,
            f"{prefix}after_update_bytes": after_update,
            f"{prefix}peak_bytes": max(peak_grad, peak_update),
            f"{prefix}ratio": max(peak_grad, peak_update) / must,
        })
    return out


def run_scaling(cfg, rivals, rng):
    points = [("batch", b, 1024) for b in cfg["scaling_batches"]]
    points += [("width", 256, w) for w in cfg["scaling_widths"]]
    results = []
    use_rivals = rivals if cfg["scaling_rivals"] else {}
    with harness.LoadMeter() as load:
        for axis, b, w in points:
            wl = W.scaling_workload(b, w)
            x, y, _ = wl.data()
            params0, weights = W.initial_params(wl)
            impls, _ = make_impls(wl, x, y, params0, weights, use_rivals, with_floor=True,
                                  with_seed=False, with_scan=False)
            runners = [harness.Runner(im, [im.convert(xb, yb) for xb, yb in batches_for(wl, x, y)])
                       for im in impls]
            harness.time_steps(runners, rounds=cfg["scaling_rounds"],
                               block_seconds=cfg["scaling_block_seconds"],
                               warmup_seconds=cfg["warmup_seconds"], rng=rng)
            row = {"axis": axis, "batch": b, "width": w, "gflop": W.gemm_flops(wl) * 1e-9,
                   "times": {r.name: harness.summarize(r.step_ns)["median"] for r in runners}}
            results.append(row)
            log(f"  scaling {axis}: batch {b:5d} width {w:5d}  " + "  ".join(
                f"{k} {report.fmt_time(v)}" for k, v in row["times"].items()))
    return {"points": results, "other_load_cores": load.others}


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = QUICK if args.quick else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    load_before = harness.loadavg()
    log(f"funcnn benchmarks ({'quick' if args.quick else 'full'} run): {', '.join(args.only)}")
    limiter = limit_threads(args.threads) if args.threads else None  # noqa: F841 - kept alive
    rivals = W.rival_status()
    log("rivals: " + ", ".join(f"{k} {v or 'not installed (skipped)'}" for k, v in rivals.items()))
    rng = np.random.default_rng(2024)
    results = {"mode": "quick" if args.quick else "full", "argv": sys.argv[1:] if argv is None else argv,
               "threads": args.threads, "before": None,
               "workloads": [], "memory": None, "scaling": None}
    with (before_lib.funcnn_at(args.before, _ROOT) if args.before else contextlib.nullcontext()) as before:
        if before:
            log(f"before: funcnn of commit {before.rev}, imported as {before.fn.__name__}")
            results["before"] = before.rev
        results["workloads"] = run_workloads(args.only, cfg, rivals, rng, before)
    if "memory" in args.only:
        log("memory (T4 funcnn step, tracemalloc) ...")
        results["memory"] = measure_memory("T4")
        log_memory("T4", results["memory"])
    if "scaling" in args.only:
        log("scaling (784-w-w-10 MLP: batch sweep at width 1024, width sweep at batch 256) ...")
        t0 = time.perf_counter()
        results["scaling"] = run_scaling(cfg, rivals, rng)
        log(f"  ({time.perf_counter() - t0:.0f} s)")
    # Machine facts last: threadpoolctl then sees every BLAS/OpenMP library loaded.
    results["machine"] = harness.machine_info(rivals)
    results["machine"]["loadavg_before"] = load_before
    results["machine"]["loadavg_after"] = harness.loadavg()
    results["seconds"] = time.perf_counter() - t_start
    plot_note = None
    if results["scaling"]:
        plot_note = report.plot_scaling(results["scaling"], out / "scaling.png")
    results["plot"] = plot_note
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "RESULTS.md").write_text(report.markdown(results))
    log(f"wrote {out / 'RESULTS.md'} ({results['seconds']:.0f} s)")
    if plot_note and not plot_note.endswith(".png"):
        log(plot_note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
