"""``Flatten``: ``(N, ...) -> (N, prod(...))``, the bridge from convolutions to Linear."""

from __future__ import annotations

from funcnn import kernel
from funcnn.checks import check_input, check_no_params
from funcnn.errors import ShapeError
from funcnn.types import Layer


def Flatten() -> Layer:
    """``(N, d_1, ..., d_k) -> (N, d_1 * ... * d_k)`` (``torch.nn.Flatten()``); the pullback
    reshapes ``dy`` back. Returns a view: nothing is copied."""
    name = "Flatten()"


    def check(params, x, key, state, mode):
        check_no_params(params, name)
        x = check_input(x, name)
        if x.ndim < 2:
            raise ShapeError(f"expected (N, ...) with at least 2 dimensions, got {x.shape}", layer=name)

    def forward(params, x, key, state, mode):
        return x.reshape(len(x), -1), state, x.shape

    def backward(x_shape, dy, out, need_dx):
        return {}, (dy.reshape(x_shape) if need_dx else None)

    rule = kernel.Kernel(check, forward, backward, y_memory="x", dx_memory="dy")  # views
    return kernel.layer(rule, kernel.no_params, name)


__all__ = ["Flatten"]
