"""Element-wise work over big 1-D buffers, in cache-sized blocks, on one thread or two.

Optimizers run their update rules through :func:`run_elementwise`. The pool it may use
is the only thread state in funcnn; it changes speed, never a result (an element-wise
kernel gives the same bits however its range is cut).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_LOCK = threading.Lock()

# --- element-wise work in cache-sized blocks, on one thread or two ----------------------

# Measured on the benchmark machine (2 cores, 2 MiB L2 each) with Adam's kernel over the
# 1.9M params of benchmark T4: one thread is best with blocks whose temporaries stay in
# L2; two threads need bigger blocks, as each ufunc call takes the GIL. Two threads win
# on a quiet machine (3.3 vs 3.7 ms) but lose inside a training loop (in place: 5.3 vs
# 4.8 ms; fresh outputs: 7.9 vs 6.9 ms): after each multi-threaded GEMM, OpenBLAS's
# worker threads busy-wait for about 0.1 s and take the second core. So one thread is
# the default; FUNCNN_ELEMENTWISE_THREADS=2 splits the work when BLAS does not spin
# (e.g. OPENBLAS_THREAD_TIMEOUT=4, or a single-threaded BLAS).
PARALLEL_MIN = 1 << 18  # elements; below this one call, no blocks
BLOCK = 1 << 15  # elements per block, one thread
BLOCK_SPLIT = 1 << 17  # elements per block, two threads

_pool_state: dict = {}  # {"current": (pid, pool or None)}, replaced under _LOCK


def _threads() -> int:
    """1, or 2 if FUNCNN_ELEMENTWISE_THREADS asks for it and two cores are usable."""
    wanted = os.environ.get("FUNCNN_ELEMENTWISE_THREADS", "1").strip()
    if wanted not in ("1", "2"):
        raise ValueError(f"FUNCNN_ELEMENTWISE_THREADS must be 1 or 2, got {wanted!r}")
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    return min(int(wanted), usable)


def _pool() -> ThreadPoolExecutor | None:
    """A one-worker pool if two threads are wanted (see _threads), else None; made on
    first use (and again in a forked child)."""
    state = _pool_state.get("current")
    pid = os.getpid()
    if state is not None and state[0] == pid:
        return state[1]
    with _LOCK:
        state = _pool_state.get("current")
        if state is None or state[0] != pid:
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="funcnn") if _threads() > 1 else None
            state = (pid, pool)
            _pool_state["current"] = state
    return state[1]


def run_elementwise(kernel: Callable[[int, int], None], n: int) -> None:
    """Call ``kernel(lo, hi)`` over ``[0, n)``: at once when small, else in cache-sized
    blocks, split between two threads if FUNCNN_ELEMENTWISE_THREADS=2 (numpy releases
    the GIL in ufunc loops).

    ``kernel`` must be element-wise: then the result is bitwise the same however the
    range is cut.
    """
    if n < PARALLEL_MIN:
        kernel(0, n)
        return
    pool = _pool()
    if pool is None:
        _blocks(kernel, 0, n, BLOCK)
        return
    cut = (n // 2) & ~1023
    future = pool.submit(_blocks, kernel, cut, n, BLOCK_SPLIT, np.geterr())  # the caller's errstate
    try:
        _blocks(kernel, 0, cut, BLOCK_SPLIT)
    finally:
        future.result()


def _blocks(kernel, lo: int, hi: int, block: int, errors: dict | None = None) -> None:
    if errors is not None:
        with np.errstate(**errors):
            _blocks(kernel, lo, hi, block)
        return
    for a in range(lo, hi, block):
        kernel(a, min(a + block, hi))


__all__ = ["run_elementwise"]
