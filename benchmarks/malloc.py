"""A funcnn training step alone in its process, with glibc's malloc as it comes and tuned.

    python -m benchmarks.malloc                # T4, T5, T6; ~3 minutes on 2 cores
    python -m benchmarks.malloc --only T6 --rounds 3

A CNN step allocates arrays the size of its activations every step. glibc serves big
blocks with fresh pages from the kernel (mmap, or heap it then trims), so each step
pays a page fault for every 4 KiB it touches first. ``benchmarks.run`` times every
library in one process, where the heap that torch and JAX hold hides most of this; here
each configuration runs ``fn.train_step`` alone in a fresh process (no torch, no JAX), in
interleaved rounds, with these environments:

- ``default``: glibc's malloc as it comes;
- ``MALLOC_TOP_PAD_=64 MiB``: the heap grows, and is trimmed, 64 MiB at a time;
- ``MALLOC_MMAP_THRESHOLD_ + MALLOC_TRIM_THRESHOLD_``: blocks up to 32 MiB come from the
  heap, which is trimmed only above 256 MiB free.

Each figure is the median step time over the rounds (each round: 5 untimed steps, then
the median of 30) and the page faults (``ru_minflt``) per step. Results are bitwise the
same in every environment: the process prints its final loss, compared across them.
Figures go to stdout (markdown); none is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent

ENVIRONMENTS = {
    "default": {},
    "MALLOC_TOP_PAD_=64 MiB": {"MALLOC_TOP_PAD_": str(64 << 20)},
    "MALLOC_MMAP_THRESHOLD_=32 MiB, MALLOC_TRIM_THRESHOLD_=256 MiB": {
        "MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)},
}
MALLOC_VARIABLES = ("MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
import numpy as np
import funcnn as fn
from benchmarks import workloads as W

wl = W.workloads()[{key!r}]
wl.n_samples = wl.batch
x, y, _ = wl.data()
params, _ = W.initial_params(wl)
model = W.build_funcnn_model(wl.spec, np.float32)
opt = fn.optim.adam(wl.lr, weight_decay=wl.weight_decay)
step = fn.train_step(model, W.funcnn_loss(fn, wl), opt)
xb, yb = x.astype(np.float32), y.astype(np.int64)
state = opt.init(params)
for _ in range(5):
    loss, params, state = step(params, state, xb, yb)
times, faults = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range({steps}):
    start = time.perf_counter()
    loss, params, state = step(params, state, xb, yb)
    times.append(time.perf_counter() - start)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
print(json.dumps({{"step": sorted(times)[len(times) // 2], "faults": faults / len(times),
                  "loss": float(loss)}}))
"""


def run_once(key: str, env: dict, steps: int) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in MALLOC_VARIABLES}
    code = CHILD.format(root=str(_ROOT), key=key, steps=steps)
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="T4,T5,T6", help="workloads (default: T4,T5,T6)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args(argv)
    keys = args.only.split(",")
    results = {(k, e): [] for k in keys for e in ENVIRONMENTS}
    for r in range(args.rounds):
        order = list(results)
        random.Random(r).shuffle(order)
        for key, name in order:
            results[key, name].append(run_once(key, ENVIRONMENTS[name], args.steps))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print("| workload | malloc | step, ms | page faults per step | vs default | final loss |")
    print("| --- | --- | --- | --- | --- | --- |")
    for key in keys:
        base = statistics.median(x["step"] for x in results[key, "default"])
        for name in ENVIRONMENTS:
            runs = results[key, name]
            step = statistics.median(x["step"] for x in runs)
            faults = statistics.median(x["faults"] for x in runs)
            losses = {x["loss"] for x in runs}
            print(f"| {key} | {name} | {step * 1e3:.1f} | {faults:.0f} | {step / base:.2f}x | "
                  f"{', '.join(f'{v:.9g}' for v in sorted(losses))} |")


if __name__ == "__main__":
    main()
