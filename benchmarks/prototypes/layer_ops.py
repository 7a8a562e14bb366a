"""Micro-benchmarks of the numpy ops inside funcnn's layers and losses, with variants.

    python -m benchmarks.prototypes.layer_ops

Each group times funcnn's current expression next to alternatives that compute the
same values (checked with ``np.array_equal`` / ``allclose``), at T1's sizes (batch 64,
width 16) and T4's (batch 256, width 1024), interleaved over repeats; medians.
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path[:1]:
    sys.path.insert(0, str(_ROOT))

import numpy as np

import funcnn as fn
from funcnn.checks import check_cotangent, check_input


def bench(group: str, variants: dict, repeats: int = 15, target: float = 0.02, compare: bool = True):
    """Median time per call of each variant (interleaved repeats)."""
    ref = None
    for name, f in variants.items():
        out = f()
        if ref is None:
            ref = out
        elif compare and out is not None and ref is not None:
            a, b = np.asarray(out), np.asarray(ref)
            assert a.shape == b.shape and np.allclose(a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max() or 1)), (group, name)
    numbers = {}
    for name, f in variants.items():
        t = timeit.timeit(f, number=10)
        numbers[name] = max(1, int(target / max(t / 10, 1e-9)))
    samples = {name: [] for name in variants}
    for _ in range(repeats):
        for name, f in variants.items():
            samples[name].append(timeit.timeit(f, number=numbers[name]) / numbers[name])
    med = {name: float(np.median(v)) for name, v in samples.items()}
    base = next(iter(med.values()))
    rows = [f"| {group} | {name} | {_fmt(t)} | {base / t:.2f}x |" for name, t in med.items()]
    return rows


def _fmt(s):
    return f"{s * 1e6:,.2f} µs" if s < 1e-3 else f"{s * 1e3:,.3f} ms"


def main():
    rng = np.random.default_rng(0)
    rows = ["| group | variant | median | speedup vs first |", "| --- | --- | --- | --- |"]
    for label, b, w, d_in in (("T1 size", 64, 16, 16), ("T4 size", 256, 1024, 784)):
        x = rng.standard_normal((b, w)).astype(np.float32)
        dy = rng.standard_normal((b, w)).astype(np.float32)
        mask = x > 0
        rows += bench(f"ReLU backward, {label}", {
            "dy * (x > 0)  [funcnn today]": lambda: dy * (x > 0),
            "np.where(x > 0, dy, 0)": lambda: np.where(x > 0, dy, 0),
            "np.multiply(dy, x > 0, dtype=float32)": lambda: np.multiply(dy, x > 0, dtype=np.float32),
            "dy * mask  (mask kept from forward)": lambda: dy * mask,
            "copy, then copyto(0, where=x <= 0)": lambda: _copy_zero(dy, x),
        })
        rows += bench(f"ReLU forward, {label}", {
            "np.maximum(x, 0)  [funcnn today]": lambda: np.maximum(x, 0),
            "np.maximum(x, 0, out=empty)": lambda: np.maximum(x, 0, out=np.empty_like(x)),
            "x * (x > 0)": lambda: x * (x > 0),
        })
        wt = rng.standard_normal((w, d_in)).astype(np.float32)
        xin = rng.standard_normal((b, d_in)).astype(np.float32)
        ones = np.ones(b, np.float32)
        rows += bench(f"Linear bias grad, {label}", {
            "dy.sum(axis=0)  [funcnn today]": lambda: dy.sum(axis=0),
            "np.add.reduce(dy, axis=0)": lambda: np.add.reduce(dy, axis=0),
            "ones @ dy  (GEMV)": lambda: ones @ dy,
        })
        rows += bench(f"Linear weight grad, {label}", {
            "dy.T @ x  [funcnn today]": lambda: dy.T @ xin,
            "np.matmul(dy.T, x, out=empty)": lambda: np.matmul(dy.T, xin, out=np.empty((w, d_in), np.float32)),
            "(x.T @ dy).T  (a transposed result)": lambda: np.ascontiguousarray((xin.T @ dy).T),
        })
        rows += bench(f"Linear input grad (dx), {label}", {
            "dy @ W  [funcnn: every layer, even the first]": lambda: dy @ wt,
            "skipped (first layer: nobody needs d/dx of data)": lambda: None,
        })
        bias = rng.standard_normal(w).astype(np.float32)
        rows += bench(f"Linear forward, {label}", {
            "y = x @ W.T; y += b  [funcnn today]": lambda: _fwd(xin, wt, bias),
            "x @ W.T + b": lambda: xin @ wt.T + bias,
        })
        rows += bench(f"per-layer checks, {label}", {
            "check_input(x)": lambda: check_input(x, "L"),
            "check_cotangent(dy)": lambda: check_cotangent(dy, dy.shape, "L"),
            "x.astype(float32, copy=False)": lambda: x.astype(np.float32, copy=False),
        }, compare=False)
    # losses
    pred = rng.standard_normal((64, 1)).astype(np.float32)
    target = rng.standard_normal((64, 1)).astype(np.float32)
    rows += bench("mse value_and_grad, T1 size", {
        "fn.losses.mse.value_and_grad  [funcnn today]": lambda: fn.losses.mse.value_and_grad(pred, target)[1],
        "bare: d = p - t; 0.5*dot(d, d)/n; d *= 1/n": lambda: _mse(pred, target),
    })
    logits = rng.standard_normal((256, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 256)
    rows += bench("softmax CE value_and_grad, T4 size", {
        "fn.losses.softmax_cross_entropy  [funcnn today]":
            lambda: fn.losses.softmax_cross_entropy.value_and_grad(logits, labels)[1],
        "bare: exp once, scale, subtract at labels": lambda: _ce(logits, labels),
    })
    print("\n".join(rows))


def _copy_zero(dy, x):
    out = dy.copy()
    np.copyto(out, 0, where=x <= 0)
    return out


def _fwd(x, w, b):
    y = x @ w.T
    y += b
    return y


def _mse(p, t):
    d = p - t
    flat = d.reshape(-1)
    0.5 * float(np.dot(flat, flat)) / flat.size
    d *= 1.0 / flat.size
    return d


def _ce(logits, labels):
    rows = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    e *= 1.0 / (s * rows)
    e[np.arange(rows), labels] -= 1.0 / rows
    return e


if __name__ == "__main__":
    main()
