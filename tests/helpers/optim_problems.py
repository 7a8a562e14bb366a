"""The small problems the optimizer tests run on, shared by test_optim*.py."""

from __future__ import annotations

import copy

import numpy as np

import funcnn as fn


def nested_params(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "a": {"w": rng.normal(size=(3, 4)).astype(dtype)},
        "b": rng.normal(size=(5,)).astype(dtype),
    }


def wavy_grad(params):
    """The gradient of sum(p**4 / 4 + sin(2 p) / 2 + p**2 / 4): not quadratic.

    Cast back to each leaf's dtype: NumPy 1.x computes 0-d float32 * Python float in float64.
    """
    return fn.tree.map(lambda p: np.asarray(p**3 + np.cos(2.0 * p) + 0.5 * p, p.dtype), params)


def frozen(tree):
    """A deep copy whose arrays are read-only: any in-place write raises."""
    tree = copy.deepcopy(tree)
    for leaf in fn.tree.leaves(tree):
        leaf.setflags(write=False)
    return tree


def run(opt, params, steps, grad_fn=wavy_grad, state=None):
    """``steps`` updates of ``opt`` from ``params`` (and ``state``, default ``opt.init``)."""
    state = opt.init(params) if state is None else state
    for _ in range(steps):
        params, state = opt.update(grad_fn(params), state, params)
    return params, state


def check_pure_update(opt):
    """Update from frozen (read-only) inputs after 3 steps: nothing is written, and the
    same call gives the same results. Returns ``(params, new_params)``."""
    params, state = run(opt, nested_params(), 3)  # non-zero moments
    params, state, grads = frozen(params), frozen(state), frozen(wavy_grad(params))
    before = copy.deepcopy({"grads": grads, "state": state, "params": params})
    new_params, new_state = opt.update(grads, state, params)
    assert fn.tree.equal({"grads": grads, "state": state, "params": params}, before)
    again = opt.update(grads, state, params)
    assert fn.tree.equal(again[0], new_params) and fn.tree.equal(again[1], new_state)
    return params, new_params
