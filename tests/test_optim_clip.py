"""clip_by_global_norm."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import funcnn as fn


def test_clips_to_max_norm_keeping_direction_and_dtype():
    grads = {"a": np.array([3.0, 0.0], np.float32), "b": {"c": np.array([[4.0]], np.float32)}}
    for leaf in fn.tree.leaves(grads):
        leaf.setflags(write=False)
    clipped = fn.optim.clip_by_global_norm(grads, 1.0)
    np.testing.assert_allclose(clipped["a"], [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(clipped["b"]["c"], [[0.8]], rtol=1e-6)
    assert clipped["a"].dtype == np.float32 and clipped["b"]["c"].dtype == np.float32
    assert grads["a"][0] == 3.0  # input untouched
    assert fn.tree.global_norm(clipped) == pytest.approx(1.0, rel=1e-6)


def test_zero_d_float32_leaves_stay_float32():
    clipped = fn.optim.clip_by_global_norm({"s": np.array(3.0, np.float32)}, 1.0)
    assert clipped["s"].dtype == np.float32 and clipped["s"].shape == () and clipped["s"] == 1.0


def test_below_the_threshold_grads_come_back_unchanged():
    grads = {"a": np.array([0.3, 0.4])}
    assert fn.optim.clip_by_global_norm(grads, 0.5) is grads
    assert fn.optim.clip_by_global_norm(grads, 10.0) is grads


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zero_norm_gives_zeros_without_nan_or_warning(dtype):
    grads = {"a": np.zeros(3, dtype), "b": {"c": np.zeros((2, 2), dtype)}}
    for max_norm in (1.0, 0.0):
        clipped = fn.optim.clip_by_global_norm(grads, max_norm)
        assert fn.tree.equal(clipped, grads)
    assert fn.optim.clip_by_global_norm({}, 1.0) == {}


def test_max_norm_zero_zeroes_nonzero_grads():
    clipped = fn.optim.clip_by_global_norm({"a": np.array([1.0, -2.0])}, 0.0)
    np.testing.assert_array_equal(clipped["a"], [0.0, 0.0])


def test_errors():
    with pytest.raises(ValueError, match="clip_by_global_norm: max_norm must be >= 0, got -1.0"):
        fn.optim.clip_by_global_norm({"a": np.ones(2)}, -1.0)
    with pytest.raises(TypeError, match="max_norm must be a number"):
        fn.optim.clip_by_global_norm({"a": np.ones(2)}, None)
    with pytest.raises(
        ValueError, match=r"global norm of grads is inf; grads at 'b\.c' are not finite"
    ):
        fn.optim.clip_by_global_norm({"a": np.ones(2), "b": {"c": np.array([np.inf])}}, 1.0)
    with pytest.raises(
        ValueError, match=r"global norm of grads is nan; grads at 'a' are not finite"
    ):
        fn.optim.clip_by_global_norm({"a": np.array([np.nan])}, 1.0)


# Values whose squares neither overflow nor underflow, so the norm is exact enough to compare.
values = st.integers(-(10**9), 10**9).map(lambda i: i / 1000)


@given(
    a=hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=2, max_side=4), elements=values),
    b=hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=2, max_side=4), elements=values),
    max_norm=st.one_of(st.just(0.0), st.floats(1e-6, 1e3)),
)
def test_clipped_norm_is_min_of_norm_and_max_norm_and_direction_is_kept(a, b, max_norm):
    grads = {"a": a, "n": {"b": b}}
    norm = fn.tree.global_norm(grads)
    clipped = fn.optim.clip_by_global_norm(grads, max_norm)
    assert fn.tree.global_norm(clipped) == pytest.approx(min(norm, max_norm), rel=1e-12)
    scale = 1.0 if norm <= max_norm else max_norm / norm
    assert fn.tree.allclose(clipped, fn.tree.scale(grads, scale), rtol=0.0, atol=0.0)
    assert math.isfinite(fn.tree.global_norm(clipped))
