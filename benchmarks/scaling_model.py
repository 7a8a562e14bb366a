"""The data-parallel cost model of docs/scaling.md, from measured inputs; prints its tables.

    python -m benchmarks.scaling_model                      # reads benchmarks/mpi_results.json
    python -m benchmarks.scaling_model --results FILE.json

A step of ``fit(comm=...)`` with a sharded optimizer (Adam) on N ranks, each with ``b``
rows of a global batch of ``N * b``:

    T_N(b) = c0 + c1 * b + t_update / N + t_reduce_scatter(N) + t_allgather(N)
    t_reduce_scatter(N) + t_allgather(N)
           = 2 (N - 1) * latency + 2 (N - 1) / N * bytes / bandwidth              (ring)

``c0 + c1 * b`` is forward + backward (fitted to the measured profile), ``t_update`` the
optimizer update of all params (each rank runs 1/N of it); a ring Reduce_scatter and a
ring Allgather move what one ring Allreduce moves (it is those two). fit weights each
rank's loss gradient inside the backward, so there is no weighting pass.
One process does the whole global batch in ``T_1(N b) = c0 + c1 N b + t_update``, so

    speed-up S = T_1(N b) / T_N(b),   efficiency E = S / N.

The inputs are measured by ``python -m benchmarks.mpi_scaling`` (one BLAS thread). Where
T6 was not measured (a funcnn without convolution layers), its forward + backward is
estimated from its FLOPs at half the GEMM rate T4 reaches (im2col convolutions use
small, less efficient GEMMs), and its update from T4's per-parameter cost.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path[:1]:
    sys.path.insert(0, str(_ROOT))


from benchmarks import mpi_scaling as M
from benchmarks import workloads as W

# (name, latency s, bandwidth bytes/s): MPI over TCP on 10 GbE (~90% of 1.25 GB/s line
# rate, ~50 us per message); 100 Gb/s InfiniBand EDR with RDMA (~11 of 12.5 GB/s, ~2 us).
NETWORKS = (("10 GbE", 50e-6, 1.1e9), ("100 Gb InfiniBand", 2e-6, 11e9))
RANKS = (1, 2, 4, 8, 16, 32, 64)
CONV_EFFICIENCY = 0.5  # T6's FLOP rate as a fraction of T4's (an assumption, see above)


def t6_forward_macs() -> int:
    """Multiply-adds of one T6 sample's forward pass (28x28 input, 3x3 kernels, 2x2 pools)."""
    conv1 = 26 * 26 * 32 * (1 * 9)      # 28 -> 26, then pool -> 13
    conv2 = 11 * 11 * 64 * (32 * 9)     # 13 -> 11, then pool -> 5
    return conv1 + conv2 + 1600 * 128 + 128 * 10


def measured(results: dict, key: str, batch: int) -> dict | None:
    """A workload's inputs from its measured profile, or None if it was not measured."""
    prof = results["workloads"].get(key, {}).get("profile")
    if prof is None:
        return None
    c0, c1 = M.profile_fit(prof["parts"])
    return {"c0": c0, "c1": c1, "update": prof["parts"]["update"]["median"],
            "bytes": 4 * prof["n_params"],
            "batch": batch, "params": prof["n_params"], "note": "measured, one BLAS thread"}


def inputs(results: dict) -> dict:
    """``{workload: {c0, c1, update, bytes, batch, params, note}}`` (seconds,
    bytes): measured, or for T6 without a measurement, estimated from T4's."""
    t4 = measured(results, "T4", 256)
    return {"T4": t4, "T6": measured(results, "T6", 128) or t6_estimate(t4)}


def t6_estimate(t4: dict) -> dict:
    """T6's inputs from T4's: forward + backward by FLOPs at CONV_EFFICIENCY of T4's rate,
    the update by parameter count."""
    n4, n6 = t4["params"], M.t6_params()
    t4_flops = 6 * sum(leaf[1] * leaf[2] for leaf, _, _ in  # per row
                       W.layer_shapes(W.workloads()["T4"].spec, (1, 784)) if leaf[0] == "linear")
    t6_flops = 6 * t6_forward_macs()  # forward 2 FLOPs per MAC, backward twice the forward
    return {"c0": t4["c0"], "c1": t4["c1"] * t6_flops / t4_flops / CONV_EFFICIENCY,
            "update": t4["update"] * n6 / n4, "bytes": 4 * n6, "batch": 128, "params": n6,
            "note": f"estimated: {t6_flops / 1e6:.1f} MFLOP per row at "
                    f"{CONV_EFFICIENCY:.0%} of T4's rate"}


def collectives(n: int, nbytes: float, latency: float, bandwidth: float) -> float:
    """A ring Reduce_scatter plus a ring Allgather of ``nbytes`` (one ring Allreduce)."""
    return 0.0 if n == 1 else 2 * (n - 1) * latency + 2 * (n - 1) / n * nbytes / bandwidth


def step_time(w: dict, n: int, rows: float, latency: float, bandwidth: float) -> float:
    return (w["c0"] + w["c1"] * rows + w["update"] / n
            + collectives(n, w["bytes"], latency, bandwidth))


def min_rows_for(w: dict, n: int, latency: float, bandwidth: float, target: float = 0.8):
    """The fewest rows per rank ``b`` with efficiency ``T_1(n b) / (n T_n(b)) >= target``."""
    one = w["c0"] + w["update"]  # T_1(n b) without its rows' term
    all_ranks = n * (w["c0"] + collectives(n, w["bytes"], latency, bandwidth)) + w["update"]
    need = (target * all_ranks - one) / ((1 - target) * n * w["c1"])
    return max(1, math.ceil(need))


def tables(results: dict) -> str:
    out = []
    for key, w in inputs(results).items():
        out += [f"### {key}: {w['params']:,} params ({w['bytes'] / 2**20:.2f} MiB of float32 "
                f"grads), batch {w['batch']}", "",
                f"Inputs ({w['note']}): forward + backward {w['c0'] * 1e3:.2f} ms + "
                f"{w['c1'] * 1e6:.1f} µs x rows; update of all params {w['update'] * 1e3:.2f} "
                "ms.", ""]
        head = "| ranks N | rows per rank |" + "".join(
            f" {name}: Reduce_scatter + Allgather, ms | step, ms | speed-up |"
            for name, _, _ in NETWORKS)
        out += [f"Global batch fixed at {w['batch']} (strong scaling):", "", head,
                "|" + " --- |" * (2 + 3 * len(NETWORKS))]
        one = step_time(w, 1, w["batch"], 0, 1)
        for n in RANKS:
            rows = w["batch"] / n
            cells = ""
            for _, lat, bw in NETWORKS:
                t = step_time(w, n, rows, lat, bw)
                cells += (f" {collectives(n, w['bytes'], lat, bw) * 1e3:.2f} | {t * 1e3:.1f} | "
                          f"{one / t:.2f}x |")
            out.append(f"| {n} | {rows:g} |{cells}")
        out += ["", "Rows per rank (and global batch) for efficiency >= 80%:", "",
                "| ranks N |" + "".join(f" {name} |" for name, _, _ in NETWORKS),
                "|" + " --- |" * (1 + len(NETWORKS))]
        for n in RANKS[1:]:
            cells = ""
            for _, lat, bw in NETWORKS:
                b = min_rows_for(w, n, lat, bw)
                cells += f" {b:,} ({b * n:,}) |"
            out.append(f"| {n} |{cells}")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling_model", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default=str(Path(__file__).resolve().parent / "mpi_results.json"),
                   help="mpi_results.json written by python -m benchmarks.mpi_scaling")
    args = p.parse_args(argv)
    results = json.loads(Path(args.results).read_text())
    print(tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
