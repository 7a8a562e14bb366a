"""Test settings: strict numpy, warnings as errors, a registered hypothesis profile."""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=40,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(autouse=True)
def strict_numpy():
    """Overflow, divide-by-zero and invalid operations raise instead of warning.

    Underflow to zero (e.g. ``exp(-1e4)``) is the correct, expected result of stable
    formulas, so it is the one floating-point event left quiet.
    """
    with np.errstate(all="raise", under="ignore"):
        yield


@pytest.fixture
def two_threads(monkeypatch):
    """Element-wise updates of big buffers split over two threads (funcnn.elementwise), as with
    FUNCNN_ELEMENTWISE_THREADS=2; the default is one thread."""
    from concurrent.futures import ThreadPoolExecutor

    from funcnn import elementwise

    with ThreadPoolExecutor(max_workers=1) as pool:
        monkeypatch.setitem(elementwise._pool_state, "current", (os.getpid(), pool))
        yield pool
