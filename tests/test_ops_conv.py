"""funcnn.ops.conv: forward and gradients equal torch's, finite differences, layouts, errors."""

import warnings

import numpy as np
import pytest
from helpers.arrays import LAYOUTS, frozen, relayout
from hypothesis import given
from hypothesis import strategies as st

import funcnn as fn
from funcnn.errors import ShapeError
from funcnn.ops import conv as conv_ops
from funcnn.ops import conv_backward, conv_forward, conv_geometry

torch = pytest.importorskip("torch")
F = torch.nn.functional


def torch_conv(x, weight, bias, dy, *, stride, padding, dilation, groups):
    """torch's y, dweight, dbias, dx (padding may be (before, after) pairs: F.pad, then none)."""
    xt = torch.tensor(np.array(x), requires_grad=True)
    wt = torch.tensor(np.array(weight), requires_grad=True)
    bt = None if bias is None else torch.tensor(np.array(bias), requires_grad=True)
    n = weight.ndim - 2
    inp = xt
    if isinstance(padding, tuple) and isinstance(padding[0], tuple):
        inp = F.pad(xt, [side for pair in reversed(padding) for side in pair])
        padding = 0
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    with warnings.catch_warnings():  # torch's note that even kernels make it copy the input
        warnings.filterwarnings("ignore", "Using padding='same' with even kernel", UserWarning)
        y = conv(inp, wt, bt, stride=stride, padding=padding, dilation=dilation, groups=groups)
    y.backward(torch.tensor(np.array(dy)))
    return (y.detach().numpy(), wt.grad.numpy(), None if bt is None else bt.grad.numpy(),
            xt.grad.numpy())


def assert_close(ours, theirs, what):
    assert ours.shape == theirs.shape, (what, ours.shape, theirs.shape)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12, err_msg=what)


@st.composite
def conv_cases(draw, dims=(1, 2)):
    """A convolution that torch can run: shapes, stride, padding, dilation, groups."""
    n = draw(st.sampled_from(dims))
    groups = draw(st.integers(1, 3))
    cg = draw(st.integers(1, conv_ops.K_MAJOR_MAX_CHANNELS + 2))  # taps- and rows-major cols
    og = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(n))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(n))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(n))
    kind = draw(st.sampled_from(["ints", "same", "valid", "pairs"] if stride == (1,) * n else ["ints", "valid", "pairs"]))
    if kind == "ints":
        padding = tuple(draw(st.integers(0, 3)) for _ in range(n))
        pads = [(p, p) for p in padding]
        if draw(st.booleans()) and len(set(padding)) == 1:
            padding = padding[0]
    elif kind == "pairs":
        padding = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(n))
        pads = list(padding)
    elif kind == "valid":
        padding, pads = "valid", [(0, 0)] * n
    else:
        padding = "same"
        pads = [(d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(kernel, dilation)]
    reach = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    spatial = tuple(
        max(1, r - lo - hi + draw(st.integers(0, 5))) for r, (lo, hi) in zip(reach, pads)
    )
    batch = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, cg * groups, *spatial))
    weight = rng.standard_normal((og * groups, cg, *kernel))
    bias = rng.standard_normal(og * groups) if draw(st.booleans()) else None
    layout = draw(st.sampled_from(LAYOUTS))
    x = relayout(x, layout)
    return x, weight, bias, {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}, rng




@given(case=conv_cases(), dy_layout=st.sampled_from(LAYOUTS), chunk=st.sampled_from([1, 2, None]))
def test_forward_and_grads_equal_torch(case, dy_layout, chunk):
    """``chunk``: samples per chunk of cols (None: all in one, kept for the backward)."""
    x, weight, bias, kw, rng = case
    x, weight = frozen(x), frozen(weight)
    bias = None if bias is None else frozen(bias)
    g = conv_geometry(x.shape, weight.shape, **kw)
    dy = frozen(relayout(rng.standard_normal(g.y_shape), dy_layout))
    per_sample = np.prod(g.out) * (np.prod(g.kernel) * g.in_channels + g.groups) * x.itemsize
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(conv_ops, "CHUNK_BYTES", 1 << 40 if chunk is None else int(chunk * per_sample))
        y, saved = conv_forward(x, weight, bias, **kw)
        assert (saved.cols is not None) == (chunk is None or chunk >= len(x))
        dweight, dbias, dx = conv_backward(saved, dy, need_dx=True)
    ty, tdw, tdb, tdx = torch_conv(x, weight, bias, dy, **kw)
    assert_close(y, ty, "y")
    assert_close(dweight, tdw, "dweight")
    assert_close(dx, tdx, "dx")
    if bias is None:
        assert dbias is None
    else:
        assert_close(dbias, tdb, "dbias")
    assert y.dtype == dweight.dtype == dx.dtype == np.float64


@given(case=conv_cases(dims=(3,)))
def test_3d_equals_torch(case):
    x, weight, bias, kw, rng = case
    y, saved = conv_forward(x, weight, bias, **kw)
    dy = rng.standard_normal(y.shape)
    ours = (y, *conv_backward(saved, dy, need_dx=True))
    theirs = torch_conv(x, weight, bias, dy, **kw)
    for name, a, b in zip(("y", "dweight", "dbias", "dx"), ours, theirs):
        if b is not None:
            assert_close(a, b, name)


def conv_layer(weight_shape, **kw):
    """The ops as an fn.Layer, for fn.testing.check_grads."""

    def init(key):
        return {}

    def apply(params, x):
        return conv_forward(x, params["weight"], params["bias"], **kw)[0]

    def vjp(params, x):
        y, saved = conv_forward(x, params["weight"], params["bias"], **kw)

        def pullback(dy):
            dweight, dbias, dx = conv_backward(saved, dy, need_dx=True)
            return {"weight": dweight, "bias": dbias}, dx

        return y, pullback

    return fn.Layer(init, apply, vjp, name=f"conv{weight_shape}")


@pytest.mark.parametrize("x_shape, weight_shape, kw", [
    ((1, 2, 5), (3, 2, 2), {"stride": 2, "padding": 1}),
    ((2, 1, 4, 3), (2, 1, 2, 2), {"padding": "same"}),
    ((1, 4, 4, 5), (2, 2, 3, 2), {"stride": (2, 1), "padding": ((1, 0), (0, 2)), "dilation": (1, 2), "groups": 2}),
    ((1, 3, 3, 3), (3, 1, 2, 2), {"groups": 3, "padding": 1}),
    ((1, 8, 3, 3), (2, 8, 2, 2), {"stride": 1, "padding": 0}),  # rows-major cols (8 channels)
])
def test_grads_match_central_differences(x_shape, weight_shape, kw):
    rng = np.random.default_rng(0)
    params = {"weight": rng.standard_normal(weight_shape), "bias": rng.standard_normal(weight_shape[0])}
    fn.testing.check_grads(conv_layer(weight_shape, **kw), params, rng.standard_normal(x_shape),
                           rtol=1e-6, elementwise_max_size=200)


def test_a_wrong_gradient_is_caught():
    """The finite-difference check above can fail: a backward with dx off by a factor fails it."""
    rng = np.random.default_rng(0)
    layer = conv_layer((2, 1, 2, 2), padding=1)

    def vjp(params, x):
        y, pullback = layer.vjp(params, x)
        return y, lambda dy: (pullback(dy)[0], 1.01 * pullback(dy)[1])

    params = {"weight": rng.standard_normal((2, 1, 2, 2)), "bias": rng.standard_normal(2)}
    with pytest.raises(AssertionError, match="gradient mismatch for dx"):
        fn.testing.check_grads(layer._replace(vjp=vjp), params, rng.standard_normal((1, 1, 3, 3)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels", [1, 8])  # taps-major and rows-major cols (K_MAJOR_MAX_CHANNELS)
def test_dtypes_are_kept_and_float32_is_close_to_torch(dtype, channels):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, channels, 9, 9)).astype(dtype)
    weight = rng.standard_normal((5, channels, 3, 3)).astype(dtype)
    bias = rng.standard_normal(5).astype(dtype)
    y, saved = conv_forward(x, weight, bias, padding=1, stride=2)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dweight, dbias, dx = conv_backward(saved, dy, need_dx=True)
    assert y.dtype == dweight.dtype == dbias.dtype == dx.dtype == dtype
    theirs = torch_conv(x, weight, bias, dy, stride=2, padding=1, dilation=1, groups=1)
    rtol = 1e-5 if dtype == np.float32 else 1e-10
    for name, a, b in zip(("y", "dweight", "dbias", "dx"), (y, dweight, dbias, dx), theirs):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max(), err_msg=name)


def test_input_is_cast_to_the_weight_dtype():
    x = np.ones((1, 1, 3, 3), np.float64)
    y, _ = conv_forward(x, np.ones((1, 1, 2, 2), np.float32), np.zeros(1, np.float32))
    assert y.dtype == np.float32 and np.all(y == 4)


def test_grads_are_written_into_the_given_outputs():
    rng = np.random.default_rng(2)
    for channels in (1, 8):
        weight = frozen(rng.standard_normal((4, channels, 3, 3)))
        bias = frozen(rng.standard_normal(4))
        x = frozen(rng.standard_normal((2, channels, 5, 5)))
        y, saved = conv_forward(x, weight, bias, padding=1)
        dy = frozen(rng.standard_normal(y.shape))
        flat = np.full(weight.size + bias.size + 2, np.nan)  # one grads buffer, with a margin
        dweight_out = flat[1:1 + weight.size].reshape(weight.shape)
        dbias_out = flat[1 + weight.size:-1]
        dweight, dbias, dx = conv_backward(saved, dy, need_dx=False, dweight_out=dweight_out,
                                           dbias_out=dbias_out)
        assert dweight is dweight_out and dbias is dbias_out and dx is None
        expected = conv_backward(saved, dy, need_dx=False)
        np.testing.assert_array_equal(dweight_out, expected[0])
        np.testing.assert_array_equal(dbias_out, expected[1])
        assert np.isnan(flat[0]) and np.isnan(flat[-1])  # nothing written outside
        with pytest.raises(ValueError, match=r"must have shape \(4,\), got \(3,\)"):
            conv_backward(saved, dy, need_dx=False, dbias_out=np.zeros(3))


def test_need_dx_false_gives_no_dx_and_the_same_param_grads():
    rng = np.random.default_rng(3)
    weight, x = rng.standard_normal((3, 2, 2, 2)), rng.standard_normal((2, 2, 4, 4))
    y, saved = conv_forward(x, weight, None, stride=2)
    dy = rng.standard_normal(y.shape)
    dweight, dbias, dx = conv_backward(saved, dy, need_dx=False)
    assert dbias is None and dx is None
    np.testing.assert_array_equal(dweight, conv_backward(saved, dy, need_dx=True)[0])


def test_saved_holds_a_view_of_x_without_padding_and_cols_only_when_small(monkeypatch):
    x = frozen(np.ones((2, 3, 6, 6)))
    _, saved = conv_forward(x, np.ones((4, 3, 3, 3)), None)
    assert np.shares_memory(saved.source, x) and saved.cols is not None
    _, padded = conv_forward(x, np.ones((4, 3, 3, 3)), None, padding=1)
    assert padded.source.shape == (2, 8, 8, 3) and not np.shares_memory(padded.source, x)
    monkeypatch.setattr(conv_ops, "CHUNK_BYTES", saved.cols.nbytes - 1)  # two chunks
    assert conv_forward(x, np.ones((4, 3, 3, 3)), None)[1].cols is None


@pytest.mark.parametrize("kw", [{}, {"padding": 1, "stride": 2}, {"groups": 2, "padding": (1, 0)}])
def test_dx_in_pieces_of_samples_equals_torch(kw):
    """The input gradient's GEMMs run over as many samples as the scratch holds: one sample
    at a time, two, or all (no scratch) give torch's dx."""
    rng = np.random.default_rng(5)
    x, weight = rng.standard_normal((5, 4, 6, 5)), rng.standard_normal((6, 4 // kw.get("groups", 1), 3, 2))
    y, saved = conv_forward(x, weight, None, **kw)
    dy = rng.standard_normal(y.shape)
    *_, tdx = torch_conv(x, weight, None, dy, **{"stride": 1, "padding": 0, "dilation": 1, "groups": 1, **kw})
    g = saved.geometry
    dy_groups = conv_ops._by_group(dy.transpose(g.to_last).reshape(g.rows, g.out_channels), g.groups)
    per_sample = int(np.prod(g.out)) * g.in_channels
    for scratch in (np.empty(per_sample), np.empty(2 * per_sample + 1), None):
        dx = conv_ops._input_grad(dy_groups, weight, g, scratch)
        if g.inner is not None:
            dx = dx[g.inner]
        assert_close(dx.transpose(g.to_first), tdx, "dx")


def test_geometry_output_sizes_and_same_padding_like_torch():
    g = conv_geometry((1, 1, 10, 7), (1, 1, 4, 3), padding="same", dilation=(1, 2))
    assert g.pads == ((1, 2), (2, 2)) and g.out == (10, 7)  # the odd extra zero goes after
    g = conv_geometry((2, 4, 11), (6, 2, 3), stride=2, padding=1, groups=2)
    assert g.out == (6,) and g.y_shape == (2, 6, 6) and g.rows == 12
    assert conv_geometry((1, 1, 5), (1, 1, 3), padding=[(0, 1)]).pads == ((0, 1),)
    # the tests above draw channel counts on both sides of the cols layout switch
    assert conv_geometry((1, 8, 5), (1, 8, 3)).taps_major is (8 <= conv_ops.K_MAJOR_MAX_CHANNELS)
    assert conv_geometry((1, 1, 5), (1, 1, 3)).taps_major
    assert not conv_geometry((1, conv_ops.K_MAJOR_MAX_CHANNELS + 2, 5),
                             (1, conv_ops.K_MAJOR_MAX_CHANNELS + 2, 3)).taps_major


@pytest.mark.parametrize("x_shape, weight_shape, kw, error, message", [
    ((1, 1, 2, 2), (1, 1, 3, 3), {}, ShapeError,
     r"input spatial size \(2, 2\) with padding 0 is smaller than the dilated kernel \(3, 3\)"),
    ((1, 1, 4, 2), (1, 1, 3, 2), {"dilation": 2}, ShapeError,
     r"input spatial size \(4, 2\) with padding 0 is smaller than the dilated kernel \(5, 3\)"),
    ((1, 1, 1, 1), (1, 1, 3, 3), {"padding": ((0, 1), (1, 0))}, ShapeError,
     r"input spatial size \(1, 1\) with padding \(\(0, 1\), \(1, 0\)\) is smaller"),
    ((1, 1, 1, 1), (1, 1, 4, 4), {"padding": (1, 0)}, ShapeError, r"with padding \(1, 0\) is smaller"),
    ((1, 3, 8, 8), (4, 2, 3, 3), {}, ShapeError, r"expected input of shape \(N, 2, H, W\), got \(1, 3, 8, 8\)"),
    ((3, 8, 8), (4, 3, 3, 3), {}, ShapeError, r"expected input of shape \(N, 3, H, W\), got \(3, 8, 8\)"),
    ((1, 4, 8), (4, 2, 3), {"groups": 2}, ShapeError, None),  # fine: no error
    ((1, 4, 8), (4, 2, 3), {}, ShapeError, r"expected input of shape \(N, 2, L\), got \(1, 4, 8\)"),
    ((1, 2, 8), (3, 1, 3), {"groups": 2}, ValueError, r"out_channels \(3\) must be divisible by groups \(2\)"),
    ((1, 2, 8, 8), (4, 2, 3, 3), {"stride": 0}, ValueError,
     r"conv: stride must be an int >= 1 or a tuple of 2 such ints, got 0"),
    ((1, 2, 8, 8), (4, 2, 3, 3), {"stride": (1, 2, 3)}, ValueError, r"stride must be .* got \(1, 2, 3\)"),
    ((1, 2, 8, 8), (4, 2, 3, 3), {"dilation": (1, True)}, ValueError, r"dilation must be .* got \(1, True\)"),
    ((1, 2, 8, 8), (4, 2, 3, 3), {"padding": -1}, ValueError, r"padding must be an int >= 0 .* got -1"),
    ((1, 2, 8, 8), (4, 2, 3, 3), {"padding": 1.5}, ValueError, r"padding must be .* got 1.5"),
    ((1, 2, 8, 8), (4, 2, 3, 3), {"padding": "full"}, ValueError,
     r"padding must be an int, a tuple, 'same' or 'valid', got 'full'"),
    ((1, 2, 8, 8), (4, 2, 3, 3), {"padding": "same", "stride": 2}, ValueError,
     r"padding='same' needs stride 1 \(as in torch\), got stride=\(2, 2\)"),
    ((1, 2, 8, 8), (4, 2, 3, 3), {"groups": 0}, ValueError, r"groups must be an int >= 1"),
    ((1, 2, 8, 8), (4, 2, 0, 3), {}, ValueError, r"weight must have shape .* got \(4, 2, 0, 3\)"),
    ((1, 2), (4, 2), {}, ValueError, r"weight must have shape"),
])
def test_errors_name_the_argument(x_shape, weight_shape, kw, error, message):
    if message is None:
        conv_geometry(x_shape, weight_shape, **kw)
        return
    with pytest.raises(error, match=message):
        conv_geometry(x_shape, weight_shape, **kw)
    with pytest.raises(error, match=message):  # the op checks the same way
        conv_forward(np.zeros(x_shape), np.zeros(weight_shape), None, **kw)


def test_lists_work_like_tuples_and_the_cache_is_keyed_by_value():
    a = conv_geometry((1, 1, 6, 6), (1, 1, 3, 3), stride=[1, 2], padding=[1, 0])
    b = conv_geometry((1, 1, 6, 6), (1, 1, 3, 3), stride=(1, 2), padding=(1, 0))
    assert a == b and a.out == (6, 2)
    assert conv_geometry((1, 1, 6, 6), (1, 1, 3, 3), stride=np.int64(2)).out == (2, 2)
    # a value equal to a cached one but of another type is still checked (True == 1 == 1.0)
    conv_geometry((1, 1, 6, 6), (1, 1, 3, 3), padding=1, dilation=(1, 1))
    with pytest.raises(ValueError, match="dilation must be"):
        conv_geometry((1, 1, 6, 6), (1, 1, 3, 3), padding=1, dilation=(1, True))
    with pytest.raises(ValueError, match="padding must be"):
        conv_geometry((1, 1, 6, 6), (1, 1, 3, 3), padding=1.0, dilation=(1, 1))


def test_output_is_channels_last_memory_and_dy_of_that_layout_is_not_copied():
    x = np.ones((2, 16, 5, 5))
    y, _saved = conv_forward(x, np.ones((8, 16, 3, 3)), None, padding=1)
    assert y.shape == (2, 8, 5, 5) and y.strides[1] == y.itemsize  # channels innermost
    assert y.base is not None and y.base.shape == (50, 8)


@pytest.mark.parametrize("channels", [1, 8])
def test_an_empty_batch_gives_empty_outputs_and_zero_grads_as_torch(channels):
    x = np.zeros((0, channels, 5, 5))
    weight, bias = np.ones((4, channels, 3, 3)), np.ones(4)
    y, saved = conv_forward(x, weight, bias, padding=1)
    dweight, dbias, dx = conv_backward(saved, np.zeros(y.shape), need_dx=True)
    ty, tdw, tdb, tdx = torch_conv(x, weight, bias, np.zeros(y.shape), stride=1, padding=1,
                                   dilation=1, groups=1)
    assert y.shape == ty.shape == (0, 4, 5, 5) and dx.shape == tdx.shape == x.shape
    np.testing.assert_array_equal(dweight, tdw)
    np.testing.assert_array_equal(dbias, tdb)
