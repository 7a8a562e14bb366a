"""The tutorial's residual block, built from ``residual`` and ``serial``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from funcnn.combinators import residual, serial
from funcnn.layers.activations import ReLU
from funcnn.layers.linear import Linear
from funcnn.types import Layer


def ResNetBlock(
    features: int,
    hidden_features: int | None = None,
    *,
    activation: Callable[[], Layer] | Layer = ReLU,
    dtype=np.float32,
) -> Layer:
    """``y = x + Linear(hidden -> features)(activation(Linear(features -> hidden)(x)))``.

    Both Linear layers use He init, as in the tutorial. ``activation`` is a layer
    factory (``fn.layers.Tanh``) or a layer (``Tanh()``): layers are pure, so sharing one
    between blocks is safe, unlike the tutorial's shared mutable default ReLU.
    Params: ``{"0": {...}, "2": {...}}`` (the inner serial's).
    """
    hidden = features if hidden_features is None else hidden_features
    act = activation() if not isinstance(activation, Layer) else activation
    return residual(
        serial(Linear(features, hidden, dtype=dtype), act, Linear(hidden, features, dtype=dtype))
    )
