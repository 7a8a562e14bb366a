"""funcnn.ops (convolution, pooling) against torch eager and jax.jit, per layer and for T5/T6.

    python -m benchmarks.conv_ops                  # float32, ~2 minutes on 2 cores
    python -m benchmarks.conv_ops --quick          # a smoke run (few rounds)
    python -m benchmarks.conv_ops --dtype float64
    python -m benchmarks.conv_ops --threads 1     # numpy's BLAS and torch on one thread each
    python -m benchmarks.conv_ops --before 1fadb21  # also that revision's funcnn.ops, interleaved

Every row times forward + backward of one thing on the issue's workloads, with the
same inputs for both sides, in interleaved rounds (each round runs a block of calls of
every implementation in a fresh random order; the first call of a block is discarded):

- each convolution and max-pool layer of T5 (x (64, 1, 8, 8)) and T6 (x (128, 1, 28, 28)),
  the first convolution without ``dx`` as in a model (nobody needs the data's gradient);
- the whole T5 and T6 models, forward + softmax cross-entropy + backward (no optimizer):
  funcnn.ops for convolutions and pools, numpy for ReLU, Flatten and Linear, against
  ``torch.nn.Sequential`` + ``F.cross_entropy`` + ``backward()`` and, when jax is
  installed, ``jax.jit(jax.value_and_grad(loss))`` of the same model (``lax`` convolution
  in NCHW/OIHW and ``reduce_window`` max pooling).

Before timing, each row checks that every side computes torch's outputs and gradients.
Also printed: the minor page faults per call of each side (the first touch of memory
the allocator got fresh from the kernel; each costs microseconds, measured and printed
too), what ``saved`` holds per layer, and the peak memory (tracemalloc) of the numpy T6
forward + backward against what it must hold. Figures go to stdout (markdown); none is
asserted anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import mmap
import resource
import sys
import time
import tracemalloc
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path[:1]:
    sys.path.insert(0, str(_ROOT))  # always this checkout's funcnn

import numpy as np

import funcnn.ops
from benchmarks import before as before_lib
from benchmarks import harness, run
from funcnn.ops import conv_forward, max_pool_forward

# (name, input shape, layers); a layer is ("conv", in, out, padding) | ("relu",) | ("pool", k)
# | ("flatten",) | ("linear", in, out)
T5 = ("T5 digits-cnn", (64, 1, 8, 8), [
    ("conv", 1, 16, 1), ("relu",), ("pool", 2), ("conv", 16, 32, 1), ("relu",), ("pool", 2),
    ("flatten",), ("linear", 128, 10),
])
T6 = ("T6 mnist-cnn", (128, 1, 28, 28), [
    ("conv", 1, 32, 0), ("relu",), ("pool", 2), ("conv", 32, 64, 0), ("relu",), ("pool", 2),
    ("flatten",), ("linear", 1600, 128), ("relu",), ("linear", 128, 10),
])


def make_params(layers, dtype, rng):
    params = []
    for spec in layers:
        if spec[0] == "conv":
            _, c_in, c_out, _ = spec
            scale = np.sqrt(2.0 / (c_in * 9))
            params.append((rng.standard_normal((c_out, c_in, 3, 3)) * scale, rng.standard_normal(c_out) * 0.1))
        elif spec[0] == "linear":
            _, n_in, n_out = spec
            params.append((rng.standard_normal((n_out, n_in)) * np.sqrt(2.0 / n_in), np.zeros(n_out)))
        else:
            params.append(None)
    return [None if p is None else tuple(a.astype(dtype) for a in p) for p in params]


# --- numpy (funcnn.ops) -------------------------------------------------------------


def numpy_forward_backward(layers, params, x, labels, ops=funcnn.ops):
    """Forward, mean softmax cross-entropy, backward; returns (loss, grads per layer, saved).
    ``ops``: the convolution and pooling ops (``funcnn.ops`` of this or another revision)."""
    saved, h = [], x
    for spec, p in zip(layers, params):
        kind = spec[0]
        if kind == "conv":
            h, s = ops.conv_forward(h, p[0], p[1], padding=spec[3])
        elif kind == "relu":
            h = s = np.maximum(h, 0)
        elif kind == "pool":
            h, s = ops.max_pool_forward(h, spec[1])
        elif kind == "flatten":
            s, h = h.shape, h.reshape(len(h), -1)
        else:
            s, h = h, h @ p[0].T + p[1]
        saved.append(s)
    shifted = h - h.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = len(labels)
    loss = -log_p[np.arange(n), labels].mean()
    d = np.exp(log_p)
    d[np.arange(n), labels] -= 1
    d /= n
    grads = [None] * len(layers)
    for i in range(len(layers) - 1, -1, -1):
        spec, p, s = layers[i], params[i], saved[i]
        kind, first = spec[0], i == 0
        if kind == "conv":
            dw, db, d = ops.conv_backward(s, d, need_dx=not first)
            grads[i] = (dw, db)
        elif kind == "relu":
            d = d * (s > 0)
        elif kind == "pool":
            d = ops.max_pool_backward(s, d)
        elif kind == "flatten":
            d = d.reshape(s)
        else:
            grads[i] = (d.T @ s, np.ones(len(d), d.dtype) @ d)
            d = d @ p[0]
    return loss, grads, saved


# --- torch ----------------------------------------------------------------------------


def torch_model(layers, params):
    import torch

    mods = []
    for spec, p in zip(layers, params):
        if spec[0] == "conv":
            m = torch.nn.Conv2d(spec[1], spec[2], 3, padding=spec[3])
        elif spec[0] == "linear":
            m = torch.nn.Linear(spec[1], spec[2])
        elif spec[0] == "relu":
            m = torch.nn.ReLU()
        elif spec[0] == "pool":
            m = torch.nn.MaxPool2d(spec[1])
        else:
            m = torch.nn.Flatten()
        if p is not None:  # in the params' dtype first: a float32 copy would round float64 params
            m = m.to(torch.from_numpy(p[0]).dtype)
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(p[0]))
                m.bias.copy_(torch.from_numpy(p[1]))
        mods.append(m)
    return torch.nn.Sequential(*mods)


def torch_forward_backward(model, x, labels):
    import torch

    model.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), labels)
    loss.backward()
    return loss


# --- rows -------------------------------------------------------------------------------


def layer_rows(workload, dtype, rng, sides):
    """One row per conv and pool layer: a closure per side (``{name: ops}``) and torch's, on
    that layer's real input."""
    import torch

    name, shape, layers = workload
    params = make_params(layers, dtype, rng)
    x = rng.standard_normal(shape).astype(dtype)
    rows, h, conv_i, pool_i = [], x, 0, 0
    for i, (spec, p) in enumerate(zip(layers, params)):
        if spec[0] == "conv":
            conv_i += 1
            rows.append((f"{name.split()[0]} conv{conv_i} {spec[1]}->{spec[2]}, x {h.shape}",
                         conv_pair(h, p, spec[3], need_dx=i > 0, sides=sides)))
            h = conv_forward(h, p[0], p[1], padding=spec[3])[0]
        elif spec[0] == "relu":
            h = np.maximum(h, 0)
        elif spec[0] == "pool":
            pool_i += 1
            rows.append((f"{name.split()[0]} pool{pool_i}, x {h.shape}", pool_pair(h, spec[1], sides)))
            h = max_pool_forward(h, spec[1])[0]
        else:
            break
    del torch
    return rows


def conv_pair(x, p, padding, need_dx, sides):
    import torch

    w, b = p
    y, _ = conv_forward(x, w, b, padding=padding)
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(x.dtype)
    dy_like_y = np.empty_like(y)
    dy_like_y[...] = dy  # in y's layout, as a ReLU's backward gives it
    xt = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_(need_dx)
    wt = torch.from_numpy(w.copy()).requires_grad_()
    bt = torch.from_numpy(b.copy()).requires_grad_()
    dyt = torch.from_numpy(dy)

    def ours(ops):
        def forward_backward():
            y, saved = ops.conv_forward(x, w, b, padding=padding)
            return (y, *ops.conv_backward(saved, dy_like_y, need_dx=need_dx))
        return forward_backward

    def theirs():
        wt.grad = bt.grad = xt.grad = None
        yt = torch.nn.functional.conv2d(xt, wt, bt, padding=padding)
        yt.backward(dyt)
        return yt, wt.grad, bt.grad, xt.grad

    return {**{side: ours(ops) for side, ops in sides.items()}, "torch": theirs}


def pool_pair(x, k, sides):
    import torch

    y, _ = max_pool_forward(x, k)
    dy = np.random.default_rng(2).standard_normal(y.shape).astype(x.dtype)
    xt = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_()
    dyt = torch.from_numpy(dy)

    def ours(ops):
        def forward_backward():
            y, saved = ops.max_pool_forward(x, k)
            return y, ops.max_pool_backward(saved, dy)
        return forward_backward

    def theirs():
        xt.grad = None
        yt = torch.nn.functional.max_pool2d(xt, k)
        yt.backward(dyt)
        return yt, xt.grad

    return {**{side: ours(ops) for side, ops in sides.items()}, "torch": theirs}


def model_row(workload, dtype, rng, sides):
    import torch

    name, shape, layers = workload
    params = make_params(layers, dtype, rng)
    x = rng.standard_normal(shape).astype(dtype)
    labels = rng.integers(0, 10, shape[0])
    model = torch_model(layers, params)
    xt, lt = torch.from_numpy(x), torch.from_numpy(labels)

    def ours(ops):
        def forward_backward():
            loss, grads, _ = numpy_forward_backward(layers, params, x, labels, ops)
            return (loss, *[g for pair in grads if pair is not None for g in pair])
        return forward_backward

    def theirs():
        loss = torch_forward_backward(model, xt, lt)
        return (loss, *[p.grad for p in model.parameters()])

    impls = {**{side: ours(ops) for side, ops in sides.items()}, "torch": theirs}
    jitted = jax_forward_backward(layers, params, x, labels)
    if jitted is not None:
        impls["jax.jit"] = jitted
    return f"{name} forward + loss + backward", impls


def check_same(impls, dtype, label):
    """Every implementation's outputs agree with torch's (relative to each array's scale)."""
    tol = 1e-4 if dtype == np.float32 else 1e-9
    reference = [as_numpy(b) for b in impls["torch"]()]
    for name, fn in impls.items():
        for i, (a, b) in enumerate(zip(fn(), reference)):
            if b is None:
                continue
            a = as_numpy(a)
            err = float(np.abs(a - b).max()) / max(float(np.abs(b).max()), 1e-30)
            if err > tol:
                raise AssertionError(f"{label}: {name} output {i} differs from torch by {err:.2e}")


def as_numpy(a):
    if a is None:
        return None
    return a.detach().numpy() if hasattr(a, "detach") else np.asarray(a)


def jax_forward_backward(layers, params, x, labels):
    """``jax.jit(jax.value_and_grad(loss))`` of the same model (NCHW/OIHW), or None without jax."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    if x.dtype == np.float64:  # jax computes in float32 unless asked (process-wide, fine here)
        jax.config.update("jax_enable_x64", True)

    def loss_fn(ps, x, labels):
        h = x
        for spec, p in zip(layers, ps):
            if spec[0] == "conv":
                pad = [(spec[3], spec[3])] * 2
                h = jax.lax.conv_general_dilated(h, p[0], (1, 1), pad,
                                                 dimension_numbers=("NCHW", "OIHW", "NCHW"))
                h = h + p[1][None, :, None, None]
            elif spec[0] == "relu":
                h = jnp.maximum(h, 0)
            elif spec[0] == "pool":
                k = spec[1]
                h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 1, k, k), (1, 1, k, k), "VALID")
            elif spec[0] == "flatten":
                h = h.reshape(h.shape[0], -1)
            else:
                h = h @ p[0].T + p[1]
        log_p = jax.nn.log_softmax(h, axis=1)
        return -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=1))

    step = jax.jit(jax.value_and_grad(loss_fn))
    ps = [tuple(jnp.asarray(a) for a in p) if p is not None else () for p in params]
    xj, lj = jnp.asarray(x), jnp.asarray(labels)

    def run():
        loss, grads = jax.block_until_ready(step(ps, xj, lj))
        return (loss, *[np.asarray(g) for pair in grads for g in pair])

    return run


# --- timing ----------------------------------------------------------------------------


def time_rows(rows, *, rounds, block_seconds, rng):
    """Interleaved: each round, every (row, side) runs a block of calls, in random order.
    Returns the times, the minor page faults per call, and the load of other processes."""
    jobs = [(label, side, fn) for label, impls in rows for side, fn in impls.items()]
    block = {}
    for label, side, fn in jobs:  # warm-up and block size
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        block[label, side] = int(np.clip(block_seconds / np.median(times[2:]), 3, 200))
    samples = {(label, side): [] for label, side, _ in jobs}
    faults = dict.fromkeys(samples, 0)
    with harness.LoadMeter() as load:
        for _ in range(rounds):
            for k in rng.permutation(len(jobs)):
                label, side, fn = jobs[k]
                gc.collect()
                for j in range(1 + block[label, side]):
                    faults_before = minor_faults()
                    t0 = time.perf_counter_ns()
                    fn()
                    dt = time.perf_counter_ns() - t0
                    if j:
                        samples[label, side].append(dt)
                        faults[label, side] += minor_faults() - faults_before
    per_call = {key: faults[key] / max(len(times), 1) for key, times in samples.items()}
    return samples, per_call, load.others


def minor_faults() -> int:
    """Minor page faults of this process so far (memory first touched after the kernel
    mapped it: fresh from the allocator)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def page_fault_cost(n_bytes: int = 16 << 20) -> float:
    """Seconds a minor page fault costs here: touch one byte a page of fresh anonymous memory."""
    with mmap.mmap(-1, n_bytes) as memory:
        pages = np.frombuffer(memory, np.uint8)[::mmap.PAGESIZE]
        faults_before, t0 = minor_faults(), time.perf_counter()
        pages[...] = 1
        seconds, faults = time.perf_counter() - t0, minor_faults() - faults_before
        del pages
    return seconds / max(faults, 1)


def measure_memory(dtype, rng):
    """Peak traced memory of the numpy T6 forward + backward, and what it must hold."""
    _name, shape, layers = T6
    params = make_params(layers, dtype, rng)
    x = rng.standard_normal(shape).astype(dtype)
    labels = rng.integers(0, 10, shape[0])
    numpy_forward_backward(layers, params, x, labels)  # warm caches
    gc.collect()
    tracemalloc.start()
    _, grads, saved = numpy_forward_backward(layers, params, x, labels)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    params_bytes = sum(a.nbytes for p in params if p for a in p)
    grads_bytes = sum(a.nbytes for g in grads if g for a in g)
    h, activations = x, 0
    for spec, p in zip(layers, params):  # every layer's output
        if spec[0] == "conv":
            h = conv_forward(h, p[0], p[1], padding=spec[3])[0]
        elif spec[0] == "relu":
            h = np.maximum(h, 0)
        elif spec[0] == "pool":
            h = max_pool_forward(h, spec[1])[0]
        elif spec[0] == "flatten":
            h = h.reshape(len(h), -1)
            continue  # a view
        else:
            h = h @ p[0].T + p[1]
        activations += h.nbytes
    saved_rows = []
    for spec, s in zip(layers, saved):
        if spec[0] == "conv":
            source = "a view of x" if s.geometry.inner is None else f"a padded copy, {mib(s.source.nbytes)}"
            cols = "rebuilt in the backward" if s.cols is None else f"kept, {mib(s.cols.base.nbytes)}"
            saved_rows.append((f"conv {spec[1]}->{spec[2]}", f"source: {source}; cols: {cols}"))
        elif spec[0] == "pool":
            saved_rows.append((f"max pool {spec[1]}", f"winner: {mib(s.winner.nbytes)} (uint8)"))
    return {"peak": peak, "activations": activations, "params": params_bytes, "grads": grads_bytes,
            "input": x.nbytes, "saved": saved_rows}


def jax_version() -> str | None:
    try:
        import jax
    except ImportError:
        return None
    return jax.__version__


def mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def fmt_ms(ns):
    return f"{np.median(ns) * 1e-6:.3f} ms" if np.median(ns) >= 1e5 else f"{np.median(ns) * 1e-3:.1f} µs"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.conv_ops", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few rounds: checks that it runs")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 15, quick 2)")
    p.add_argument("--threads", type=int, default=None,
                   help="limit numpy's BLAS (threadpoolctl) and torch to this many threads; 1 gives "
                        "steadier figures on a loaded machine")
    p.add_argument("--before", metavar="REV", default=None,
                   help="also time funcnn.ops as of git revision REV (e.g. a commit), interleaved")
    args = p.parse_args(argv)
    limiter = run.limit_threads(args.threads) if args.threads else None  # noqa: F841 - kept alive
    try:
        import torch
    except ImportError:
        print("torch is not installed (pip install torch==2.13.0): nothing to compare against")
        return 1
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    with (before_lib.funcnn_at(args.before, _ROOT) if args.before else contextlib.nullcontext()) as before:
        sides = {"ops": funcnn.ops, **({f"ops {before.rev}": before.fn.ops} if before else {})}
        rows = []
        for workload in (T5, T6):
            rows += layer_rows(workload, dtype, rng, sides)
            rows.append(model_row(workload, dtype, rng, sides))
        for label, impls in rows:
            check_same(impls, dtype, label)
        rounds = args.rounds or (2 if args.quick else 15)
        samples, faults, others = time_rows(rows, rounds=rounds,
                                            block_seconds=0.02 if args.quick else 0.15, rng=rng)
    info = harness.machine_info({"torch": torch.__version__, "jax": jax_version()})
    print(f"# funcnn.ops vs torch eager, {args.dtype}, forward + backward\n")
    print(f"{info['cpu']}, {info['usable_cpus']} usable cores; numpy {info['numpy']}, torch "
          f"{info['torch']} ({torch.get_num_threads()} threads), jax {info['jax']}, BLAS threads "
          f"{[b.get('num_threads') for b in info['blas']]}; {info['funcnn']}; "
          f"{rounds} interleaved rounds; other processes used {others:.2f} cores meanwhile.\n"
          if others is not None else "\n")
    print_times(rows, samples, list(sides))
    print(f"\nMinor page faults per call (memory fresh from the kernel; one costs "
          f"{page_fault_cost() * 1e6:.1f} µs here):\n")
    print_faults(rows, faults, list(sides))
    mem = measure_memory(dtype, rng)
    must = mem["activations"] + mem["params"] + mem["grads"] + mem["input"]
    print(f"\nT6 numpy forward + backward, peak traced memory {mem['peak'] / 2**20:.1f} MiB; "
          f"must hold {must / 2**20:.1f} MiB (input {mem['input'] / 2**20:.1f}, every layer's "
          f"output {mem['activations'] / 2**20:.1f}, params {mem['params'] / 2**20:.1f}, grads "
          f"{mem['grads'] / 2**20:.1f}): {mem['peak'] / must:.2f}x\n")
    print("| layer | saved |\n| --- | --- |")
    for layer, what in mem["saved"]:
        print(f"| {layer} | {what} |")
    return 0


def print_times(rows, samples, sides):
    """The timing table: each side, torch and jax.jit, and each side's ratio to torch (and to
    the first side, for the others: this revision against an earlier one)."""
    first, *others = sides
    head = [*sides, "torch eager", *[f"{s} / torch" for s in sides], *[f"{first} / {s}" for s in others],
            "jax.jit", f"{first} / jax.jit"]
    print("| what | " + " | ".join(head) + " |")
    print("|" + " --- |" * (len(head) + 1))
    for label, impls in rows:
        median = {side: np.median(samples[label, side]) for side in impls}
        cells = [fmt_ms(samples[label, side]) for side in [*sides, "torch"]]
        cells += [f"{median[side] / median['torch']:.2f}" for side in sides]
        cells += [f"{median[first] / median[side]:.2f}" for side in others]
        if "jax.jit" in impls:
            cells += [fmt_ms(samples[label, "jax.jit"]), f"{median[first] / median['jax.jit']:.2f}"]
        else:
            cells += ["", ""]
        print(f"| {label} | " + " | ".join(cells) + " |")


def print_faults(rows, faults, sides):
    print("| what | " + " | ".join([*sides, "torch eager"]) + " |")
    print("|" + " --- |" * (len(sides) + 2))
    for label, _impls in rows:
        print(f"| {label} | " + " | ".join(f"{faults[label, side]:.0f}" for side in [*sides, "torch"]) + " |")


if __name__ == "__main__":
    raise SystemExit(main())
