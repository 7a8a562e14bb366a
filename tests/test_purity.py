"""Layers are pure: no mutation, bitwise-repeatable results, thread-safe sharing."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from hypothesis import given

import funcnn as fn
from funcnn.testing import strategies as fst


def frozen(tree):
    def freeze(a):
        a = np.array(a)
        a.setflags(write=False)
        return a

    return fn.tree.map(freeze, tree)


@given(model=fst.architectures(in_features=3, out_features=2, dtype=np.float32),
       x=fst.inputs(3, dtype=np.float32), key=fst.keys())
def test_no_mutation_and_bitwise_repeatable(model, x, key):
    params = frozen(model.init(key))
    x = frozen(x)
    y = frozen(np.zeros((*x.shape[:-1], 2), np.float32))
    f = fn.value_and_grad(model, fn.losses.mse)
    v1, g1 = f(params, x, y)  # a write to any frozen input would raise here
    v2, g2 = f(params, x, y)
    assert v1 == v2 and fn.tree.equal(g1, g2)
    out1 = model.apply(params, x)
    out2, pullback = model.vjp(params, x)
    np.testing.assert_array_equal(out1, out2)
    dy = frozen(np.ones_like(out2))
    pullback(dy)
    assert fn.tree.equal(pullback(dy)[0], pullback(dy)[0])  # a pullback can be called twice


def test_identity_returns_input_without_copy_but_never_writes():
    x = frozen(np.ones((2, 2)))
    assert fn.layers.Identity().apply({}, x) is x


def test_threads_sharing_one_params_tree_match_serial_results():
    model = fn.serial(fn.Linear(8, 64), fn.Tanh(), fn.residual(fn.serial(fn.Linear(64, 64), fn.GELU())),
                      fn.Linear(64, 1))
    params = frozen(model.init(0))
    batches = [fn.random.normal(i, (32, 8), np.float32) for i in range(16)]
    targets = [fn.random.normal(100 + i, (32, 1), np.float32) for i in range(16)]
    f = fn.value_and_grad(model, fn.losses.mse)
    expected = [f(params, x, y) for x, y in zip(batches, targets)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            got = list(pool.map(lambda xy: f(params, *xy), zip(batches, targets)))
            for (v, g), (ev, eg) in zip(got, expected):
                assert v == ev and fn.tree.equal(g, eg)
