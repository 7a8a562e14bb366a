"""Dropout: random zeros in training, the identity in evaluation."""

from __future__ import annotations

import numbers

import numpy as np

from funcnn import kernel, random
from funcnn.checks import check_input, check_no_params
from funcnn.kernel import require_key
from funcnn.types import Layer


def Dropout(rate: float) -> Layer:
    """Zero each element with probability ``rate`` in training (``torch.nn.Dropout(p)``).

    Training (``train=True``): ``y = x * mask / (1 - rate)`` with ``mask`` drawn from the
    layer's ``key`` (1 with probability ``1 - rate``), so the expected output is ``x``;
    the same key gives the same mask. Evaluation (``train=False``, the default of
    ``apply``): ``y = x``. ``rate`` is the probability of *zeroing*, as in torch and
    Keras (stax's ``Dropout(rate)`` was a keep rate). Training without a key raises
    :class:`funcnn.errors.RandomKeyError` naming the layer; ``fit`` passes a new key per
    batch, derived from its own ``key``.

    Example:
        >>> drop = fn.layers.Dropout(0.5)
        >>> x = np.ones((2, 4), np.float32)
        >>> drop.apply({}, x, key=fn.random.key(0), train=True)   # zeros and 2s
        >>> drop.apply({}, x)                                       # evaluation: x
    """
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate < 1:
        raise ValueError(f"Dropout: rate (the probability of zeroing) must be a number in [0, 1), "
                         f"got {rate!r}")
    rate = float(rate)
    name = f"Dropout(rate={rate})"


    def check(params, x, key, state, mode):
        check_no_params(params, name)
        check_input(x, name)
        if mode.train and rate:
            require_key(key, name)

    def forward(params, x, key, state, mode):
        if not (mode.train and rate):
            return x, state, None
        keep = random.uniform(key, x.shape) >= rate
        scaled_mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - rate))
        return x * scaled_mask, state, scaled_mask

    def backward(scaled_mask, dy, out, need_dx):
        if not need_dx:
            return {}, None
        if scaled_mask is None:
            return {}, dy
        return {}, dy.astype(scaled_mask.dtype, copy=False) * scaled_mask

    rule = kernel.Kernel(check, forward, backward, random=True, y_memory="x", dx_memory="dy")
    return kernel.layer(rule, kernel.no_params, name)


__all__ = ["Dropout"]
