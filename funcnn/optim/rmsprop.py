"""RMSProp as in the tutorial: a bias-corrected running mean of squared gradients."""

from __future__ import annotations

import numpy as np

from funcnn import tree
from funcnn.optim.base import (
    ElementwiseOptimizer,
    ElementwiseRule,
    Kernel,
    Schedule,
    State,
    as_schedule,
    check_decay_rate,
    check_params,
    check_positive,
    elementwise_optimizer,
    init_state,
    lr_at,
)
from funcnn.types import Params


def rmsprop(lr: float | Schedule, beta: float = 0.9, eps: float = 1e-8) -> ElementwiseOptimizer:
    r"""RMSProp with a bias-corrected second moment (the tutorial's rule).

    At update :math:`t = 1, 2, \dots` with learning rate :math:`\eta_t` = ``lr(t - 1)``::

        nu_t  = beta * nu_{t-1} + (1 - beta) * g_t**2          (nu_0 = 0)
        p_t   = p_{t-1} - eta_t * g_t / (sqrt(nu_t / (1 - beta**t)) + eps)

    How it differs from ``torch.optim.RMSprop``: torch divides by
    ``sqrt(nu_t) + eps`` with no bias correction, and its decay defaults to
    ``alpha=0.99``. Without the correction torch's first steps are
    ``1 / sqrt(1 - beta)`` times larger (about 3.2x at the first step for 0.9, 10x for
    0.99); the two rules agree once ``beta**t`` is negligible, up to where ``eps`` sits.

    Args:
        lr: Learning rate >= 0, or a schedule ``callable(step) -> float``.
        beta: Decay of the running mean of squared gradients, in [0, 1).
        eps: Added to the denominator, > 0.

    Returns:
        An :class:`Optimizer` whose state is an :class:`~funcnn.optim.states.RmspropState`
        ``{"step", "lr", "nu"}`` (0-d int64, 0-d float64, a tree like params); ``state["lr"]`` is
        the lr the next update will use.

    Example:
        >>> import funcnn as fn, numpy as np
        >>> params = {"w": np.array([1.0, -2.0])}
        >>> opt = fn.optim.rmsprop(0.1)
        >>> state = opt.init(params)
        >>> params, state = opt.update({"w": np.array([3.0, -0.5])}, state, params)
        >>> params["w"].round(6)
        array([ 0.9, -1.9])
    """
    schedule = as_schedule("rmsprop", lr)
    beta = check_decay_rate("rmsprop", "beta", beta)
    eps = check_positive("rmsprop", "eps", eps)

    def init(params: Params) -> State:
        check_params("rmsprop", params)
        return init_state(schedule, nu=tree.zeros_like(params))

    def kernel_at(step: int) -> Kernel:
        eta, correction = lr_at(schedule, step), 1.0 - beta ** (step + 1)

        def kernel(decay, p, g, nu, p_out, nu_out):
            # alias-safe: p_out and nu_out are written after the last read of p and nu
            s, u = np.empty(p.shape, p.dtype), np.empty(p.shape, p.dtype)
            np.multiply(np.multiply(g, g, s), 1.0 - beta, s)  # (1 - beta) * (g * g)
            np.add(np.multiply(nu, beta, nu_out), s, nu_out)  # nu = beta * nu + ...
            np.sqrt(np.divide(nu_out, correction, s), s)  # sqrt(nu / c) + eps
            np.add(s, eps, s)
            np.divide(np.multiply(g, eta, u), s, u)  # p - eta * g / denom
            np.subtract(p, u, p_out)

        return kernel

    rule = ElementwiseRule("rmsprop", ("nu",), schedule, kernel_at, lambda params: 0.0)
    return elementwise_optimizer(rule, init)
