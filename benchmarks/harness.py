"""Timing, load and machine facts for the benchmark suite.

Timing is interleaved: every round runs a block of steps (or one epoch) of each
implementation, in a fresh random order, so a burst of machine noise lands on all of
them alike. The first step of each block is discarded (thread pools of one library may
still be spinning down when the next one starts); the reported figure is the median
over all kept steps of all rounds. Each block (and each epoch) starts again from the
initial weights, so every implementation is timed over the same training steps.
"""

from __future__ import annotations

import datetime
import gc
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ENV_VARS = (
    "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
    "MKL_NUM_THREADS", "XLA_FLAGS", "JAX_PLATFORMS",
)


@dataclass
class Runner:
    """An implementation together with its batches (already in its own format)."""

    impl: Any
    batches: list
    i: int = 0
    step_ns: list = field(default_factory=list)
    epoch_ns: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.impl.name

    def reset(self) -> None:
        """Back to the initial weights, optimizer state and first batch (untimed)."""
        if self.impl.reset is not None:
            self.impl.reset()
        self.i = 0

    def run_step(self) -> None:
        xb, yb = self.batches[self.i % len(self.batches)]
        self.i += 1
        self.impl.step(xb, yb)


def time_steps(runners: list[Runner], *, rounds: int, block_seconds: float,
               warmup_seconds: float, rng: np.random.Generator, min_block: int = 3,
               max_block: int = 200, discard: int = 1) -> None:
    """Fill each runner's ``step_ns`` with per-step wall times (nanoseconds).

    Every block starts from the initial weights and optimizer state on the first batch
    (``reset``, untimed), so all implementations are timed over the same training steps
    (at most ``max_block`` of them): the same numbers, the same regime.
    """
    runners = [r for r in runners if r.impl.step is not None]
    block = {}
    for r in runners:  # warm-up (includes JIT compilation), and a first estimate
        times = []
        end = time.perf_counter() + warmup_seconds
        while len(times) < 3 or time.perf_counter() < end:
            if r.i >= max_block + discard:
                r.reset()
            t0 = time.perf_counter_ns()
            r.run_step()
            times.append(time.perf_counter_ns() - t0)
        estimate = float(np.median(times[len(times) // 2:])) * 1e-9
        block[r.name] = int(np.clip(block_seconds / max(estimate, 1e-9), min_block, max_block))
    for _ in range(rounds):
        for k in rng.permutation(len(runners)):
            r = runners[k]
            r.reset()
            gc.collect()
            for j in range(discard + block[r.name]):
                t0 = time.perf_counter_ns()
                r.run_step()
                dt = time.perf_counter_ns() - t0
                if j >= discard:
                    r.step_ns.append(dt)


def time_epochs(runners: list[Runner], *, rounds: int, rng: np.random.Generator,
                warmup: int = 1) -> None:
    """Fill each runner's ``epoch_ns`` with whole-epoch wall times (shuffle + batches)."""
    runners = [r for r in runners if r.impl.epoch is not None]
    shuffle_rng = np.random.default_rng(12345)
    for r in runners:
        for _ in range(warmup):
            r.reset()
            r.impl.epoch(shuffle_rng)
    for _ in range(rounds):
        for k in rng.permutation(len(runners)):
            r = runners[k]
            r.reset()
            gc.collect()
            t0 = time.perf_counter_ns()
            r.impl.epoch(shuffle_rng)
            r.epoch_ns.append(time.perf_counter_ns() - t0)


def summarize(ns: list[int]) -> dict | None:
    """Median, 10th and 90th percentile (seconds) and the count, or None if empty."""
    if not ns:
        return None
    a = np.asarray(ns, dtype=np.float64) * 1e-9
    p10, med, p90 = np.percentile(a, [10, 50, 90])
    return {"median": float(med), "p10": float(p10), "p90": float(p90), "n": int(a.size)}


# --- other load on the machine ------------------------------------------------------------


class LoadMeter:
    """CPU used by *other* processes while a block of code runs, in cores (0 to ncpu).

    Total busy time from /proc/stat minus this process's own CPU time (all threads),
    over the wall time. Returns None where /proc is not available.
    """

    def __enter__(self):
        self.start = _cpu_counters()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        end = _cpu_counters()
        wall = time.perf_counter() - self.t0
        if self.start is None or end is None or wall <= 0:
            self.others = None
            return False
        busy = end[0] - self.start[0]
        mine = end[1] - self.start[1]
        self.others = max(0.0, (busy - mine) / wall)
        return False


def _cpu_counters():
    try:
        hz = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal (guest is inside user)
        busy = sum(fields[:3]) + sum(fields[5:8])
        with open("/proc/self/stat") as f:
            stat = f.read().rsplit(")", 1)[1].split()
        mine = int(stat[11]) + int(stat[12])  # utime, stime
        return busy / hz, mine / hz
    except (OSError, ValueError, IndexError):
        return None


def loadavg() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


# --- machine facts ------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info() -> list[dict]:
    """The BLAS and OpenMP libraries loaded in this process (threadpoolctl), or numpy's
    build config when threadpoolctl is not installed."""
    try:
        from threadpoolctl import threadpool_info

        return [
            {k: d.get(k) for k in ("user_api", "internal_api", "prefix", "version",
                                   "architecture", "threading_layer", "num_threads")}
            for d in threadpool_info()
        ]
    except ImportError:
        pass
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        return [{"user_api": "blas", "internal_api": blas.get("name"),
                 "version": blas.get("version"), "architecture": "(install threadpoolctl to see)",
                 "num_threads": None, "source": "numpy.show_config"}]
    except Exception:  # noqa: BLE001 - old numpy without mode="dicts"
        return [{"user_api": "blas", "internal_api": "unknown (install threadpoolctl)"}]


def funcnn_version() -> str:
    """The git commit of this checkout, "+ local changes" if any, and a hash of funcnn's
    sources (what was measured, even between commits)."""
    import hashlib
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for p in sorted((root / "funcnn").rglob("*.py")):
        h.update(p.read_bytes())
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "funcnn"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", ""
    where = f"commit {commit}" + (" + local changes" if dirty else "") if commit else "not a git checkout"
    return f"{where}; sources sha256 {h.hexdigest()[:12]}"


def machine_info(rivals: dict[str, str | None]) -> dict:
    info = {
        "funcnn": funcnn_version(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "torch": rivals.get("torch"),
        "jax": rivals.get("jax"),
        "env": {k: os.environ.get(k) for k in ENV_VARS},
        "niceness": os.nice(0) if hasattr(os, "nice") else None,
        "blas": blas_info(),
    }
    if rivals.get("torch"):
        import torch

        info["torch_threads"] = {"intra_op": torch.get_num_threads(),
                                 "inter_op": torch.get_num_interop_threads()}
    if rivals.get("jax"):
        import jax

        info["jax_devices"] = [str(d) for d in jax.devices()]
    try:
        import matplotlib

        info["matplotlib"] = matplotlib.__version__
    except ImportError:
        info["matplotlib"] = None
    return info
