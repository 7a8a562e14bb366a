"""Adam (weight decay coupled as L2, like the tutorial and torch) and AdamW (decoupled)."""

from __future__ import annotations

import math

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
    check_decay_rate,
    check_mask_arg,
    check_nonnegative,
    check_params,
    check_positive,
    dtype_constants,
    elementwise_optimizer,
    init_state,
    lr_at,
    with_decay,
)
from funcnn.optim.masks import decay_rule
from funcnn.types import Params


def adam(
    lr: float | Schedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    weight_decay_mask: Mask | None = None,
) -> ElementwiseOptimizer:
    r"""Adam; the tutorial's rule and the same trajectory as ``torch.optim.Adam``.

    At update :math:`t = 1, 2, \dots` with learning rate :math:`\eta_t` = ``lr(t - 1)``
    and weight decay :math:`\lambda` coupled as L2 (added to the gradient, so it is
    rescaled by Adam like any gradient; see :func:`adamw` for the decoupled form)::

        g_t   = grad_t + lambda * p_{t-1}
        mu_t  = b1 * mu_{t-1} + (1 - b1) * g_t                 (mu_0 = nu_0 = 0)
        nu_t  = b2 * nu_{t-1} + (1 - b2) * g_t**2
        p_t   = p_{t-1} - eta_t * (mu_t / (1 - b1**t)) / (sqrt(nu_t / (1 - b2**t)) + eps)

    Args:
        lr: Learning rate >= 0, or a schedule ``callable(step) -> float``.
        b1: Decay of the first moment, in [0, 1).
        b2: Decay of the second moment, in [0, 1).
        eps: Added to the denominator, > 0.
        weight_decay: L2 penalty :math:`\lambda \ge 0`.
        weight_decay_mask: Which leaves decay: a bool pytree shaped like params or
            ``callable(path, leaf) -> bool``, e.g. ``fn.optim.ndim_at_least(2)``.
            Default: all leaves.

    Returns:
        An :class:`Optimizer` whose state is an :class:`~funcnn.optim.states.AdamState`:
        ``step`` (0-d int64), ``lr`` (0-d float64, the lr the next update will use),
        ``mu`` and ``nu`` (trees like params).

    Example:
        >>> import funcnn as fn, numpy as np
        >>> params = {"w": np.array([1.0, -2.0])}
        >>> opt = fn.optim.adam(0.1)
        >>> state = opt.init(params)
        >>> params, state = opt.update({"w": np.array([3.0, -0.5])}, state, params)
        >>> params["w"].round(6)
        array([ 0.9, -1.9])
    """
    return _adam("adam", lr, b1, b2, eps, weight_decay, weight_decay_mask, decoupled=False)


def adamw(
    lr: float | Schedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    *,
    weight_decay_mask: Mask | None = None,
) -> ElementwiseOptimizer:
    r"""AdamW: Adam with decoupled weight decay; the same trajectory as ``torch.optim.AdamW``.

    The decay shrinks the params directly, scaled by the learning rate, and stays out of
    the moments::

        p'    = p_{t-1} * (1 - eta_t * lambda)
        mu_t  = b1 * mu_{t-1} + (1 - b1) * grad_t              (mu_0 = nu_0 = 0)
        nu_t  = b2 * nu_{t-1} + (1 - b2) * grad_t**2
        p_t   = p' - eta_t * (mu_t / (1 - b1**t)) / (sqrt(nu_t / (1 - b2**t)) + eps)

    Args:
        lr: Learning rate >= 0, or a schedule ``callable(step) -> float``.
        b1: Decay of the first moment, in [0, 1).
        b2: Decay of the second moment, in [0, 1).
        eps: Added to the denominator, > 0.
        weight_decay: Decoupled decay :math:`\lambda \ge 0` (torch's default 1e-2).
        weight_decay_mask: Which leaves decay: a bool pytree shaped like params or
            ``callable(path, leaf) -> bool``, e.g. ``fn.optim.ndim_at_least(2)``.
            Default: all leaves.

    Returns:
        An :class:`Optimizer` whose state is an :class:`~funcnn.optim.states.AdamState`:
        ``step`` (0-d int64), ``lr`` (0-d float64, the lr the next update will use),
        ``mu`` and ``nu`` (trees like params).

    Example:
        >>> import funcnn as fn, numpy as np
        >>> params = {"w": np.array([1.0, -2.0])}
        >>> opt = fn.optim.adamw(0.1, weight_decay=0.5)
        >>> state = opt.init(params)
        >>> params, state = opt.update({"w": np.array([3.0, -0.5])}, state, params)
        >>> params["w"].round(6)
        array([ 0.85, -1.8 ])
    """
    return _adam("adamw", lr, b1, b2, eps, weight_decay, weight_decay_mask, decoupled=True)


def _adam(where, lr, b1, b2, eps, weight_decay, weight_decay_mask, *, decoupled) -> ElementwiseOptimizer:
    schedule = as_schedule(where, lr)
    b1 = check_decay_rate(where, "b1", b1)
    b2 = check_decay_rate(where, "b2", b2)
    eps = check_positive(where, "eps", eps)
    weight_decay = check_nonnegative(where, "weight_decay", weight_decay)
    check_mask_arg(where, "weight_decay_mask", weight_decay_mask)

    def init(params: Params) -> State:
        check_params(where, params)
        return init_state(schedule, mu=tree.zeros_like(params), nu=tree.zeros_like(params))

    constants = dtype_constants(b1, 1.0 - b1, b2, 1.0 - b2)

    def kernel_at(step: int) -> Kernel:
        eta, t = lr_at(schedule, step), step + 1
        # eta * (mu / c1) / (sqrt(nu / c2) + eps) == step_size * mu / (sqrt(nu) + eps_hat)
        root_c2 = math.sqrt(1.0 - b2**t)
        step_size, eps_hat = eta * root_c2 / (1.0 - b1**t), eps * root_c2

        def kernel(decay, p, g, mu, nu, p_out, mu_out, nu_out):
            # alias-safe: each output is written after the last read of its input
            s, u = np.empty(p.shape, p.dtype), np.empty(p.shape, p.dtype)
            beta1, rest1, beta2, rest2 = constants(p.dtype)
            if not decoupled:
                g = with_decay(g, p, decay, u)  # g + wd * p
            np.multiply(mu, beta1, mu_out)  # mu = b1 * mu + (1 - b1) * g
            np.add(mu_out, np.multiply(g, rest1, s), mu_out)
            np.multiply(g, g, s)  # nu = b2 * nu + (1 - b2) * (g * g)
            np.multiply(s, rest2, s)
            np.add(np.multiply(nu, beta2, nu_out), s, nu_out)
            np.add(np.sqrt(nu_out, s), eps_hat, s)
            np.divide(np.multiply(mu_out, step_size, u), s, u)
            if decoupled:  # p * (1 - eta * wd)
                p = with_decay(None, p, decay, p_out, factor=lambda wd: 1.0 - eta * wd)
            np.subtract(p, u, p_out)

        return kernel

    decay_of = decay_rule(weight_decay, weight_decay_mask)
    return elementwise_optimizer(ElementwiseRule(where, ("mu", "nu"), schedule, kernel_at, decay_of),
                                 init)
