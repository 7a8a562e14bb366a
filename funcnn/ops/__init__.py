"""The math of the window and lookup layers, as pure functions on arrays.

Each op is a ``*_forward(...) -> (y, saved)`` and a ``*_backward(saved, dy, ...)``:
``saved`` holds what the backward needs (documented per op), nothing is mutated, and
the layers in :mod:`funcnn.layers` wrap them (checks, names, params). Forward and
gradients equal torch's (``torch.nn.functional``) in the test suite.

- :mod:`funcnn.ops.conv`: N-d convolution as GEMMs (im2col, and col2im as a sum over
  the kernel's taps).
- :mod:`funcnn.ops.pool`: N-d max and average pooling.
- :mod:`funcnn.ops.embedding`: row lookup, with repeated indices summing their grads.
- :mod:`funcnn.ops.windows`: the argument checks and index arithmetic they share.
"""

from funcnn.ops.conv import ConvGeometry, ConvSaved, conv_backward, conv_forward, conv_geometry
from funcnn.ops.embedding import (
    EmbeddingSaved,
    check_indices,
    embedding_backward,
    embedding_forward,
)
from funcnn.ops.pool import (
    AvgPoolSaved,
    MaxPoolSaved,
    PoolGeometry,
    avg_pool_backward,
    avg_pool_forward,
    max_pool_backward,
    max_pool_forward,
    pool_geometry,
)

__all__ = [
    "AvgPoolSaved", "ConvGeometry", "ConvSaved", "EmbeddingSaved", "MaxPoolSaved", "PoolGeometry",
    "avg_pool_backward", "avg_pool_forward", "check_indices", "conv_backward", "conv_forward",
    "conv_geometry", "embedding_backward", "embedding_forward", "max_pool_backward",
    "max_pool_forward", "pool_geometry",
]
