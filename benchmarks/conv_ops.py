"""funcnn.ops (convolution, pooling) against torch eager and jax.jit, per layer and for T5/T6.

    python -m benchmarks.conv_ops                  # float32, ~2 minutes on 2 cores
    python -m benchmarks.conv_ops --quick          # a smoke run (few rounds)
    python -m benchmarks.conv_ops --dtype float64
    python -m benchmarks.conv_ops --threads 1     # numpy's BLAS and torch on one thread each

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
Also printed: what ``saved`` holds per layer, and the peak memory (tracemalloc) of the
numpy T6 forward + backward against what it must hold. Figures go to stdout (markdown);
none is asserted anywhere.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path[:1]:
    sys.path.insert(0, str(_ROOT))  # always this checkout's funcnn

import numpy as np

from benchmarks import harness, run
from funcnn.ops import conv_backward, conv_forward, max_pool_backward, max_pool_forward

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


def numpy_forward_backward(layers, params, x, labels):
    """Forward, mean softmax cross-entropy, backward; returns (loss, grads per layer, saved)."""
    saved, h = [], x
    for spec, p in zip(layers, params):
        kind = spec[0]
        if kind == "conv":
            h, s = conv_forward(h, p[0], p[1], padding=spec[3])
        elif kind == "relu":
            h = s = np.maximum(h, 0)
        elif kind == "pool":
            h, s = max_pool_forward(h, spec[1])
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
            dw, db, d = conv_backward(s, d, need_dx=not first)
            grads[i] = (dw, db)
        elif kind == "relu":
            d = d * (s > 0)
        elif kind == "pool":
            d = max_pool_backward(s, d)
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


def layer_rows(workload, dtype, rng):
    """One row per conv and pool layer: numpy and torch closures on that layer's real input."""
    import torch

    name, shape, layers = workload
    params = make_params(layers, dtype, rng)
    x = rng.standard_normal(shape).astype(dtype)
    rows, h, conv_i, pool_i = [], x, 0, 0
    for i, (spec, p) in enumerate(zip(layers, params)):
        if spec[0] == "conv":
            conv_i += 1
            rows.append((f"{name.split()[0]} conv{conv_i} {spec[1]}->{spec[2]}, x {h.shape}",
                         conv_pair(h, p, spec[3], need_dx=i > 0)))
            h = conv_forward(h, p[0], p[1], padding=spec[3])[0]
        elif spec[0] == "relu":
            h = np.maximum(h, 0)
        elif spec[0] == "pool":
            pool_i += 1
            rows.append((f"{name.split()[0]} pool{pool_i}, x {h.shape}", pool_pair(h, spec[1])))
            h = max_pool_forward(h, spec[1])[0]
        else:
            break
    del torch
    return rows


def conv_pair(x, p, padding, need_dx):
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

    def ours():
        y, saved = conv_forward(x, w, b, padding=padding)
        return (y, *conv_backward(saved, dy_like_y, need_dx=need_dx))

    def theirs():
        wt.grad = bt.grad = xt.grad = None
        yt = torch.nn.functional.conv2d(xt, wt, bt, padding=padding)
        yt.backward(dyt)
        return yt, wt.grad, bt.grad, xt.grad

    return {"ops": ours, "torch": theirs}


def pool_pair(x, k):
    import torch

    y, _ = max_pool_forward(x, k)
    dy = np.random.default_rng(2).standard_normal(y.shape).astype(x.dtype)
    xt = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_()
    dyt = torch.from_numpy(dy)

    def ours():
        y, saved = max_pool_forward(x, k)
        return y, max_pool_backward(saved, dy)

    def theirs():
        xt.grad = None
        yt = torch.nn.functional.max_pool2d(xt, k)
        yt.backward(dyt)
        return yt, xt.grad

    return {"ops": ours, "torch": theirs}


def model_row(workload, dtype, rng):
    import torch

    name, shape, layers = workload
    params = make_params(layers, dtype, rng)
    x = rng.standard_normal(shape).astype(dtype)
    labels = rng.integers(0, 10, shape[0])
    model = torch_model(layers, params)
    xt, lt = torch.from_numpy(x), torch.from_numpy(labels)

    def ours():
        loss, grads, _ = numpy_forward_backward(layers, params, x, labels)
        return (loss, *[g for pair in grads if pair is not None for g in pair])

    def theirs():
        loss = torch_forward_backward(model, xt, lt)
        return (loss, *[p.grad for p in model.parameters()])

    impls = {"ops": ours, "torch": theirs}
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
    """Interleaved: each round, every (row, side) runs a block of calls, in random order."""
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
    with harness.LoadMeter() as load:
        for _ in range(rounds):
            for k in rng.permutation(len(jobs)):
                label, side, fn = jobs[k]
                gc.collect()
                for j in range(1 + block[label, side]):
                    t0 = time.perf_counter_ns()
                    fn()
                    dt = time.perf_counter_ns() - t0
                    if j:
                        samples[label, side].append(dt)
    return samples, load.others


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
    args = p.parse_args(argv)
    limiter = run.limit_threads(args.threads) if args.threads else None  # noqa: F841 - kept alive
    try:
        import torch
    except ImportError:
        print("torch is not installed (pip install torch==2.13.0): nothing to compare against")
        return 1
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    rows = []
    for workload in (T5, T6):
        rows += layer_rows(workload, dtype, rng)
        rows.append(model_row(workload, dtype, rng))
    for label, impls in rows:
        check_same(impls, dtype, label)
    rounds = args.rounds or (2 if args.quick else 15)
    samples, others = time_rows(rows, rounds=rounds, block_seconds=0.02 if args.quick else 0.15, rng=rng)
    info = harness.machine_info({"torch": torch.__version__, "jax": jax_version()})
    print(f"# funcnn.ops vs torch eager, {args.dtype}, forward + backward\n")
    print(f"{info['cpu']}, {info['usable_cpus']} usable cores; numpy {info['numpy']}, torch "
          f"{info['torch']} ({torch.get_num_threads()} threads), jax {info['jax']}, BLAS threads "
          f"{[b.get('num_threads') for b in info['blas']]}; {info['funcnn']}; "
          f"{rounds} interleaved rounds; other processes used {others:.2f} cores meanwhile.\n"
          if others is not None else "\n")
    print("| what | funcnn.ops | torch eager | ops / torch | jax.jit | ops / jax.jit |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, impls in rows:
        a, b = samples[label, "ops"], samples[label, "torch"]
        line = f"| {label} | {fmt_ms(a)} | {fmt_ms(b)} | {np.median(a) / np.median(b):.2f} |"
        if "jax.jit" in impls:
            c = samples[label, "jax.jit"]
            line += f" {fmt_ms(c)} | {np.median(a) / np.median(c):.2f} |"
        else:
            line += " | |"
        print(line)
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


if __name__ == "__main__":
    raise SystemExit(main())
