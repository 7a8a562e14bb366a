"""Where a funcnn training step spends its time, for T1-T4.

    python -m benchmarks.profile_funcnn [--only T1,T4] [--out benchmarks/PROFILE.md]

For each workload:

1. phases: forward (``model.vjp``), loss (``loss.value_and_grad``), backward (the
   pullback), update (``opt.update``), medians over many steps;
2. numpy calls per step, by name, counted with an ndarray subclass that sees every
   ufunc call (operators included) and every ``__array_function__`` call at top level;
   it also flags float32 inputs that produced float64 results (accidental upcasts);
3. cProfile's top functions by own time (Python overhead shows up here: checks, tree
   walks, closures).

Nothing in funcnn is changed; the profile reads it as it is.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path[:1]:
    sys.path.insert(0, str(_ROOT))

import numpy as np

import funcnn as fn
from benchmarks import workloads as W


def setup(wl):
    x, y, _ = wl.data()
    params, _ = W.initial_params(wl)
    model = W.build_funcnn_model(wl.spec, np.float32)
    loss = fn.losses.mse if wl.loss == "mse" else fn.losses.softmax_cross_entropy
    opt = fn.optim.adam(wl.lr, weight_decay=wl.weight_decay)
    xb = x[: wl.batch].astype(np.float32)
    yb = y[: wl.batch].astype(np.int64) if wl.loss == "ce" else y[: wl.batch].astype(np.float32)
    return model, loss, opt, params, opt.init(params), xb, yb


# --- 1. phases ----------------------------------------------------------------------------


def phases(wl, n_steps: int) -> dict[str, float]:
    model, loss, opt, params, state, xb, yb = setup(wl)
    t = collections.defaultdict(list)
    clock = time.perf_counter
    for i in range(n_steps):
        t0 = clock()
        pred, pullback = model.vjp(params, xb)
        t1 = clock()
        value, dpred = loss.value_and_grad(pred, yb)
        t2 = clock()
        grads, _ = pullback(dpred)
        t3 = clock()
        params, state = opt.update(grads, state, params)
        t4 = clock()
        if i >= n_steps // 5:
            for k, a, b in (("forward (model.vjp)", t0, t1), ("loss", t1, t2),
                            ("backward (pullback)", t2, t3), ("update (opt.update)", t3, t4),
                            ("step", t0, t4)):
                t[k].append(b - a)
    return {k: float(np.median(v)) for k, v in t.items()}


# --- 2. numpy calls -----------------------------------------------------------------------


class Counted(np.ndarray):
    """An ndarray that counts the numpy calls made on it (top-level only)."""

    counts: collections.Counter = collections.Counter()
    upcasts: collections.Counter = collections.Counter()
    depth = 0

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        args = [a.view(np.ndarray) if isinstance(a, Counted) else a for a in inputs]
        if out is not None:
            kwargs["out"] = tuple(o.view(np.ndarray) if isinstance(o, Counted) else o for o in out)
        name = ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}"
        top = Counted.depth == 0
        Counted.depth += 1
        try:
            result = getattr(ufunc, method)(*args, **kwargs)
        finally:
            Counted.depth -= 1
        if top:
            Counted.counts[name] += 1
            f32_in = any(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in args)
            results = result if isinstance(result, tuple) else (result,)
            if f32_in and any(isinstance(r, np.ndarray) and r.dtype == np.float64 for r in results):
                Counted.upcasts[name] += 1
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        top = Counted.depth == 0
        if top:
            Counted.counts[f"np.{func.__name__}"] += 1
        Counted.depth += 1
        try:
            result = func._implementation(*_unwrap(args), **_unwrap(kwargs))
        finally:
            Counted.depth -= 1
        return _wrap(result)


def _unwrap(obj):
    if isinstance(obj, Counted):
        return obj.view(np.ndarray)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v) for k, v in obj.items()}
    return obj


def _wrap(result):
    if isinstance(result, np.ndarray) and not isinstance(result, Counted):
        return result.view(Counted)
    if isinstance(result, tuple):
        return tuple(_wrap(r) for r in result)
    return result


def count_calls(wl) -> tuple[collections.Counter, collections.Counter]:
    model, loss, opt, params, state, xb, yb = setup(wl)
    value_and_grad = fn.value_and_grad(model, loss)
    wrap = lambda t: fn.tree.map(lambda a: a.view(Counted) if isinstance(a, np.ndarray) else a, t)
    for _ in range(2):  # a step at steady state (t > 1), counted
        Counted.counts.clear()
        Counted.upcasts.clear()
        value, grads = value_and_grad(wrap(params), xb.view(Counted), yb.view(Counted))
        params, state = opt.update(grads, wrap(state), wrap(params))
        params = fn.tree.map(lambda a: a.view(np.ndarray), params)
        state = fn.tree.map(lambda a: a.view(np.ndarray), state)
    return collections.Counter(Counted.counts), collections.Counter(Counted.upcasts)


# --- 3. cProfile --------------------------------------------------------------------------


def cprofile(wl, n_steps: int, top: int = 18) -> str:
    model, loss, opt, params, state, xb, yb = setup(wl)
    value_and_grad = fn.value_and_grad(model, loss)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n_steps):
        value, grads = value_and_grad(params, xb, yb)
        params, state = opt.update(grads, state, params)
    prof.disable()
    s = io.StringIO()
    stats = pstats.Stats(prof, stream=s)
    stats.sort_stats("tottime").print_stats(top)
    text = s.getvalue()
    root = str(_ROOT) + "/"
    text = text.replace(root, "")
    body = text[text.index("ncalls"):] if "ncalls" in text else text
    return f"(per {n_steps} steps; times in seconds)\n" + body.rstrip()


# --- 4. long training: float32 denormals --------------------------------------------------


def denormal_drift(wl, n_steps: int, window: int = 500) -> dict:
    """Step time early vs late in a long run (cycling through an epoch's batches), and how
    many entries of params / Adam state are float32 denormals at the end."""
    x, y, _ = wl.data()
    model, loss, opt, params, state, _, _ = setup(wl)
    value_and_grad = fn.value_and_grad(model, loss)
    xs = x.astype(np.float32)
    ys = y.astype(np.float32)
    nb = xs.shape[0] // wl.batch
    times = []
    for i in range(n_steps):
        k = i % nb
        xb, yb = xs[k * wl.batch:(k + 1) * wl.batch], ys[k * wl.batch:(k + 1) * wl.batch]
        t0 = time.perf_counter()
        _, grads = value_and_grad(params, xb, yb)
        params, state = opt.update(grads, state, params)
        times.append(time.perf_counter() - t0)
    tiny = np.finfo(np.float32).tiny

    def denormals(tree):
        leaves = fn.tree.leaves(tree)
        return sum(int(np.sum((np.abs(a) < tiny) & (a != 0))) for a in leaves), sum(a.size for a in leaves)

    return {"early": float(np.median(times[:window])), "late": float(np.median(times[-window:])),
            "steps": n_steps, "params": denormals(params), "mu": denormals(state["mu"]),
            "nu": denormals(state["nu"])}


# --- report -------------------------------------------------------------------------------


def fmt_us(s: float) -> str:
    return f"{s * 1e6:,.1f} µs" if s < 1e-3 else f"{s * 1e3:,.2f} ms"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_funcnn")
    p.add_argument("--only", default="T1,T2,T3,T4")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "PROFILE.md"))
    p.add_argument("--long-steps", type=int, default=20000, help="steps of the T1 denormal run")
    args = p.parse_args(argv)
    wls = W.workloads()
    from benchmarks import harness

    blas = [f"{d.get('internal_api')} {d.get('architecture') or ''} {d.get('num_threads')} thread(s)"
            for d in harness.blas_info() if d.get("user_api") == "blas"]
    load0 = harness.loadavg()
    lines = ["# Where funcnn's step time goes", "",
             f"Generated by `python -m benchmarks.profile_funcnn` (funcnn {harness.funcnn_version()}) on {harness.machine_info({})['date']}. Single process, "
             f"funcnn float32, one fixed batch; BLAS: {', '.join(blas) or 'unknown'}; load average "
             f"at start {load0[0]:.2f} on {harness.os.cpu_count()} cores (other processes make the "
             "absolute times noisy; the shares and call counts are what to read).", ""]
    for key in [k.strip() for k in args.only.split(",")]:
        wl = wls[key]
        t4 = key == "T4"
        print(f"{key} ...", flush=True)
        ph = phases(wl, 30 if t4 else 2000)
        counts, upcasts = count_calls(wl)
        lines += [f"## {key} {wl.title} ({W.n_params(wl.spec):,} params, batch {wl.batch})", "",
                  "| phase | median | share of step |", "| --- | --- | --- |"]
        for k, v in ph.items():
            lines.append(f"| {k} | {fmt_us(v)} | {v / ph['step'] * 100:.0f}% |")
        total = sum(counts.values())
        per_call = (f" (≈ {ph['step'] / total * 1e6:.2f} µs of step time per call)"
                    if total and ph["step"] < 5e-3 else "")
        lines += ["", f"numpy calls per step: **{total}**{per_call}. Counted on ndarray-subclass "
                  "views, which a fast path that recognises its own arrays by identity (a flat "
                  "buffer's views) cannot recognise: such a path then gathers params, state and "
                  "grads once (`np.ravel`, `np.concatenate` below), which a steady-state step "
                  "does not.", ""]
        lines.append("calls: " + ", ".join(f"`{k}` {v}" for k, v in counts.most_common()))
        lines.append("")
        lines.append("float32 → float64 upcasts: " + (
            ", ".join(f"`{k}` {v}" for k, v in upcasts.items()) if upcasts else "none"))
        lines += ["", "<details><summary>cProfile, top functions by own time</summary>", "",
                  "```", cprofile(wl, 10 if t4 else 500), "```", "</details>", ""]
    if "T1" in args.only:
        print("T1 long run (denormals) ...", flush=True)
        d = denormal_drift(wls["T1"], args.long_steps)
        lines += ["## Long training: float32 denormals (T1)", "",
                  f"funcnn trained T1 for {d['steps']:,} steps (cycling through one epoch's batches): "
                  f"median step time over the first 500 steps {fmt_us(d['early'])}, over the last 500 "
                  f"**{fmt_us(d['late'])}** ({d['late'] / d['early']:.2f}x). Denormal float32 entries at "
                  f"the end: params {d['params'][0]} of {d['params'][1]}, Adam mu {d['mu'][0]} of "
                  f"{d['mu'][1]}, nu {d['nu'][0]} of {d['nu'][1]}.", "",
                  "Entries whose gradient stays at or near zero (dead ReLU units, a fitted batch) see `mu` decay as 0.9^t into the "
                  "float32 denormal range within ~1000 steps, and weight decay pushes idle weights there too. "
                  "x86 handles denormal arithmetic in microcode, many times slower; XLA (JAX) flushes "
                  "denormals to zero on CPU by default, numpy and torch (unless "
                  "`torch.set_flush_denormal(True)`) do not. The benchmark therefore times every "
                  "implementation over the same first steps after a reset (`harness.time_steps`), "
                  "and this late-training slowdown is reported here instead.", ""]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
