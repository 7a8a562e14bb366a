"""Prototype: a pure Adam update over one flat buffer, optionally split over 2 threads.

    python -m benchmarks.prototypes.flat_adam [--only T1,T4]

Compared, interleaved, on each workload's params (funcnn float32 init, fixed grads):

- ``funcnn adam``: ``fn.optim.adam(...).update`` as it is today;
- ``checks only``: the argument checks that update runs (``check_update`` +
  ``decay_rates``), to show what they cost by themselves;
- ``per-leaf fused``: the same per-leaf loop, no checks, every op writing ``out=`` into
  the leaf's fresh outputs or one scratch buffer (no other temporaries);
- ``flat``: params, ``mu`` and ``nu`` are views into one flat buffer each (so the
  caller still sees nested dicts of arrays); the grads are gathered with one
  ``np.concatenate``; the Adam rule runs as ~13 whole-buffer ufunc calls writing into
  freshly allocated flat outputs; the new trees are views into those;
- ``flat, 2 threads``: the same with the buffer cut in two halves, one per thread
  (numpy ufuncs release the GIL); used above a size threshold only;
- ``seed in-place``: the seed's mutating Adam on float32 (not pure: a reference).

Purity: every variant returns new arrays; the inputs are checked unchanged, and the
results are checked bitwise equal to funcnn's (the op order is funcnn's).
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path[:1]:
    sys.path.insert(0, str(_ROOT))

import numpy as np

import funcnn as fn
from benchmarks import harness
from benchmarks import workloads as W
from funcnn.optim import base as optim_base
from funcnn.optim.masks import decay_rates

B1, B2, EPS = 0.9, 0.999, 1e-8


# --- a flat layout: one buffer, the tree is views into it ---------------------------------


class Layout:
    """Key paths, shapes and offsets of a params tree laid out in one flat buffer."""

    def __init__(self, params):
        self.paths = fn.tree.paths(params)
        leaves = fn.tree.leaves(params)
        self.dtype = leaves[0].dtype
        assert all(leaf.dtype == self.dtype for leaf in leaves), "one dtype per buffer"
        self.shapes = [leaf.shape for leaf in leaves]
        self.sizes = [leaf.size for leaf in leaves]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).tolist()
        self.size = self.offsets[-1]
        self.keys = [tuple(p.split(".")) for p in self.paths]
        self._built: dict = {}

        self._get, self._make = self._codegen()
        self.matches = self._codegen_check()

    def _codegen_check(self):
        """``matches(tree) -> bool``: exactly these dict keys, and ndarray leaves of these
        shapes and dtype. Straight-line code: ~0.2 µs a leaf (funcnn's full check_update
        walks and flattens the trees several times; on False, run it for the message)."""
        nested: dict = {}
        for i, keys in enumerate(self.keys):
            node = nested
            for k in keys[:-1]:
                node = node.setdefault(k, {})
            node[keys[-1]] = i
        lines = ["def matches(t):", "    D, A = dict, ndarray"]

        def emit(node, var, depth):
            lines.append(f"    if type({var}) is not D or len({var}) != {len(node)}: return False")
            for j, (k, v) in enumerate(node.items()):
                child = f"n{depth}_{j}"
                lines.append(f"    {child} = {var}.get({k!r})")
                if isinstance(v, dict):
                    emit(v, child, depth + 1)
                else:
                    lines.append(f"    if type({child}) is not A or {child}.shape != {self.shapes[v]!r} "
                                 f"or {child}.dtype != DT: return False")

        emit(nested, "t", 0)
        lines.append("    return True")
        scope = {"ndarray": np.ndarray, "DT": self.dtype}
        exec("\n".join(lines), scope)  # noqa: S102 - generated from this layout's own key paths
        return scope["matches"]

    def _codegen(self):
        """Straight-line functions for this layout (no loops, no tree walks):
        ``get(tree) -> tuple of leaves`` and ``make(flat) -> (tree, leaves)``."""
        def index(keys):
            return "".join(f"[{k!r}]" for k in keys)

        get_src = "lambda t: (" + "".join(f"t{index(k)}, " for k in self.keys) + ")"
        nested: dict = {}
        lines = []
        for i, (keys, shape, a, b) in enumerate(zip(self.keys, self.shapes, self.offsets, self.offsets[1:])):
            view = f"f[{a}:{b}]" if len(shape) == 1 else f"f[{a}:{b}].reshape({shape!r})"
            lines.append(f"    v{i} = {view}")
            node = nested
            for k in keys[:-1]:
                node = node.setdefault(k, {})
            node[keys[-1]] = f"v{i}"

        def literal(node):
            if isinstance(node, str):
                return node
            return "{" + ", ".join(f"{k!r}: {literal(v)}" for k, v in node.items()) + "}"

        n = len(self.keys)
        make_src = ("def make(f):\n" + "\n".join(lines) + "\n"
                    + f"    return {literal(nested)}, ({''.join(f'v{i}, ' for i in range(n))})\n")
        scope: dict = {}
        exec(make_src, scope)  # noqa: S102 - generated from this layout's own key paths
        return eval(get_src), scope["make"]  # noqa: S307

    def views(self, flat: np.ndarray) -> dict:
        """The nested dict of views into ``flat`` (no copies)."""
        tree, made = self._make(flat)
        # remember the leaf objects (a small bounded cache keyed by the first leaf's id;
        # the tuple keeps them alive, so an id cannot be reused while cached)
        if len(self._built) > 8:
            self._built.pop(next(iter(self._built)))
        self._built[id(made[0])] = (made, flat)
        return tree

    def leaves(self, tree) -> tuple:
        """The leaves in layout order, by precomputed key paths (no tree walk)."""
        return self._get(tree)

    def flat_of(self, tree, leaves=None) -> np.ndarray | None:
        """The flat buffer ``tree`` is a view of, or None (then the caller copies).

        Fast path: the leaves are the very array objects of a tree this layout built
        (an ndarray's memory never moves, so identity settles it). Otherwise verify
        each leaf's base and address.
        """
        leaves = self.leaves(tree) if leaves is None else leaves
        cached = self._built.get(id(leaves[0]))
        if cached is not None:
            for a, b in zip(cached[0], leaves):
                if a is not b:
                    break
            else:
                return cached[1]
        base = leaves[0].base
        if base is None or base.ndim != 1 or base.size != self.size or base.dtype != self.dtype:
            return None
        start = base.ctypes.data
        item = self.dtype.itemsize
        for leaf, off in zip(leaves, self.offsets):
            if leaf.base is not base or leaf.ctypes.data != start + off * item:
                return None
        return base

    def gather(self, tree) -> np.ndarray:
        leaves = self.leaves(tree)
        flat = self.flat_of(tree, leaves)
        if flat is not None:
            return flat
        return np.concatenate([leaf.reshape(-1) for leaf in leaves])


# --- the Adam rule on flat chunks, in funcnn's op order (bitwise equal) --------------------


def adam_chunk(p, g, mu, nu, p_new, mu_new, nu_new, scratch, *, eta, wd, c1, c2):
    """One chunk of the flat update. ``g`` is ours (a fresh concat): used as scratch."""
    t = scratch
    if wd:
        np.multiply(p, wd, out=t)          # g = g + wd * p
        np.add(g, t, out=g)
    np.multiply(mu, B1, out=mu_new)        # mu = b1 * mu + (1 - b1) * g
    np.multiply(g, 1.0 - B1, out=t)
    np.add(mu_new, t, out=mu_new)
    np.multiply(g, g, out=t)               # nu = b2 * nu + (1 - b2) * (g * g)
    np.multiply(t, 1.0 - B2, out=t)
    np.multiply(nu, B2, out=nu_new)
    np.add(nu_new, t, out=nu_new)
    np.divide(nu_new, c2, out=t)           # denom = sqrt(nu / c2) + eps
    np.sqrt(t, out=t)
    np.add(t, EPS, out=t)
    np.divide(mu_new, c1, out=g)           # p - eta * (mu / c1) / denom
    np.multiply(g, eta, out=g)
    np.divide(g, t, out=g)
    np.subtract(p, g, out=p_new)


def make_flat_adam(lr, weight_decay, params_like, *, threads: int = 1, blocked: bool = False,
                   block: int = 1 << 14, min_parallel: int = 1 << 16):
    """Adam on flat buffers. ``blocked`` runs it cache-blocked (and split over
    ``threads`` above ``min_parallel`` elements); otherwise whole-buffer ufuncs."""
    layout = Layout(params_like)
    pool = ThreadPoolExecutor(max_workers=threads - 1) if threads > 1 else None

    def init(params):
        zeros = np.zeros(layout.size, layout.dtype)
        return {"step": np.array(0, np.int64), "lr": np.array(lr),
                "mu": layout.views(zeros), "nu": layout.views(np.zeros(layout.size, layout.dtype))}

    def update(grads, state, params):
        step = int(state["step"])
        t = step + 1
        c1, c2 = 1.0 - B1**t, 1.0 - B2**t
        p = layout.gather(params)
        mu = layout.gather(state["mu"])
        nu = layout.gather(state["nu"])
        g_leaves = layout.leaves(grads)
        g = layout.flat_of(grads, g_leaves)  # the caller's (e.g. a backward that wrote flat)
        n = layout.size
        # three separate buffers: one 3n allocation measured slower (fresh pages each time)
        p_new, mu_new, nu_new = (np.empty(n, layout.dtype) for _ in range(3))
        kw = {"eta": lr, "wd": weight_decay, "c1": c1, "c2": c2}
        if blocked:
            if g is None:
                g = np.concatenate([leaf.reshape(-1) for leaf in g_leaves])
            args = (p, g, mu, nu, p_new, mu_new, nu_new)
            if pool is None or n < min_parallel:
                adam_blocks(*args, 0, n, min(block, n), **kw)
            else:
                cut = (n // threads) // block * block
                futures = [pool.submit(adam_blocks, *args, i * cut, (i + 1) * cut if i < threads - 1 else n,
                                       block, **kw) for i in range(1, threads)]
                adam_blocks(*args, 0, cut, block, **kw)
                for f in futures:
                    f.result()
        else:
            # whole-buffer ufuncs use g as scratch: it must be ours
            g = np.concatenate([leaf.reshape(-1) for leaf in g_leaves]) if g is None else g.copy()
            adam_chunk(p, g, mu, nu, p_new, mu_new, nu_new, np.empty(n, layout.dtype), **kw)
        new_state = {"step": np.array(t, np.int64), "lr": np.array(lr),
                     "mu": layout.views(mu_new), "nu": layout.views(nu_new)}
        return layout.views(p_new), new_state

    return init, update


# --- cache-blocked, per leaf, no concat ----------------------------------------------------


def adam_blocks(p, g, mu, nu, p_new, mu_new, nu_new, lo, hi, block, *, eta, wd, c1, c2):
    """Run the rule on ``[lo, hi)`` of 1-D arrays, ``block`` elements at a time, so the
    intermediates stay in cache: ~7 streams through memory instead of ~40."""
    g_own = np.empty(block, p.dtype)
    t = np.empty(block, p.dtype)
    for a in range(lo, hi, block):
        b = min(a + block, hi)
        k = b - a
        go, tt = g_own[:k], t[:k]
        np.copyto(go, g[a:b])
        adam_chunk(p[a:b], go, mu[a:b], nu[a:b], p_new[a:b], mu_new[a:b], nu_new[a:b], tt,
                   eta=eta, wd=wd, c1=c1, c2=c2)


def make_blocked_adam(lr, weight_decay, *, threads: int = 1, block: int = 1 << 14,
                      min_parallel: int = 1 << 16):
    """Per leaf (no flat buffer, no concat), each big leaf cache-blocked and split over
    ``threads``; small leaves take the plain fused path."""
    pool = ThreadPoolExecutor(max_workers=threads - 1) if threads > 1 else None

    def leaf(p, g, mu, nu, c1, c2):
        shape = p.shape
        p1, g1, mu1, nu1 = (a.reshape(-1) for a in (p, g, mu, nu))
        n = p1.size
        outs = [np.empty(n, p.dtype) for _ in range(3)]
        kw = {"eta": lr, "wd": weight_decay, "c1": c1, "c2": c2}
        args = (p1, g1, mu1, nu1, *outs)
        if pool is None or n < min_parallel:
            adam_blocks(*args, 0, n, min(block, n), **kw)
        else:
            cut = (n // threads) // block * block
            futures = [pool.submit(adam_blocks, *args, i * cut, (i + 1) * cut if i < threads - 1 else n,
                                   block, **kw) for i in range(1, threads)]
            adam_blocks(*args, 0, cut, block, **kw)
            for f in futures:
                f.result()
        return tuple(o.reshape(shape) for o in outs)

    def update(grads, state, params):
        t = int(state["step"]) + 1
        c1, c2 = 1.0 - B1**t, 1.0 - B2**t
        new_p, new_mu, new_nu = optim_base.leafwise(
            lambda p, g, m, v: leaf(p, g, m, v, c1, c2), params, grads, state["mu"], state["nu"], outputs=3)
        return new_p, {"step": np.array(t, np.int64), "lr": np.array(lr), "mu": new_mu, "nu": new_nu}

    return update


# --- per-leaf, fused, no checks --------------------------------------------------------------


def make_leaf_fused_adam(lr, weight_decay):
    def leaf(p, g, mu, nu, c1, c2):
        p_new, mu_new, nu_new = np.empty_like(p), np.empty_like(p), np.empty_like(p)
        s, t = np.empty_like(p), np.empty_like(p)
        if weight_decay:
            np.multiply(p, weight_decay, out=t)
            g = np.add(g, t, out=s)
        else:
            g = np.copyto(s, g) or s
        adam_chunk(p, g, mu, nu, p_new, mu_new, nu_new, t, eta=lr, wd=0.0, c1=c1, c2=c2)
        return p_new, mu_new, nu_new

    def update(grads, state, params):
        t = int(state["step"]) + 1
        c1, c2 = 1.0 - B1**t, 1.0 - B2**t
        new_p, new_mu, new_nu = optim_base.leafwise(
            lambda p, g, m, v: leaf(p, g, m, v, c1, c2), params, grads, state["mu"], state["nu"], outputs=3)
        return new_p, {"step": np.array(t, np.int64), "lr": np.array(lr), "mu": new_mu, "nu": new_nu}

    return update


# --- the benchmark ---------------------------------------------------------------------------


class _Variant:
    def __init__(self, name, update, params, state, grads):
        self.name, self.dtype, self.note = name, "float32", ""
        self._update, self.params, self.state, self.grads = update, params, state, grads
        self.epoch = None
        self.reset = None

    def step(self, xb=None, yb=None):
        self.params, self.state = self._update(self.grads, self.state, self.params)


def frozen_copy(tree):
    def freeze(a):
        a = np.array(a, copy=True)
        a.setflags(write=False)
        return a
    return fn.tree.map(freeze, tree)


def check_equal_and_pure(wl, params, grads):
    lr, wd = wl.lr, wl.weight_decay
    ref_opt = fn.optim.adam(lr, weight_decay=wd)
    ref_state = ref_opt.init(params)
    init, flat_update = make_flat_adam(lr, wd, params, threads=2, blocked=True, block=1000,
                                       min_parallel=1)
    leaf_update = make_leaf_fused_adam(lr, wd)
    blocked_update = make_blocked_adam(lr, wd, threads=2, block=1000, min_parallel=1)
    bp, bs = params, ref_opt.init(params)
    fp, fs = params, init(params)
    lp, ls = params, ref_opt.init(params)
    rp, rs = params, ref_state
    for _ in range(3):
        g_frozen = frozen_copy(grads)
        fp_in, fs_in = frozen_copy(fp), frozen_copy(fs)
        fp_before = fn.tree.map(np.copy, fp)
        fp, fs = flat_update(g_frozen, fs, fp)
        assert fn.tree.equal(fp_in, fn.tree.map(np.copy, fp_before)), "flat mutated its input"
        lp, ls = leaf_update(g_frozen, ls, lp)
        bp, bs = blocked_update(g_frozen, bs, bp)
        rp, rs = ref_opt.update(g_frozen, rs, rp)
        del fs_in
    same = fn.tree.equal(fn.tree.map(np.copy, fp), rp) and fn.tree.equal(lp, rp) and fn.tree.equal(bp, rp)
    same = same and fn.tree.equal(bs["mu"], rs["mu"]) and fn.tree.equal(bs["nu"], rs["nu"])
    same_state = fn.tree.equal(fn.tree.map(np.copy, fs["mu"]), rs["mu"]) and fn.tree.equal(
        fn.tree.map(np.copy, fs["nu"]), rs["nu"])
    return same and same_state


def run(keys, rounds, block_seconds):
    wls = W.workloads()
    results = {}
    for key in keys:
        wl = wls[key]
        params, _ = W.initial_params(wl)
        rng = np.random.default_rng(0)
        grads = fn.tree.map(lambda p: rng.standard_normal(p.shape).astype(p.dtype), params)
        equal = check_equal_and_pure(wl, params, grads)
        opt = fn.optim.adam(wl.lr, weight_decay=wl.weight_decay)
        state = opt.init(params)

        def checks_only(g, s, p, wl=wl):
            optim_base.check_update("adam", g, s, p, ("mu", "nu"))
            decay_rates(wl.weight_decay, None, p)
            return p, s

        layout = Layout(params)
        init1, flat1 = make_flat_adam(wl.lr, wl.weight_decay, params)
        init_b1, flat_b1 = make_flat_adam(wl.lr, wl.weight_decay, params, blocked=True)
        init_b2, flat_b2 = make_flat_adam(wl.lr, wl.weight_decay, params, blocked=True, threads=2)
        flat_params = layout.views(layout.gather(params).copy())
        flat_grads = layout.views(np.concatenate([g.reshape(-1) for g in layout.leaves(grads)]))

        seed_p = [leaf.copy() for leaf in fn.tree.leaves(params)]
        seed_g = [leaf.copy() for leaf in fn.tree.leaves(grads)]
        seed_v = [np.zeros_like(p) for p in seed_p]
        seed_s = [np.zeros_like(p) for p in seed_p]
        seed_t = [0]

        def seed_update(g, s, p):  # the seed's Adam.step on float32 leaves, in place
            seed_t[0] += 1
            for i, (pp, gg) in enumerate(zip(seed_p, seed_g)):
                gg = gg + wl.weight_decay * pp
                seed_v[i] = B1 * seed_v[i] + (1 - B1) * gg
                seed_s[i] = B2 * seed_s[i] + (1 - B2) * (gg ** 2)
                v_corr = seed_v[i] / (1 - B1 ** seed_t[0])
                s_corr = seed_s[i] / (1 - B2 ** seed_t[0])
                pp -= wl.lr * v_corr / (np.sqrt(s_corr) + EPS)
            return p, s

        variants = [
            _Variant("funcnn adam (today)", opt.update, params, state, grads),
            _Variant("checks only", checks_only, params, state, grads),
            _Variant("per-leaf fused, no checks", make_leaf_fused_adam(wl.lr, wl.weight_decay),
                     params, opt.init(params), grads),
            _Variant("flat, 1 thread (grads gathered)", flat1, flat_params, init1(params), grads),
            _Variant("flat + blocked, 1 thread (grads already flat)", flat_b1, flat_params,
                     init_b1(params), flat_grads),
            _Variant("flat + blocked, 2 threads (grads already flat)", flat_b2, flat_params,
                     init_b2(params), flat_grads),
            _Variant("blocked per leaf, 2 threads (no flat buffers)",
                     make_blocked_adam(wl.lr, wl.weight_decay, threads=2), params, opt.init(params), grads),
            _Variant("seed in-place (float32, mutates)", seed_update, params, state, grads),
        ]
        runners = [harness.Runner(v, [(None, None)]) for v in variants]
        with harness.LoadMeter() as load:
            harness.time_steps(runners, rounds=rounds, block_seconds=block_seconds,
                               warmup_seconds=0.2, rng=np.random.default_rng(1))
        results[key] = {"n_params": W.n_params(wl.spec), "n_leaves": len(fn.tree.leaves(params)),
                        "equal": equal, "other_load": load.others,
                        "times": {r.name: harness.summarize(r.step_ns)["median"] for r in runners}}
        print(key, results[key], flush=True)
    return results


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.prototypes.flat_adam")
    p.add_argument("--only", default="T1,T2,T3,T4")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--block-seconds", type=float, default=0.1)
    args = p.parse_args(argv)
    results = run([k.strip() for k in args.only.split(",")], args.rounds, args.block_seconds)
    print()
    print("| workload | params (leaves) | " + " | ".join(next(iter(results.values()))["times"]) + " | bitwise equal to funcnn | other load (cores) |")
    print("| --- " * (len(next(iter(results.values()))["times"]) + 4) + "|")
    for key, r in results.items():
        base = r["times"]["funcnn adam (today)"]
        cells = [f"{t * 1e6:,.1f} µs ({base / t:.1f}x)" if t < 1e-3 else f"{t * 1e3:.2f} ms ({base / t:.1f}x)"
                 for t in r["times"].values()]
        print(f"| {key} | {r['n_params']:,} ({r['n_leaves']}) | " + " | ".join(cells)
              + f" | {r['equal']} | {r['other_load']:.2f} |")


if __name__ == "__main__":
    main()
