"""Learning-rate schedules: values at step 0 and known points, torch schedulers, errors."""

import math
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

import funcnn as fn

S = fn.optim.schedules


def test_constant():
    s = S.constant(0.1)
    assert [s(k) for k in (0, 1, 10**6)] == [0.1, 0.1, 0.1]


def test_exponential_decay():
    s = S.exponential_decay(1.0, 0.5, decay_steps=10)
    assert s(0) == 1.0 and s(10) == 0.5 and s(20) == 0.25
    assert s(5) == pytest.approx(0.5**0.5, rel=1e-15)
    assert S.exponential_decay(0.1, 0.9)(3) == pytest.approx(0.1 * 0.9**3, rel=1e-15)
    assert S.exponential_decay(0.1, 0.5)(10**6) == 0.0  # underflows quietly


def test_step_decay():
    s = S.step_decay(1.0, step_size=3, gamma=0.1)
    assert [s(k) for k in range(7)] == [
        1.0,
        1.0,
        1.0,
        0.1,
        0.1,
        0.1,
        pytest.approx(0.01, rel=1e-15),
    ]


def test_cosine_decay():
    s = S.cosine_decay(1.0, decay_steps=100, final_value=0.1)
    assert s(0) == 1.0
    assert s(50) == pytest.approx(0.55, rel=1e-15)
    assert s(100) == pytest.approx(0.1, rel=1e-15) and s(1000) == s(100)
    assert s(25) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2, rel=1e-15)


def test_warmup_cosine():
    s = S.warmup_cosine(1.0, warmup_steps=10, total_steps=110, init_value=0.1, final_value=0.01)
    assert s(0) == 0.1
    assert s(5) == pytest.approx(0.55, rel=1e-15)
    assert s(10) == 1.0
    assert s(60) == pytest.approx(0.505, rel=1e-15)
    assert s(110) == pytest.approx(0.01, rel=1e-15) and s(500) == s(110)
    plain = S.warmup_cosine(1.0, warmup_steps=0, total_steps=100)
    cosine = S.cosine_decay(1.0, decay_steps=100)
    assert [plain(k) for k in range(0, 120, 7)] == [cosine(k) for k in range(0, 120, 7)]


def test_schedules_return_python_floats():
    for s in [
        S.constant(1),
        S.exponential_decay(1, 0.5),
        S.step_decay(1, 2),
        S.cosine_decay(1, 10),
        S.warmup_cosine(1, 2, 10),
    ]:
        assert all(type(s(k)) is float for k in range(12))


@given(
    peak=st.floats(1e-6, 10.0),
    warmup=st.integers(0, 50),
    decay=st.integers(1, 200),
    init_frac=st.floats(0.0, 1.0),
    final_frac=st.floats(0.0, 1.0),
)
def test_warmup_cosine_rises_then_falls_within_its_bounds(
    peak, warmup, decay, init_frac, final_frac
):
    init, final = init_frac * peak, final_frac * peak
    s = S.warmup_cosine(peak, warmup, warmup + decay, init_value=init, final_value=final)
    values = [s(k) for k in range(warmup + decay + 3)]
    assert values[0] == (init if warmup else peak)
    assert values[warmup] == peak and values[-1] == pytest.approx(final, rel=1e-12, abs=1e-300)
    tol = 1e-12 * peak
    assert all(b >= a - tol for a, b in pairwise(values[: warmup + 1]))
    assert all(b <= a + tol for a, b in pairwise(values[warmup:]))
    assert all(min(init, final) - tol <= v <= peak + tol for v in values)


def test_schedules_match_torch_lr_schedulers():
    torch = pytest.importorskip("torch")
    cases = [
        (S.step_decay(0.1, 7, 0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 7, 0.5)),
        (S.exponential_decay(0.1, 0.95), lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.95)),
        (
            S.cosine_decay(0.1, 30, 0.002),
            lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 30, 0.002),
        ),
    ]
    for schedule, make in cases:
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=schedule(0))
        sched = make(opt)
        for step in range(30):
            assert schedule(step) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15)
            opt.step()
            sched.step()


@pytest.mark.parametrize(
    "make, exception, message",
    [
        (lambda: S.constant(-1.0), ValueError, "constant: value must be >= 0, got -1.0"),
        (lambda: S.constant("1"), TypeError, "constant: value must be a number"),
        (lambda: S.exponential_decay(1.0, 0.0), ValueError, "decay_rate must be in (0, 1]"),
        (lambda: S.exponential_decay(1.0, 1.5), ValueError, "decay_rate must be in (0, 1]"),
        (
            lambda: S.exponential_decay(1.0, 0.5, decay_steps=0),
            ValueError,
            "decay_steps must be >= 1, got 0",
        ),
        (
            lambda: S.exponential_decay(1.0, 0.5, decay_steps=2.5),
            TypeError,
            "decay_steps must be an int",
        ),
        (
            lambda: S.step_decay(1.0, step_size=0),
            ValueError,
            "step_decay: step_size must be >= 1, got 0",
        ),
        (
            lambda: S.step_decay(1.0, 2, gamma=2.0),
            ValueError,
            "step_decay: gamma must be in [0, 1]",
        ),
        (
            lambda: S.cosine_decay(1.0, decay_steps=0),
            ValueError,
            "cosine_decay: decay_steps must be >= 1",
        ),
        (lambda: S.cosine_decay(1.0, 10, final_value=-0.1), ValueError, "final_value must be >= 0"),
        (lambda: S.warmup_cosine(1.0, -1, 10), ValueError, "warmup_steps must be >= 0, got -1"),
        (lambda: S.warmup_cosine(1.0, 10, 10), ValueError, "total_steps must be > warmup_steps"),
        (lambda: S.warmup_cosine(float("inf"), 1, 10), ValueError, "peak_value must be finite"),
        (lambda: S.warmup_cosine(1.0, 1, True), TypeError, "total_steps must be an int, got True"),
    ],
)
def test_bad_arguments_name_the_argument(make, exception, message):
    with pytest.raises(exception) as info:
        make()
    assert message in str(info.value)
