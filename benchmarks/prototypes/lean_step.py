"""Prototype: how fast a pure numpy step can be with funcnn's data model, all ideas together.

    python -m benchmarks.prototypes.lean_step [--only T1,T4] [--rounds 9]

``LeanStep(spec, params, ...)`` trains exactly funcnn's model on funcnn's params (nested
dicts of arrays; the state ``{"step", "lr", "mu", "nu"}`` as funcnn's Adam keeps it) and
returns new params and state each step: nothing the caller holds is mutated. What it
does differently from funcnn today:

1. structure is checked by generated straight-line code (exact dict keys, leaf
   shapes and dtypes of params, mu, nu; the input's width and dtype): ~2 µs a tree
   instead of funcnn's ~40 µs of tree walks; on a mismatch funcnn's full check runs
   to raise its error message;
2. the backward pass writes each weight and bias gradient straight into a flat grads
   buffer (``np.matmul(dy.T, x, out=...)``; the bias grad as a GEMV ``ones @ dy``), so
   the optimizer needs no gather. The grads never leave this fused step, so the buffer
   (and its views) is allocated once per thread and reused (thread-local: calls from
   several threads stay safe);
3. the first Linear computes no ``dx`` (nobody needs the gradient of the data);
4. ReLU's pullback uses its output (``dy * (y > 0)``) so its input can be freed;
5. Adam runs on the flat buffers (params, mu, nu are views into one buffer each): ~13
   ufunc calls per step whatever the number of leaves; above 64K elements it runs
   cache-blocked and split over two threads (numpy releases the GIL in ufunc loops);
6. the loss works in place on its own temporaries.

Every row is checked against funcnn over a few steps (same loss values, params equal
to float32 rounding) before timing.
"""

from __future__ import annotations

import argparse
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path[:1]:
    sys.path.insert(0, str(_ROOT))

import numpy as np

import funcnn as fn
from benchmarks import harness
from benchmarks import workloads as W
from benchmarks.prototypes.flat_adam import Layout, adam_blocks, adam_chunk

B1, B2 = 0.9, 0.999


class LeanStep:
    """``step(params, state, x, y) -> (loss, params, state)``, pure, for a spec'd model."""

    def __init__(self, spec, params, *, loss: str, lr: float, weight_decay: float,
                 threads: int = 2, parallel_min: int = 1 << 16, block: int = 1 << 14):
        self.layout = Layout(params)
        self.index = {p: i for i, p in enumerate(self.layout.paths)}
        self.loss = loss
        self.lr, self.wd = lr, weight_decay
        self.block, self.parallel_min = block, parallel_min
        self.pool = ThreadPoolExecutor(max_workers=threads - 1) if threads > 1 else None
        self.threads = threads
        self.first = True
        self.dtype = self.layout.dtype
        self.n_in = W.linear_shapes(spec)[0][1]
        self.local = threading.local()
        self.forward = self._build(W.expand(spec), "")

    # -- the model, compiled into closures once ---------------------------------------------

    def _build(self, spec, prefix):
        kind = spec[0]
        if kind == "linear":
            return self._linear(prefix, needs_dx=not self._take_first())
        if kind == "relu":
            self._take_first()
            return _relu
        if kind == "serial":
            children = []
            for i, child in enumerate(spec[1:]):
                children.append(self._build(child, f"{prefix}{i}." if child[0] != "relu" else ""))
            return _serial(children)
        if kind == "residual":
            self._take_first()  # its pullback adds the inner dx: keep it
            return _residual(self._build(spec[1], prefix))
        raise ValueError(spec)

    def _take_first(self):
        first, self.first = self.first, False
        return first

    def _linear(self, prefix, needs_dx):
        wi, bi = self.index[prefix + "weight"], self.index[prefix + "bias"]
        matmul = np.matmul

        def forward(leaves, x):
            w = leaves[wi]
            y = matmul(x, w.T)
            y += leaves[bi]

            def pullback(dy, g):
                views = g.views
                matmul(dy.T, x, out=views[wi])
                matmul(g.ones[:dy.shape[0]], dy, out=views[bi])
                return matmul(dy, w) if needs_dx else None

            return y, pullback

        return forward

    # -- one training step ---------------------------------------------------------------------

    def __call__(self, params, state, x, y):
        lay = self.layout
        if not (lay.matches(params) and type(state) is dict and lay.matches(state.get("mu"))
                and lay.matches(state.get("nu")) and type(x) is np.ndarray and x.ndim == 2
                and x.shape[1] == self.n_in and x.dtype == self.dtype):
            self._full_checks(params, state, x)
        leaves = lay.leaves(params)
        p = lay.flat_of(params, leaves)
        if p is None:
            p = np.concatenate([leaf.reshape(-1) for leaf in leaves])
        pred, pullback = self.forward(leaves, x)
        value, dpred = _mse(pred, y) if self.loss == "mse" else _ce(pred, y)
        g = self._grads_buffer(x.shape[0])
        pullback(dpred, g)
        g = g.flat
        mu, nu = lay.gather(state["mu"]), lay.gather(state["nu"])
        t = int(state["step"]) + 1
        c1, c2 = 1.0 - B1**t, 1.0 - B2**t
        p_new, mu_new, nu_new = (np.empty(lay.size, self.dtype) for _ in range(3))
        kw = {"eta": self.lr, "wd": self.wd, "c1": c1, "c2": c2}
        n = lay.size
        if self.pool is None or n < self.parallel_min:
            adam_chunk(p, g, mu, nu, p_new, mu_new, nu_new, self.local.scratch, **kw)
        else:
            args = (p, g, mu, nu, p_new, mu_new, nu_new)
            cut = (n // self.threads) // self.block * self.block
            futures = [self.pool.submit(adam_blocks, *args, i * cut,
                                        (i + 1) * cut if i < self.threads - 1 else n, self.block, **kw)
                       for i in range(1, self.threads)]
            adam_blocks(*args, 0, cut, self.block, **kw)
            for f in futures:
                f.result()
        new_state = {"step": np.array(t, np.int64), "lr": np.array(self.lr),
                     "mu": lay.views(mu_new), "nu": lay.views(nu_new)}
        return value, lay.views(p_new), new_state


    def _grads_buffer(self, batch):
        """This thread's flat grads buffer, its per-leaf views and a ones vector."""
        buf = getattr(self.local, "grads", None)
        if buf is None or buf.ones.shape[0] < batch:
            buf = _Grads(self.layout, max(batch, 256))
            self.local.grads = buf
            self.local.scratch = np.empty(self.layout.size, self.dtype)
        return buf

    def _full_checks(self, params, state, x):
        """The slow path: funcnn's own checks raise the informative error."""
        from funcnn.optim.base import check_update

        check_update("adam", params, state, params, ("mu", "nu"))
        if not (isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[1] == self.n_in):
            raise ValueError(f"expected x of shape (batch, {self.n_in}), got {getattr(x, 'shape', x)!r}")
        raise TypeError(f"x must be a {self.dtype} ndarray, got {getattr(x, 'dtype', type(x))}")


class _Grads:
    def __init__(self, layout, batch):
        self.flat = np.empty(layout.size, layout.dtype)
        self.views = [self.flat[a:b].reshape(shape)
                      for a, b, shape in zip(layout.offsets, layout.offsets[1:], layout.shapes)]
        self.ones = np.ones(batch, layout.dtype)


def _relu(p, x):
    y = np.maximum(x, 0)

    def pullback(dy, g):
        return dy * (y > 0)

    return y, pullback


def _serial(children):
    def forward(p, x):
        pullbacks = []
        for child in children:
            x, pb = child(p, x)
            pullbacks.append(pb)

        def pullback(dy, g):
            for pb in reversed(pullbacks):
                dy = pb(dy, g)
            return dy

        return x, pullback

    return forward


def _residual(inner):
    def forward(p, x):
        y, pb = inner(p, x)
        y = x + y  # not in place: the inner output may be held by a pullback

        def pullback(dy, g):
            return dy + pb(dy, g)

        return y, pullback

    return forward


def _mse(pred, target):
    d = pred - target
    flat = d.reshape(-1)
    value = 0.5 * float(np.dot(flat, flat)) / flat.size
    d *= 1.0 / flat.size
    return value, d


def _ce(logits, labels):
    rows = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    picked = z[np.arange(rows), labels]
    value = float(np.log(s).sum() - picked.sum()) / rows
    e *= 1.0 / (s * rows)
    e[np.arange(rows), labels] -= 1.0 / rows
    return value, e


# --- comparison against funcnn (and JAX, if installed) ------------------------------------


def check_against_funcnn(wl, x, y, params0, steps=4) -> float:
    """Max relative difference of the losses, and of params, over a few steps."""
    model = W.build_funcnn_model(wl.spec, np.float32)
    loss = fn.losses.mse if wl.loss == "mse" else fn.losses.softmax_cross_entropy
    opt = fn.optim.adam(wl.lr, weight_decay=wl.weight_decay)
    vg = fn.value_and_grad(model, loss)
    lean = LeanStep(wl.spec, params0, loss=wl.loss, lr=wl.lr, weight_decay=wl.weight_decay)
    frozen = fn.tree.map(lambda a: _frozen(a), params0)
    p1, s1 = frozen, opt.init(frozen)
    p2, s2 = frozen, fn.tree.map(_frozen, opt.init(frozen))
    worst = 0.0
    for k in range(steps):
        xb = _frozen(x[k * wl.batch:(k + 1) * wl.batch])
        yb = _frozen(y[k * wl.batch:(k + 1) * wl.batch])
        v1, g1 = vg(p1, xb, yb)
        p1, s1 = opt.update(g1, s1, p1)
        v2, p2, s2 = lean(p2, s2, xb, yb)
        p2 = fn.tree.map(_frozen_view, p2)
        s2 = {**s2, "mu": fn.tree.map(_frozen_view, s2["mu"]), "nu": fn.tree.map(_frozen_view, s2["nu"])}
        worst = max(worst, abs(v1 - v2) / abs(v1))
        for a, b in zip(fn.tree.leaves(p1), fn.tree.leaves(p2)):
            worst = max(worst, float(np.max(np.abs(a - b))) / (float(np.max(np.abs(a))) + 1e-30))
    return worst


def _frozen(a):
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


def _frozen_view(a):
    v = a.view()
    v.setflags(write=False)  # any write by the next step would raise
    return v


def lean_impl(wl, x, y, params0):
    lean = LeanStep(wl.spec, params0, loss=wl.loss, lr=wl.lr, weight_decay=wl.weight_decay)
    opt = fn.optim.adam(wl.lr, weight_decay=wl.weight_decay)
    state0 = opt.init(params0)
    params, state = params0, state0

    def step(xb, yb):
        nonlocal params, state
        value, params, state = lean(params, state, xb, yb)
        return value

    def reset():
        nonlocal params, state
        params, state = params0, state0

    def convert(xb, yb):
        return xb.astype(np.float32), (yb.astype(np.int64) if wl.loss == "ce" else yb.astype(np.float32))

    return W.Impl("lean prototype", "float32", step, convert, None, reset=reset)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.prototypes.lean_step")
    p.add_argument("--only", default="T1,T2,T3,T4")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--block-seconds", type=float, default=0.1)
    args = p.parse_args(argv)
    rivals = W.rival_status()
    wls = W.workloads()
    table = []
    for key in [k.strip() for k in args.only.split(",")]:
        wl = wls[key]
        x, y, _ = wl.data()
        params0, linears = W.initial_params(wl)
        diff = check_against_funcnn(wl, x.astype(np.float32),
                                    y.astype(np.int64) if wl.loss == "ce" else y.astype(np.float32), params0)
        impls = [W.funcnn_impl(wl, x, y, params0), lean_impl(wl, x, y, params0)]
        if rivals.get("jax"):
            impls.append(W.jax_impl(wl, x, y, linears))
        if rivals.get("torch"):
            impls.append(W.torch_impl(wl, x, y, linears))
        if key == "T4":
            impls.append(W.gemm_floor_impl(wl))
        perm = np.random.default_rng(0).permutation(x.shape[0])
        raw = [(x[perm[s:s + wl.batch]], y[perm[s:s + wl.batch]])
               for s in range(0, x.shape[0] - wl.batch + 1, wl.batch)]
        runners = [harness.Runner(im, [im.convert(a, b) for a, b in raw]) for im in impls]
        t4 = key == "T4"
        with harness.LoadMeter() as load:
            harness.time_steps(runners, rounds=args.rounds, block_seconds=args.block_seconds * (3 if t4 else 1),
                               warmup_seconds=0.3, rng=np.random.default_rng(3))
        times = {r.name: harness.summarize(r.step_ns)["median"] for r in runners}
        print(key, {k: f"{v * 1e6:.1f} us" for k, v in times.items()}, f"max rel diff vs funcnn {diff:.1e}",
              f"other load {load.others:.2f}", flush=True)
        table.append((key, times, diff, load.others))
    names = list(table[0][1])
    print()
    names = list(dict.fromkeys(n for _, t, _, _ in table for n in t))
    print("| workload | " + " | ".join(names) + " | lean ÷ funcnn | lean ÷ jax.jit | max rel. diff vs funcnn | other load |")
    print("| --- " * (len(names) + 5) + "|")
    for key, times, diff, other in table:
        cells = [("—" if times.get(n) is None else f"{times[n] * 1e6:,.1f} µs" if times[n] < 1e-2 else f"{times[n] * 1e3:.2f} ms") for n in names]
        lean = times["lean prototype"]
        jx = times.get("jax.jit step")
        print(f"| {key} | " + " | ".join(cells) + f" | {lean / times['funcnn']:.2f} | "
              + (f"{lean / jx:.2f}" if jx else "—") + f" | {diff:.1e} | {other:.2f} |")


if __name__ == "__main__":
    main()
