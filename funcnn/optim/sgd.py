"""Stochastic gradient descent, with optional (Nesterov) momentum and L2 weight decay."""

from __future__ import annotations

import numpy as np

from funcnn import tree
from funcnn.optim.base import (
    ElementwiseOptimizer,
    ElementwiseRule,
    Kernel,
    Mask,
    Schedule,
    State,
    as_schedule,
    check_mask_arg,
    check_nonnegative,
    check_params,
    elementwise_optimizer,
    init_state,
    lr_at,
    with_decay,
)
from funcnn.optim.masks import decay_rule
from funcnn.types import Params


def sgd(
    lr: float | Schedule,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    *,
    weight_decay_mask: Mask | None = None,
) -> ElementwiseOptimizer:
    r"""Stochastic gradient descent; the same trajectory as ``torch.optim.SGD`` (dampening 0).

    At update :math:`t = 1, 2, \dots` with learning rate :math:`\eta_t` = ``lr(t - 1)``,
    momentum :math:`\mu` and weight decay :math:`\lambda` (coupled, as L2)::

        g_t = grad_t + lambda * p_{t-1}
        b_t = mu * b_{t-1} + g_t                     (b_0 = 0)
        d_t = g_t + mu * b_t   if nesterov   else   b_t
        p_t = p_{t-1} - eta_t * d_t

    With ``momentum=0`` this is plain ``p - lr * g`` and the state has no buffer.

    Args:
        lr: Learning rate >= 0, or a schedule ``callable(step) -> float``.
        momentum: Momentum factor :math:`\mu \ge 0`.
        nesterov: Use Nesterov momentum (needs ``momentum > 0``).
        weight_decay: L2 penalty :math:`\lambda \ge 0`, added to the gradient.
        weight_decay_mask: Which leaves decay: a bool pytree shaped like params or
            ``callable(path, leaf) -> bool``, e.g. ``fn.optim.ndim_at_least(2)``.
            Default: all leaves.

    Returns:
        An :class:`Optimizer` whose state is an :class:`~funcnn.optim.states.SgdState`:
        ``{"step", "lr"}`` (0-d int64, 0-d float64) plus ``"momentum"`` (a
        tree shaped like params) when ``momentum > 0``; ``state["lr"]`` is the lr the
        next update will use.

    Example:
        >>> import funcnn as fn, numpy as np
        >>> params = {"w": np.array([1.0, -2.0])}
        >>> opt = fn.optim.sgd(0.1, momentum=0.9)
        >>> state = opt.init(params)
        >>> params, state = opt.update({"w": np.array([1.0, 1.0])}, state, params)
        >>> params["w"]
        array([ 0.9, -2.1])
    """
    schedule = as_schedule("sgd", lr)
    momentum = check_nonnegative("sgd", "momentum", momentum)
    if not isinstance(nesterov, (bool, np.bool_)):
        raise TypeError(f"sgd: nesterov must be a bool, got {nesterov!r}")
    if nesterov and momentum == 0.0:
        raise ValueError("sgd: nesterov=True needs momentum > 0, got momentum=0.0")
    weight_decay = check_nonnegative("sgd", "weight_decay", weight_decay)
    check_mask_arg("sgd", "weight_decay_mask", weight_decay_mask)
    entries = ("momentum",) if momentum else ()

    def init(params: Params) -> State:
        check_params("sgd", params)
        buffers = {"momentum": tree.zeros_like(params)} if momentum else {}
        return init_state(schedule, **buffers)

    def kernel_at(step: int) -> Kernel:
        eta = lr_at(schedule, step)

        # alias-safe kernels: p_out and b_out are written after the last read of p and b
        def plain(decay, p, g, p_out):
            u = np.empty(p.shape, p.dtype)
            g = with_decay(g, p, decay, u)  # g + wd * p
            np.subtract(p, np.multiply(g, eta, u), p_out)  # p - eta * g

        def heavy_ball(decay, p, g, b, p_out, b_out):
            s, u = np.empty(p.shape, p.dtype), np.empty(p.shape, p.dtype)
            g = with_decay(g, p, decay, s)  # g + wd * p
            np.add(np.multiply(b, momentum, b_out), g, b_out)  # b = mu * b + g
            if nesterov:  # d = g + mu * b
                d = np.add(g, np.multiply(b_out, momentum, u), u)
            else:
                d = b_out
            np.subtract(p, np.multiply(d, eta, u), p_out)  # p - eta * d

        return heavy_ball if momentum else plain

    decay_of = decay_rule(weight_decay, weight_decay_mask)
    return elementwise_optimizer(ElementwiseRule("sgd", entries, schedule, kernel_at, decay_of), init)
