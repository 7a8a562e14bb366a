"""funcnn.ops.pool: max and average pooling equal torch's (forward, grads, ties), FD, errors."""

import numpy as np
import pytest
from helpers.arrays import LAYOUTS, frozen, relayout
from hypothesis import given
from hypothesis import strategies as st

import funcnn as fn
from funcnn.errors import ShapeError
from funcnn.ops import (
    avg_pool_backward,
    avg_pool_forward,
    max_pool_backward,
    max_pool_forward,
    pool_geometry,
)
from funcnn.ops import pool as pool_ops

torch = pytest.importorskip("torch")
F = torch.nn.functional
OPS = {"max": (max_pool_forward, max_pool_backward), "avg": (avg_pool_forward, avg_pool_backward)}


def torch_pool(kind, x, dy, kernel, stride, padding):
    xt = torch.tensor(np.array(x), requires_grad=True)
    pool = getattr(F, f"{kind}_pool{x.ndim - 2}d")
    y = pool(xt, kernel, stride, padding)
    y.backward(torch.tensor(np.array(dy)))
    return y.detach().numpy(), xt.grad.numpy()


@st.composite
def pool_cases(draw, dims=(1, 2), padding_fills=True):
    """``padding_fills``: the input may be smaller than the kernel (the padding makes it up),
    which torch refuses for avg_pool3d only."""
    n = draw(st.sampled_from(dims))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(n))
    stride = None if draw(st.booleans()) else tuple(draw(st.integers(1, 4)) for _ in range(n))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    spatial = tuple(
        max(1, k - (2 * p if padding_fills else 0) + draw(st.integers(0, 6)))
        for k, p in zip(kernel, padding)
    )
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), *spatial)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if draw(st.booleans()):  # few distinct values: many ties, also across the padding
        x = rng.integers(-1, 2, shape).astype(np.float64)
    else:
        x = rng.standard_normal(shape)
    kernel_arg = kernel[0] if draw(st.booleans()) and len(set(kernel)) == 1 else kernel
    return relayout(x, draw(st.sampled_from(LAYOUTS))), \
        kernel_arg, stride, padding, rng


@pytest.mark.parametrize("kind", ["max", "avg"])
@given(case=pool_cases(), dy_layout=st.sampled_from(LAYOUTS), per_block=st.sampled_from([1, 2, None]))
def test_forward_and_grads_equal_torch(kind, case, dy_layout, per_block):
    """``per_block``: samples of ``x`` a block of passes (None: all in one); with 2, a batch
    of 3 ends in a smaller block than the scratch is made for."""
    x, kernel, stride, padding, rng = case
    forward, backward = OPS[kind]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pool_ops, "BLOCK_BYTES", 1 << 40 if per_block is None else per_block * x[0].nbytes)
        y, saved = forward(frozen(x), kernel, stride, padding)
        dy = relayout(rng.standard_normal(y.shape), dy_layout)
        dx = backward(saved, frozen(dy))
    ty, tdx = torch_pool(kind, x, dy, kernel, stride, padding)
    assert y.shape == ty.shape and dx.shape == x.shape
    np.testing.assert_allclose(y, ty, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, tdx, rtol=1e-10, atol=1e-12)
    if kind == "max":  # the same element wins as in torch: equal where nothing adds up
        if not saved.geometry.overlapping:
            np.testing.assert_array_equal(dx, tdx)
        np.testing.assert_array_equal(dx != 0, tdx != 0)


@pytest.mark.parametrize("kind", ["max", "avg"])
@given(case=pool_cases(dims=(3,), padding_fills=False))
def test_3d_equals_torch(kind, case):
    x, kernel, stride, padding, rng = case
    forward, backward = OPS[kind]
    y, saved = forward(x, kernel, stride, padding)
    dy = rng.standard_normal(y.shape)
    ty, tdx = torch_pool(kind, x, dy, kernel, stride, padding)
    np.testing.assert_allclose(y, ty, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(backward(saved, dy), tdx, rtol=1e-10, atol=1e-12)


def test_ties_go_to_the_first_element_of_the_window_as_in_torch():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 1] = x[0, 0, 1, 0] = 5.0  # two maxima in the top-left window
    y, saved = max_pool_forward(x, 2)
    dx = max_pool_backward(saved, np.ones_like(y))
    assert dx[0, 0, 1, 0] == 1 and dx[0, 0, 1, 1] == 0
    # all-equal windows: the top-left element
    np.testing.assert_array_equal(dx[0, 0, 2:, 2:], [[1, 0], [0, 0]])
    assert dx.sum() == 4


def test_overlapping_windows_add_their_gradients():
    x = np.array([[[0.0, 3.0, 1.0, 2.0, 0.0]]])
    y, saved = max_pool_forward(x, 3, stride=1)
    assert y.tolist() == [[[3.0, 3.0, 2.0]]]
    np.testing.assert_array_equal(max_pool_backward(saved, np.array([[[1.0, 10.0, 100.0]]])),
                                  [[[0, 11, 0, 100, 0]]])
    ya, saved_a = avg_pool_forward(x, 3, stride=1)
    np.testing.assert_allclose(ya, [[[4 / 3, 2.0, 1.0]]])
    np.testing.assert_allclose(avg_pool_backward(saved_a, np.array([[[3.0, 3.0, 3.0]]])),
                               [[[1, 2, 3, 2, 1]]])


def test_padding_never_wins_a_max_and_counts_in_the_average():
    x = -np.ones((1, 1, 2, 2))
    y, saved = max_pool_forward(x, 2, stride=1, padding=1)
    np.testing.assert_array_equal(y, -np.ones((1, 1, 3, 3)))  # not the padding's -inf nor 0
    assert max_pool_backward(saved, np.ones_like(y)).sum() == 9
    ya, _ = avg_pool_forward(x, 2, stride=1, padding=1)
    np.testing.assert_array_equal(ya[0, 0], [[-0.25, -0.5, -0.25], [-0.5, -1, -0.5], [-0.25, -0.5, -0.25]])


def test_max_grad_is_exactly_zero_off_the_winners_even_for_infinite_dy():
    x = np.array([[[1.0, 2.0, 4.0, 3.0]]])
    _y, saved = max_pool_forward(x, 2)
    dx = max_pool_backward(saved, np.array([[[np.inf, -np.inf]]]))
    np.testing.assert_array_equal(dx, [[[0.0, np.inf, -np.inf, 0.0]]])
    assert not np.signbit(dx[0, 0, 0])  # +0.0, as torch
    dx = max_pool_backward(saved, np.array([[[-1.0, -2.0]]]))
    assert not np.any(np.signbit(dx[dx == 0]))


def first_max_reference(x, kernel, stride):
    """Max pooling by a loop over windows (no padding): ``y`` and the flat index in ``x``
    of each window's first maximum in row-major order."""
    n, c, *spatial = x.shape
    out = [(s - k) // st + 1 for s, k, st in zip(spatial, kernel, stride)]
    y, where = np.empty((n, c, *out), x.dtype), np.empty((n, c, *out), np.int64)
    index = np.arange(x.size).reshape(x.shape)
    for i, j, *o in np.ndindex(n, c, *out):
        window = tuple(slice(p * st, p * st + k) for p, st, k in zip(o, stride, kernel))
        values, flat = x[(i, j, *window)].ravel(), index[(i, j, *window)].ravel()
        y[(i, j, *o)], where[(i, j, *o)] = values.max(), flat[values.argmax()]
    return y, where


SPECIAL_DY = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-40, -2.5]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape, kernel, stride", [
    ((2, 3, 6, 4), (2, 2), (2, 2)),  # tiled
    ((3, 2, 7, 5), (2, 2), (2, 2)),  # a row and a column left over
    ((2, 2, 6, 9), (2, 3), (3, 3)),  # gaps between windows
    ((1, 3, 9), (3,), (3,)),
])
def test_max_pool_routes_dy_bit_for_bit_to_the_first_maximum(dtype, layout, shape, kernel, stride):
    """Ties, infinities and special ``dy`` values, in non-overlapping windows: ``y`` and the
    winner equal a loop over windows; each winner gets ``dy`` bit for bit (NaN, inf, -0.0),
    every other element exactly +0.0; and the values equal torch's."""
    rng = np.random.default_rng(7)
    x = rng.integers(-1, 2, shape).astype(dtype)  # few values: ties everywhere
    x.ravel()[rng.choice(x.size, 4, replace=False)] = [np.inf, -np.inf, np.inf, -np.inf]
    x = relayout(x, layout)
    ref_y, ref_where = first_max_reference(np.asarray(x), kernel, stride)
    y, saved = max_pool_forward(frozen(x), kernel, stride)
    dy = rng.choice(np.array(SPECIAL_DY, dtype), ref_y.shape)
    dx = max_pool_backward(saved, frozen(relayout(dy, layout)))
    np.testing.assert_array_equal(y, ref_y)
    bits = np.dtype(f"u{np.dtype(dtype).itemsize}")
    expected = np.zeros(x.shape, bits)
    expected.ravel()[ref_where.ravel()] = dy.view(bits).ravel()
    np.testing.assert_array_equal(np.ascontiguousarray(dx).view(bits), expected)
    ty, tdx = torch_pool("max", x, dy, kernel, stride, 0)
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_array_equal(dx, tdx)  # torch adds dy to +0.0: -0.0 becomes +0.0, equal here


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["contiguous", "channels-last"])
def test_a_window_with_nan_gives_nan_and_its_gradient_to_one_element(dtype, layout):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 6, 6)).astype(dtype)
    x.ravel()[rng.choice(x.size, 12, replace=False)] = np.nan
    x = relayout(x, layout)
    y, saved = max_pool_forward(x, 2)
    windows = np.asarray(x).reshape(2, 3, 3, 2, 3, 2)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(windows).any(axis=(3, 5)))
    dx = max_pool_backward(saved, np.full(y.shape, 2.0, dtype)).reshape(windows.shape)
    np.testing.assert_array_equal((dx == 2).sum(axis=(3, 5)), 1)
    assert dx.sum() == 2 * y.size


def test_nan_propagates_in_the_forward_as_in_torch():
    x = np.array([[[1.0, np.nan, 0.0, 2.0]]])
    y, _ = max_pool_forward(x, 2)
    assert np.isnan(y[0, 0, 0]) and y[0, 0, 1] == 2


def pool_layer(kind, kernel, stride=None, padding=0):
    forward, backward = OPS[kind]

    def apply(params, x):
        return forward(x, kernel, stride, padding)[0]

    def vjp(params, x):
        y, saved = forward(x, kernel, stride, padding)
        return y, lambda dy: ({}, backward(saved, dy))

    return fn.Layer(lambda key: {}, apply, vjp, name=f"{kind}_pool")


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("shape, kernel, stride, padding", [
    ((1, 2, 5, 4), 2, None, 0),
    ((2, 1, 5, 5), 3, 2, 1),
    ((1, 2, 7), 3, 1, 1),
    ((1, 1, 4, 5), (2, 3), (1, 2), (1, 0)),
])
def test_grads_match_central_differences(kind, shape, kernel, stride, padding):
    x = np.random.default_rng(0).permutation(np.prod(shape)).reshape(shape) / 7.0  # distinct: no ties
    fn.testing.check_grads(pool_layer(kind, kernel, stride, padding), {}, x, rtol=1e-6,
                           elementwise_max_size=200)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtypes_and_layout_are_kept(kind, dtype):
    forward, backward = OPS[kind]
    x = relayout(np.random.default_rng(1).standard_normal((3, 8, 6, 6)), "channels-last").astype(dtype)
    y, saved = forward(x, 2)
    dx = backward(saved, np.ones(y.shape, np.float64))
    assert y.dtype == dx.dtype == dtype
    assert y.strides[1] == y.itemsize and dx.strides[1] == dx.itemsize  # channels innermost, as x
    if kind == "max":
        assert saved.winner.dtype == np.uint8 and saved.winner.shape == y.shape


def test_geometry():
    g = pool_geometry((2, 3, 9, 8), 3, 2, 1)
    assert g.y_shape == (2, 3, 5, 4) and g.stride == (2, 2) and g.pads == ((1, 1), (1, 1))
    assert g.overlapping and not g.tiled and g.inner is not None
    g = pool_geometry((2, 3, 8, 8), (2, 2))
    assert g.stride == (2, 2) and g.tiled and not g.overlapping and g.inner is None
    assert not pool_geometry((2, 3, 9, 8), 2).tiled  # a row left over
    assert pool_geometry((1, 1, 5), [2], [1]).y_shape == (1, 1, 4)


@pytest.mark.parametrize("shape, args, error, message", [
    ((1, 1, 2, 2), (3,), ShapeError,
     r"input spatial size \(2, 2\) with padding 0 is smaller than the kernel \(3, 3\)"),
    ((1, 1, 1, 4), (4, 1, 1), ShapeError,
     r"input spatial size \(1, 4\) with padding 1 is smaller than the kernel \(4, 4\)"),
    ((1, 1, 8), ((2, 2),), ShapeError, r"expected input of shape \(N, C, H, W\), got \(1, 1, 8\)"),
    ((8,), (2,), ShapeError, r"expected input of shape \(N, C, \*spatial\), got \(8,\)"),
    ((1, 1, 8, 8), (0,), ValueError, r"pool: kernel_size must be an int >= 1 or a tuple of 2 such ints, got 0"),
    ((1, 1, 8, 8), (2, 0), ValueError, r"stride must be an int >= 1 .* got 0"),
    ((1, 1, 8, 8), (2, 2, 2), ValueError,
     r"padding must be at most half the kernel size \(as in torch\), got padding=2 for kernel_size=2"),
    ((1, 1, 8, 8), ((3, 2), 1, (1, 2)), ValueError, r"got padding=\(1, 2\) for kernel_size=\(3, 2\)"),
    ((1, 1, 8, 8), (2, None, -1), ValueError, r"padding must be an int >= 0"),
])
def test_errors(shape, args, error, message):
    with pytest.raises(error, match=message):
        pool_geometry(shape, *args)
    for forward in (max_pool_forward, avg_pool_forward):
        with pytest.raises(error, match=message):
            forward(np.zeros(shape), *args)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_an_empty_batch(kind):
    forward, backward = OPS[kind]
    y, saved = forward(np.zeros((0, 2, 4, 4)), 2)
    assert y.shape == (0, 2, 2, 2) and backward(saved, np.zeros(y.shape)).shape == (0, 2, 4, 4)
