"""Convolution and pooling layers: torch's layouts and semantics over :mod:`funcnn.ops`.

``Conv1d``/``Conv2d`` take ``(N, C, L)``/``(N, C, H, W)`` inputs with params
``{"weight": (out, in / groups, *kernel), "bias": (out,)}``, the layout of
``torch.nn.Conv1d/2d``, so a torch ``nn.Sequential`` CNN's ``state_dict`` loads into the
matching ``fn.serial`` without renaming or transposes. The math (im2col GEMMs, col2im as
a sum over the kernel's taps) lives in :mod:`funcnn.ops.conv` and :mod:`funcnn.ops.pool`.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from funcnn import kernel, random
from funcnn.checks import check_input, check_no_params
from funcnn.errors import LayerError, ParamsError, ShapeError
from funcnn.ops import conv as conv_ops
from funcnn.ops import pool as pool_ops
from funcnn.ops.windows import conv_pads, int_tuple, pool_pads
from funcnn.types import Layer


def Conv1d(in_channels: int, out_channels: int, kernel_size, *, stride=1, padding=0, dilation=1,
           groups: int = 1, bias: bool = True, dtype=np.float32) -> Layer:
    """A 1-d convolution over ``(N, C, L)``: ``torch.nn.Conv1d``'s semantics and params.

    See :func:`Conv2d` for the arguments, the init and the example.
    """
    return _conv(1, "Conv1d", in_channels, out_channels, kernel_size, stride, padding, dilation,
                 groups, bias, dtype)


def Conv2d(in_channels: int, out_channels: int, kernel_size, *, stride=1, padding=0, dilation=1,
           groups: int = 1, bias: bool = True, dtype=np.float32) -> Layer:
    """A 2-d convolution over ``(N, C, H, W)``: ``torch.nn.Conv2d``'s semantics and params.

    ``y[n, o] = bias[o] + sum over c, taps of weight[o, c, taps] * x_padded[n, c, taps]``
    (cross-correlation, as torch). ``kernel_size``, ``stride``, ``padding`` and
    ``dilation`` are ints or pairs; ``padding`` may also be ``"same"`` (stride 1; an odd
    total puts the extra zero after, as torch) or ``"valid"``. ``groups`` splits the
    channels into independent groups (``groups=in_channels`` is a depthwise conv).

    Params: ``weight`` ``(out, in / groups, kh, kw)``, ``bias`` ``(out,)`` (absent with
    ``bias=False``). Init: He normal, ``weight ~ N(0, 2 / fan_in)`` with ``fan_in = in /
    groups * kh * kw``, and a zero bias, as the Linear layers here (for ReLU nets).
    torch's default differs: ``kaiming_uniform_(a=sqrt(5))``, i.e. ``U(-b, b)`` with
    ``b = 1 / sqrt(fan_in)`` for the weight (a variance of ``1 / (3 fan_in)``, 6x smaller)
    and the same range for the bias.

    Example:
        >>> conv = fn.layers.Conv2d(1, 16, 3, padding=1)
        >>> conv.apply(conv.init(0), np.ones((2, 1, 8, 8), np.float32)).shape
        (2, 16, 8, 8)
    """
    return _conv(2, "Conv2d", in_channels, out_channels, kernel_size, stride, padding, dilation,
                 groups, bias, dtype)


def _conv(n, kind, in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
          use_bias, dtype) -> Layer:
    for arg, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{kind}: {arg} must be a positive int, got {value!r}")
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"{kind}: in_channels ({in_channels}) and out_channels ({out_channels}) must "
                         f"both be divisible by groups ({groups})")
    if not isinstance(use_bias, (bool, np.bool_)):
        raise TypeError(f"{kind}: bias must be True or False, got {use_bias!r}")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"{kind}: dtype must be a floating type, got {dtype}")
    kernel_ = int_tuple(kernel_size, n, "kernel_size", kind)
    stride = int_tuple(stride, n, "stride", kind)
    dilation = int_tuple(dilation, n, "dilation", kind)
    conv_pads(padding, kernel_, stride, dilation, kind)  # checks padding (and "same"'s stride 1)
    weight_shape = (out_channels, in_channels // groups, *kernel_)
    fan_in = in_channels // groups * math.prod(kernel_)
    shape_text = "x".join(map(str, kernel_))
    name = f"{kind}({in_channels} -> {out_channels}, {shape_text}" + (
        f", stride={stride[0] if len(set(stride)) == 1 else stride}" if any(s != 1 for s in stride) else ""
    ) + (f", padding={padding!r}" if padding != 0 else "") + ")"
    geometry = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    leaves = ("weight", "bias") if use_bias else ("weight",)

    def init(key):
        weight = random.normal(key, weight_shape, np.float64) * math.sqrt(2.0 / fan_in)
        params = {"weight": weight.astype(dtype)}
        if use_bias:
            params["bias"] = np.zeros(out_channels, dtype)
        return params

    def check(params, x, key, state, mode):
        _check_leaves(params, name, {"weight": weight_shape, "bias": (out_channels,)}, leaves)
        x = check_input(x, name)
        try:
            conv_ops.conv_geometry(x.shape, weight_shape, **geometry)
        except LayerError as e:
            raise ShapeError(e.detail, layer=name) from None

    def forward(params, x, key, state, mode):
        y, saved = conv_ops.conv_forward(x, params["weight"], params.get("bias"), **geometry)
        return y, state, saved

    def backward(saved, dy, out, need_dx):
        dweight, dbias, dx = conv_ops.conv_backward(
            saved, dy, need_dx=need_dx, dweight_out=None if out is None else out["weight"],
            dbias_out=None if out is None or not use_bias else out["bias"])
        grads = out if out is not None else (
            {"weight": dweight, "bias": dbias} if use_bias else {"weight": dweight})
        return grads, dx

    rule = kernel.Kernel(check, forward, backward, y_memory="new", dx_memory="new")
    return kernel.layer(rule, init, name)


def MaxPool1d(kernel_size, stride=None, padding=0) -> Layer:
    """Max over windows of ``(N, C, L)``: ``torch.nn.MaxPool1d`` (stride defaults to the
    kernel size, padding counts as -inf, the gradient goes to each window's winner)."""
    return _pool(1, "MaxPool1d", kernel_size, stride, padding, pool_ops.max_pool_forward,
                 pool_ops.max_pool_backward)


def MaxPool2d(kernel_size, stride=None, padding=0) -> Layer:
    """Max over windows of ``(N, C, H, W)``: ``torch.nn.MaxPool2d`` (stride defaults to the
    kernel size, padding counts as -inf, ties go to the first maximum as in torch).

    Example:
        >>> fn.layers.MaxPool2d(2).apply({}, np.ones((1, 3, 8, 8), np.float32)).shape
        (1, 3, 4, 4)
    """
    return _pool(2, "MaxPool2d", kernel_size, stride, padding, pool_ops.max_pool_forward,
                 pool_ops.max_pool_backward)


def AvgPool1d(kernel_size, stride=None, padding=0) -> Layer:
    """Mean over windows of ``(N, C, L)``: ``torch.nn.AvgPool1d`` (padding counted)."""
    return _pool(1, "AvgPool1d", kernel_size, stride, padding, pool_ops.avg_pool_forward,
                 pool_ops.avg_pool_backward)


def AvgPool2d(kernel_size, stride=None, padding=0) -> Layer:
    """Mean over windows of ``(N, C, H, W)``: ``torch.nn.AvgPool2d`` with its defaults
    (``count_include_pad=True``: padded zeros count in the mean)."""
    return _pool(2, "AvgPool2d", kernel_size, stride, padding, pool_ops.avg_pool_forward,
                 pool_ops.avg_pool_backward)


def _pool(n, kind, kernel_size, stride, padding, pool_forward, pool_backward) -> Layer:
    kernel_ = int_tuple(kernel_size, n, "kernel_size", kind)
    stride = kernel_ if stride is None else int_tuple(stride, n, "stride", kind)
    pool_pads(padding, kernel_, kind)  # checks padding <= kernel / 2
    name = f"{kind}({'x'.join(map(str, kernel_))}" + (
        f", stride={stride}" if stride != kernel_ else "") + (f", padding={padding!r}" if padding else "") + ")"


    def check(params, x, key, state, mode):
        check_no_params(params, name)
        x = check_input(x, name)
        if x.ndim != n + 2:
            raise ShapeError(f"expected (N, C, {'L' if n == 1 else 'H, W'}), got {x.shape}", layer=name)
        try:
            pool_ops.pool_geometry(x.shape, kernel_, stride, padding)
        except LayerError as e:
            raise ShapeError(e.detail, layer=name) from None

    def forward(params, x, key, state, mode):
        y, saved = pool_forward(x, kernel_, stride, padding)
        return y, state, saved

    def backward(saved, dy, out, need_dx):
        return {}, (pool_backward(saved, dy) if need_dx else None)

    rule = kernel.Kernel(check, forward, backward, y_memory="new", dx_memory="new")
    return kernel.layer(rule, kernel.no_params, name)


def _check_leaves(params, name: str, shapes: dict, leaves: tuple) -> None:
    """``params`` are exactly ``leaves``, float arrays of the ``shapes`` given."""
    if not isinstance(params, dict) or tuple(params) != leaves and set(params) != set(leaves):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ParamsError(f"params must be {{{', '.join(repr(k) for k in leaves)}}}, got {got}; were these "
                          "params made by this model's init?", layer=name)
    for leaf_name in leaves:
        leaf = params[leaf_name]
        if not isinstance(leaf, np.ndarray) or leaf.shape != shapes[leaf_name] or leaf.dtype.kind != "f":
            got = f"{leaf.shape} {leaf.dtype}" if isinstance(leaf, np.ndarray) else type(leaf).__name__
            raise ParamsError(f"params {leaf_name!r} must be a float array of shape "
                              f"{shapes[leaf_name]}, got {got}", layer=name)


__all__ = ["AvgPool1d", "AvgPool2d", "Conv1d", "Conv2d", "MaxPool1d", "MaxPool2d"]
