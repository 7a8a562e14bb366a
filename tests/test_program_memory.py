"""Programs free what they no longer need and reuse ``dy`` where nothing else sees it
(``funcnn.program``): less memory, the same bits."""

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import funcnn as fn
from funcnn.grad import loss_gradient_rule
from funcnn.kernel import kernel_of
from funcnn.layout import layout_of
from funcnn.program import compile_program
from funcnn.testing import strategies as fst

L = fn.layers


def generic_value_and_grad(model, loss):
    rule = loss_gradient_rule(loss)

    def value_and_grad(params, x, y):
        pred, pullback = model.vjp(params, x)
        value, dpred = rule(pred, y)
        return value, pullback(dpred)[0]

    return value_and_grad


def assert_fast_equals_generic(model, x, y, loss=fn.losses.mse):
    params = model.init(1)
    fast = fn.value_and_grad(model, loss)
    expected_value, expected = generic_value_and_grad(model, loss)(params, x, y)
    for _ in range(2):  # the first call runs the checked kernels, the second the program
        value, grads = fast(params, x, y)
        assert value == expected_value
        for path, leaf in fn.tree.flatten(expected).items():
            np.testing.assert_array_equal(fn.tree.flatten(grads)[path], leaf, err_msg=path)


def kernel_calls(model) -> dict[str, list]:
    """The kernel functions a model's program calls, in order, in its forward and backward."""
    program = compile_program(kernel_of(model), layout_of(model.init(0)), False, False)
    scope = program.forward.__globals__
    forward, backward = program.source.split("def backward")
    return {part: [scope[line.split("= ")[1].split("(")[0]] for line in text.splitlines()
                   if " = " in line and line.split("= ")[1][:1] in "FB"]
            for part, text in (("forward", forward), ("backward", backward))}


def in_place(relu, calls) -> tuple[bool | None, bool | None]:
    """Whether ``relu``'s forward and backward run in place (None: not called)."""
    rule = relu.kernel
    found = []
    for part, variants in (("forward", (rule.forward_into_x, rule.forward)),
                           ("backward", (rule.backward_into_dy, rule.backward))):
        called = [f in calls[part] for f in variants]
        assert called.count(True) <= 1
        found.append(called[0] if any(called) else None)
    return tuple(found)


def test_relu_after_a_layer_that_makes_new_arrays_runs_in_place():
    first, second = L.ReLU(), L.ReLU()
    model = fn.serial(L.Conv2d(1, 4, 3), first, L.MaxPool2d(2), L.Flatten(), L.Linear(4, 8),
                      second, L.Linear(8, 2))
    calls = kernel_calls(model)
    # the forward: the outputs of Conv2d and Linear are new arrays; the backward: the dx of
    # Linear and of the max pool (through Flatten's view of it) are
    assert in_place(first, calls) == in_place(second, calls) == (True, True)


def test_relu_whose_input_is_read_again_or_not_ours_does_not_overwrite_it():
    inner, last, after_relu = L.ReLU(), L.ReLU(), L.ReLU()
    # the residual reads x again after the block's forward and dy after its backward;
    # the data and the loss's dpred are not the program's; a ReLU's output is kept
    model = fn.serial(after_relu, L.Linear(3, 4), fn.residual(fn.serial(L.Linear(4, 4), inner)),
                      L.Linear(4, 4), L.ReLU(), last)
    calls = kernel_calls(model)
    assert in_place(inner, calls) == (True, False)  # its input is the block's Linear output
    assert in_place(last, calls) == (False, False)
    assert in_place(after_relu, calls) == (False, None)  # no dx before the first params


def test_a_residual_block_whose_input_is_a_new_array_keeps_it_for_the_sum():
    first = L.ReLU()
    model = fn.serial(L.Linear(3, 4), fn.residual(fn.serial(first, L.Linear(4, 4))))
    assert in_place(first, kernel_calls(model))[0] is False


@pytest.mark.parametrize("model", [
    fn.serial(L.Linear(3, 4), fn.residual(fn.serial(L.Linear(4, 4), L.ReLU())), L.Linear(4, 2)),
    fn.serial(L.Linear(3, 4), fn.residual(fn.serial(L.Linear(4, 4), L.Tanh())), L.Sigmoid(),
              L.Linear(4, 2)),
    fn.serial(L.Linear(3, 4), L.Identity(), L.ReLU(), L.Linear(4, 4), L.Tanh(), L.Identity(),
              L.Sigmoid(), L.Linear(4, 2)),
    fn.serial(L.Linear(3, 4), fn.residual(fn.residual(L.ReLU())), L.Linear(4, 2)),
    fn.serial(L.Linear(3, 4), L.ReLU(), fn.residual(L.Identity()), L.ReLU(), L.Linear(4, 2)),
    fn.serial(L.Linear(3, 4), fn.residual(fn.serial(L.ReLU(), L.Linear(4, 4))), L.ReLU(),
              L.Linear(4, 2)),
    fn.serial(L.Linear(3, 4), L.Dropout(0.0), L.ReLU(), L.Flatten(), L.ReLU(), L.Linear(4, 2)),
], ids=["residual-relu", "residual-tanh-sigmoid", "identities", "nested-residuals",
        "residual-identity", "residual-starting-with-relu", "views"])
def test_reusing_dy_gives_the_generic_paths_bits(model):
    x = np.random.default_rng(0).normal(size=(7, 3))
    assert_fast_equals_generic(model, x, np.ones((7, 2)))


@settings(max_examples=30, deadline=None)
@given(fst.architectures(in_features=3, out_features=2, max_depth=3), fst.inputs(3))
def test_random_architectures_keep_the_generic_paths_bits(model, x):
    assert_fast_equals_generic(model, x, np.zeros((*x.shape[:-1], 2)))


@settings(max_examples=15, deadline=None)
@given(fst.cnn_architectures(in_channels=2, size=6, activation_factories=fst.ACTIVATION_FACTORIES),
       st.integers(1, 3))
def test_random_cnns_keep_the_generic_paths_bits(model, rows):
    x = np.random.default_rng(rows).normal(size=(rows, 2, 6, 6))
    y = model.apply(model.init(1), x)
    assert_fast_equals_generic(model, x, np.zeros_like(y))


def traced_peak(f) -> int:
    """The peak of traced memory while ``f()`` runs, above what was held before."""
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        f()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_a_steps_peak_memory_is_a_few_activations_not_one_per_layer():
    rows, width, depth = 2048, 256, 4
    layers = [L.Linear(64, width, dtype=np.float64), L.ReLU()]
    for _ in range(depth - 1):
        layers += [L.Linear(width, width, dtype=np.float64), L.ReLU()]
    model = fn.serial(*layers, L.Linear(width, 1, dtype=np.float64))
    params = model.init(0)
    x, y = np.ones((rows, 64)), np.ones((rows, 1))
    f = fn.value_and_grad(model, fn.losses.mse)
    f(params, x, y)  # compile
    activation = rows * width * 8
    grads = sum(leaf.nbytes for leaf in fn.tree.leaves(params))
    peak = traced_peak(lambda: f(params, x, y))
    # the saved ReLU outputs (depth) plus one more: the Linear's output beside the ReLU's
    # in the forward, dy beside the saved ones in the backward (ReLUs write dx into dy);
    # keeping every intermediate (pre-activations, every dx) costs 2-3 activations more
    assert peak <= (depth + 1.25) * activation + grads + x.nbytes, peak / activation
