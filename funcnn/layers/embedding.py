"""``Embedding``: integer indices to rows of a learned table (``torch.nn.Embedding``)."""

from __future__ import annotations

import numbers

import numpy as np

from funcnn import kernel, random
from funcnn.errors import LayerError, ParamsError
from funcnn.ops import embedding as ops
from funcnn.types import Layer


def Embedding(num_embeddings: int, embedding_dim: int, *, dtype=np.float32) -> Layer:
    """``y = weight[indices]``: integer input of any shape to ``(*shape, embedding_dim)``.

    Params ``{"weight": (num_embeddings, embedding_dim)}``, initialised ``N(0, 1)`` as in
    torch. The pullback sums the cotangents of repeated indices into their row (an exact
    scatter-add) and gives no ``dx``: indices have no gradient (``dx`` is None), so an
    Embedding comes first in a model. A float input or an index out of range is an
    error naming the layer and the first bad index.

    Example:
        >>> emb = fn.layers.Embedding(10, 4)
        >>> emb.apply(emb.init(0), np.array([[1, 2, 1]])).shape
        (1, 3, 4)
    """
    for arg, value in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"Embedding: {arg} must be a positive int, got {value!r}")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"Embedding: dtype must be a floating type, got {dtype}")
    name = f"Embedding({num_embeddings}, {embedding_dim})"
    shape = (num_embeddings, embedding_dim)

    def init(key):
        return {"weight": random.normal(key, shape, np.float64).astype(dtype)}

    def check(params, x, key, state, mode):
        weight = params.get("weight") if isinstance(params, dict) else None
        if (not isinstance(params, dict) or list(params) != ["weight"] or not isinstance(weight, np.ndarray)
                or weight.shape != shape or weight.dtype.kind != "f"):
            got = (f"weight {weight.shape} {weight.dtype}" if isinstance(weight, np.ndarray)
                   else sorted(params) if isinstance(params, dict) else type(params).__name__)
            raise ParamsError(f"params must be {{'weight': float array of shape {shape}}}, got {got}; "
                              "were these params made by this model's init?", layer=name)
        try:
            ops.check_indices(x, num_embeddings)
        except LayerError as e:
            raise type(e)(e.detail, layer=name) from None

    def forward(params, x, key, state, mode):
        y, saved = ops.embedding_forward(x, params["weight"])
        return y, state, saved

    def backward(saved, dy, out, need_dx):
        dweight = ops.embedding_backward(saved, dy, dweight_out=None if out is None else out["weight"])
        return (out if out is not None else {"weight": dweight}), None

    return kernel.layer(kernel.Kernel(check, forward, backward), init, name)


__all__ = ["Embedding"]
