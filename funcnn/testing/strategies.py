"""Hypothesis strategies for property-testing layers and models.

    from hypothesis import given
    from funcnn.testing import strategies as fst

    @given(model=fst.architectures(in_features=3, out_features=2), x=fst.inputs(3))
    def test_my_property(model, x): ...

Importing this module imports hypothesis (a test-time dependency).
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from funcnn import random
from funcnn.combinators import residual, serial
from funcnn.layers import (
    ELU,
    GELU,
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


def batch_shapes(features: int, *, max_leading_dims: int = 2, max_side: int = 5):
    """Shapes ``(*leading, features)`` with 1..``max_leading_dims`` leading dims."""
    leading = st.lists(st.integers(1, max_side), min_size=1, max_size=max_leading_dims)
    return leading.map(lambda dims: (*dims, features))


def inputs(features: int, *, dtype=np.float64, scale: float = 2.0, max_leading_dims: int = 2,
           max_side: int = 5):
    """Random input arrays of shape ``(*leading, features)`` with values in +-scale."""

    @st.composite
    def draw_input(draw):
        shape = draw(batch_shapes(features, max_leading_dims=max_leading_dims, max_side=max_side))
        seed = draw(st.integers(0, 2**32 - 1))
        return random.uniform(seed, shape, -scale, scale, dtype=dtype)

    return draw_input()


def activations(factories=ACTIVATION_FACTORIES) -> st.SearchStrategy:
    """One of the built-in element-wise activation layers (from ``factories``)."""
    return st.sampled_from(factories).map(lambda factory: factory())


@st.composite
def architectures(draw, in_features: int, out_features: int | None = None, *, max_depth: int = 2,
                  max_blocks: int = 3, max_width: int = 6, dtype=np.float64,
                  activation_factories=ACTIVATION_FACTORIES):
    """Random models built from Linear, activations, ``serial`` and ``residual``.

    The model maps ``(..., in_features)`` to ``(..., out_features)`` (to whatever width
    it ends at, when ``out_features`` is None). Residual blocks nest up to ``max_depth``.
    For finite-difference checks pass ``activation_factories=SMOOTH_ACTIVATION_FACTORIES``:
    ReLU-like kinks make a central difference one-sided when a unit sits within ``eps``
    of zero.
    """
    acts = activations(activation_factories)
    layers, width = _blocks(draw, in_features, max_depth, max_blocks, max_width, dtype, acts)
    if out_features is not None:
        layers.append(Linear(width, out_features, dtype=dtype))
    return serial(*layers)


def _blocks(draw, width, depth, max_blocks, max_width, dtype, acts):
    layers = []
    for _ in range(draw(st.integers(1, max_blocks))):
        kind = draw(st.sampled_from(["dense", "residual", "nested"] if depth > 0 else ["dense"]))
        if kind == "dense":
            new_width = draw(st.integers(1, max_width))
            layers += [Linear(width, new_width, dtype=dtype), draw(acts)]
            width = new_width
        elif kind == "residual":
            hidden = draw(st.integers(1, max_width))
            layers.append(residual(serial(
                Linear(width, hidden, dtype=dtype), draw(acts),
                Linear(hidden, width, dtype=dtype),
            )))
        else:
            inner, inner_width = _blocks(draw, width, depth - 1, max_blocks, max_width, dtype, acts)
            inner.append(Linear(inner_width, width, dtype=dtype))
            layers.append(residual(serial(*inner)))
    return layers, width
