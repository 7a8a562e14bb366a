"""Hypothesis strategies for property-testing layers and models.

    from hypothesis import given
    from funcnn.testing import strategies as fst

    @given(model=fst.architectures(in_features=3, out_features=2), x=fst.inputs(3))
    def test_my_property(model, x): ...

For gradient checks draw the params with :func:`params` (every leaf moved off
``init``'s values: zero biases put ReLU kinks exactly where a finite difference
straddles them) and pass ``key=``/``state=`` for models with Dropout or BatchNorm::

    @given(model=fst.architectures(3, 1, dropout=True, normalization=True), data=st.data())
    def test_grads(model, data):
        params = data.draw(fst.params(model))
        x = data.draw(fst.inputs(3, max_leading_dims=1, min_side=4))
        fn.testing.check_grads(model, params, x, key=fn.random.key(0), state=model.init_state())

Importing this module imports hypothesis (a test-time dependency).
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from funcnn import random
from funcnn.combinators import residual, serial
from funcnn import tree
from funcnn.layers import (
    ELU,
    GELU,
    AvgPool2d,
    BatchNorm,
    Conv2d,
    Dropout,
    Flatten,
    LayerNorm,
    MaxPool2d,
    Identity,
    LeakyReLU,
    Linear,
    ReLU,
    Sigmoid,
    SiLU,
    Softplus,
    Tanh,
)

ACTIVATION_FACTORIES = (ReLU, Sigmoid, Tanh, Identity, LeakyReLU, ELU, GELU, SiLU, Softplus)
SMOOTH_ACTIVATION_FACTORIES = (Sigmoid, Tanh, Identity, ELU, GELU, SiLU, Softplus)
"""Activations with a continuous derivative: finite differences never straddle a kink."""


def keys() -> st.SearchStrategy:
    """Random keys, from random 32-bit seeds."""
    return st.integers(0, 2**32 - 1).map(random.key)


def batch_shapes(features: int, *, max_leading_dims: int = 2, max_side: int = 5, min_side: int = 1):
    """Shapes ``(*leading, features)`` with 1..``max_leading_dims`` leading dims, each of
    ``min_side..max_side`` (``min_side=2`` for BatchNorm in training)."""
    leading = st.lists(st.integers(min_side, max(min_side, max_side)), min_size=1,
                       max_size=max_leading_dims)
    return leading.map(lambda dims: (*dims, features))


def inputs(features: int, *, dtype=np.float64, scale: float = 2.0, max_leading_dims: int = 2,
           max_side: int = 5, min_side: int = 1):
    """Random input arrays of shape ``(*leading, features)`` with values in +-scale."""

    @st.composite
    def draw_input(draw):
        shape = draw(batch_shapes(features, max_leading_dims=max_leading_dims, max_side=max_side,
                                  min_side=min_side))
        seed = draw(st.integers(0, 2**32 - 1))
        return random.uniform(seed, shape, -scale, scale, dtype=dtype)

    return draw_input()


def params(model, *, spread: float = 0.5) -> st.SearchStrategy:
    """Params for ``model``: ``model.init(key)`` with every leaf moved by uniform noise in
    ``+-spread`` (nonzero biases, no unit sitting exactly on a ReLU kink)."""

    @st.composite
    def draw_params(draw):
        key = draw(keys())
        initial = model.init(key)
        noise_keys = iter(random.split(random.fold_in(key, 1), max(1, len(tree.leaves(initial)))))
        return tree.map(lambda leaf: leaf + random.uniform(next(noise_keys), leaf.shape, -spread, spread,
                                                           dtype=leaf.dtype), initial)

    return draw_params()


def activations(factories=ACTIVATION_FACTORIES) -> st.SearchStrategy:
    """One of the built-in element-wise activation layers (from ``factories``)."""
    return st.sampled_from(factories).map(lambda factory: factory())


@st.composite
def architectures(draw, in_features: int, out_features: int | None = None, *, max_depth: int = 2,
                  max_blocks: int = 3, max_width: int = 6, dtype=np.float64,
                  activation_factories=ACTIVATION_FACTORIES, dropout: bool = False,
                  normalization: bool = False):
    """Random models built from Linear, activations, ``serial`` and ``residual``, and
    with ``dropout=True`` Dropout layers, with ``normalization=True`` BatchNorm and
    LayerNorm layers after Linears of width 3 or more (give those 2-D inputs of at least
    4 rows, a key and a state: normalizing 1 or 2 values is degenerate, the output then
    barely depends on the input and a finite difference sees mostly curvature).

    The model maps ``(..., in_features)`` to ``(..., out_features)`` (to whatever width
    it ends at, when ``out_features`` is None). Residual blocks nest up to ``max_depth``.
    For finite-difference checks pass ``activation_factories=SMOOTH_ACTIVATION_FACTORIES``:
    ReLU-like kinks make a central difference one-sided when a unit sits within ``eps``
    of zero.
    """
    acts = activations(activation_factories)
    extras = {"dropout": dropout, "normalization": normalization}
    layers, width = _blocks(draw, in_features, max_depth, max_blocks, max_width, dtype, acts, extras)
    if out_features is not None:
        layers.append(Linear(width, out_features, dtype=dtype))
    return serial(*layers)


def _blocks(draw, width, depth, max_blocks, max_width, dtype, acts, extras):
    layers = []
    for _ in range(draw(st.integers(1, max_blocks))):
        kind = draw(st.sampled_from(["dense", "residual", "nested"] if depth > 0 else ["dense"]))
        if kind == "dense":
            new_width = draw(st.integers(1, max_width))
            layers.append(Linear(width, new_width, dtype=dtype))
            if extras["normalization"] and new_width >= 3:  # over 1 or 2 values a norm is degenerate
                norm = draw(st.sampled_from(["none", "batch", "layer"]))
                if norm != "none":
                    factory = BatchNorm if norm == "batch" else LayerNorm
                    layers.append(factory(new_width, dtype=dtype))
            layers.append(draw(acts))
            if extras["dropout"] and draw(st.booleans()):
                layers.append(Dropout(draw(st.sampled_from([0.1, 0.5]))))
            width = new_width
        elif kind == "residual":
            hidden = draw(st.integers(1, max_width))
            layers.append(residual(serial(
                Linear(width, hidden, dtype=dtype), draw(acts),
                Linear(hidden, width, dtype=dtype),
            )))
        else:
            inner, inner_width = _blocks(draw, width, depth - 1, max_blocks, max_width, dtype, acts,
                                         extras)
            inner.append(Linear(inner_width, width, dtype=dtype))
            layers.append(residual(serial(*inner)))
    return layers, width


@st.composite
def cnn_architectures(draw, in_channels: int, size: int, *, max_convs: int = 2, max_channels: int = 4,
                      dtype=np.float64, activation_factories=SMOOTH_ACTIVATION_FACTORIES):
    """Random CNNs on ``(N, in_channels, size, size)`` inputs: Conv2d layers (kernel 1-3,
    stride 1-2, padding 0-1), activations, sometimes a pool, then Flatten. Every layer is
    built to fit the spatial size it gets, so the model always applies."""
    layers, channels = [], in_channels
    for _ in range(draw(st.integers(1, max_convs))):
        kernel = draw(st.integers(1, min(3, size)))
        stride, padding = draw(st.integers(1, 2)), draw(st.integers(0, min(1, kernel // 2)))
        out = draw(st.integers(1, max_channels))
        layers += [Conv2d(channels, out, kernel, stride=stride, padding=padding, dtype=dtype),
                   draw(activations(activation_factories))]
        size, channels = (size + 2 * padding - kernel) // stride + 1, out
        if size >= 2 and draw(st.booleans()):
            layers.append(draw(st.sampled_from([MaxPool2d, AvgPool2d]))(2))
            size //= 2
    return serial(*layers, Flatten())