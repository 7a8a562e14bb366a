"""Learning-rate schedules: ``schedule(step) -> float``, step 0 is the first update.

Pass one as ``lr`` to any optimizer; the optimizer calls it with the number of updates
done so far, and keeps the value the next update will use in ``state["lr"]``.

    >>> import funcnn as fn
    >>> schedule = fn.optim.schedules.warmup_cosine(1e-3, warmup_steps=100, total_steps=1000)
    >>> schedule(0), schedule(50), schedule(100), schedule(1000)
    (0.0, 0.0005, 0.001, 0.0)
    >>> opt = fn.optim.adam(schedule)

Every schedule checks its arguments when it is made and returns Python floats.
"""

from __future__ import annotations

import math
import numbers

from funcnn.optim.base import Schedule, check_nonnegative, check_real


def constant(value: float) -> Schedule:
    """``lr(step) = value``.

    Example:
        >>> constant(0.1)(5)
        0.1
    """
    value = check_nonnegative("constant", "value", value)

    def schedule(step: int) -> float:
        return value

    return schedule


def exponential_decay(init_value: float, decay_rate: float, decay_steps: int = 1) -> Schedule:
    """``lr(step) = init_value * decay_rate ** (step / decay_steps)``, decaying smoothly.

    With ``decay_steps=1`` this is ``torch.optim.lr_scheduler.ExponentialLR(gamma=decay_rate)``
    stepped once per update. For a staircase see :func:`step_decay`.

    Example:
        >>> exponential_decay(1.0, 0.5, decay_steps=10)(20)
        0.25
    """
    init_value = check_nonnegative("exponential_decay", "init_value", init_value)
    decay_rate = _check_factor("exponential_decay", "decay_rate", decay_rate, low_open=True)
    decay_steps = _check_steps("exponential_decay", "decay_steps", decay_steps)

    def schedule(step: int) -> float:
        return init_value * decay_rate ** (step / decay_steps)

    return schedule


def step_decay(init_value: float, step_size: int, gamma: float = 0.1) -> Schedule:
    """``lr(step) = init_value * gamma ** (step // step_size)``, a staircase.

    The same as ``torch.optim.lr_scheduler.StepLR(step_size, gamma)`` stepped once per
    update.

    Example:
        >>> [step_decay(1.0, step_size=2, gamma=0.5)(s) for s in range(5)]
        [1.0, 1.0, 0.5, 0.5, 0.25]
    """
    init_value = check_nonnegative("step_decay", "init_value", init_value)
    step_size = _check_steps("step_decay", "step_size", step_size)
    gamma = _check_factor("step_decay", "gamma", gamma, low_open=False)

    def schedule(step: int) -> float:
        return init_value * gamma ** (step // step_size)

    return schedule


def cosine_decay(init_value: float, decay_steps: int, final_value: float = 0.0) -> Schedule:
    """Half a cosine from ``init_value`` at step 0 to ``final_value`` at ``decay_steps``.

    ``lr(step) = init - (init - final) * (1 - cos(pi * step / decay_steps)) / 2`` up to
    ``decay_steps``, then ``final_value``. The closed form of
    ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=decay_steps, eta_min=final_value)``
    up to ``T_max``.

    Example:
        >>> cosine_decay(1.0, decay_steps=100)(50)
        0.5
    """
    init_value = check_nonnegative("cosine_decay", "init_value", init_value)
    decay_steps = _check_steps("cosine_decay", "decay_steps", decay_steps)
    final_value = check_nonnegative("cosine_decay", "final_value", final_value)
    return _cosine(init_value, final_value, decay_steps)


def warmup_cosine(
    peak_value: float,
    warmup_steps: int,
    total_steps: int,
    init_value: float = 0.0,
    final_value: float = 0.0,
) -> Schedule:
    """Linear warm-up from ``init_value`` to ``peak_value``, then cosine decay to ``final_value``.

    With ``w = warmup_steps`` and ``T = total_steps``::

        lr(step) = init + (peak - init) * step / w                       for step < w
        lr(step) = cosine_decay(peak, T - w, final)(step - w)             for step >= w

    so ``lr(0) = init_value``, ``lr(w) = peak_value`` and ``lr(step) = final_value`` for
    ``step >= T``. ``warmup_steps=0`` gives a plain cosine decay.

    Example:
        >>> s = warmup_cosine(1.0, warmup_steps=10, total_steps=110)
        >>> s(0), s(5), s(10), s(60), s(110)
        (0.0, 0.5, 1.0, 0.5, 0.0)
    """
    peak_value = check_nonnegative("warmup_cosine", "peak_value", peak_value)
    warmup_steps = _check_steps("warmup_cosine", "warmup_steps", warmup_steps, minimum=0)
    total_steps = _check_steps("warmup_cosine", "total_steps", total_steps)
    init_value = check_nonnegative("warmup_cosine", "init_value", init_value)
    final_value = check_nonnegative("warmup_cosine", "final_value", final_value)
    if total_steps <= warmup_steps:
        raise ValueError(
            f"warmup_cosine: total_steps must be > warmup_steps, got total_steps={total_steps} "
            f"and warmup_steps={warmup_steps} (total_steps counts the warm-up too)"
        )
    decay = _cosine(peak_value, final_value, total_steps - warmup_steps)

    def schedule(step: int) -> float:
        if step < warmup_steps:
            return init_value + (peak_value - init_value) * step / warmup_steps
        return decay(step - warmup_steps)

    return schedule


def _cosine(init_value: float, final_value: float, decay_steps: int) -> Schedule:
    # Written as init - (init - final) * ... so that lr(0) is exactly init_value.
    def schedule(step: int) -> float:
        if step >= decay_steps:
            return final_value
        drop = 0.5 * (1.0 - math.cos(math.pi * step / decay_steps))
        return init_value - (init_value - final_value) * drop

    return schedule


def _check_steps(where: str, name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{where}: {name} must be >= {minimum}, got {value}")
    return int(value)


def _check_factor(where: str, name: str, value, *, low_open: bool) -> float:
    value = check_real(where, name, value)
    if not (0.0 < value <= 1.0 if low_open else 0.0 <= value <= 1.0):
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise ValueError(f"{where}: {name} must be in {interval} (a decay factor), got {value}")
    return value
