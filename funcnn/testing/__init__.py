"""Testing helpers for users of funcnn: gradient checks and hypothesis strategies.

``fn.testing.strategies`` imports hypothesis, so it is loaded only when first used;
funcnn itself never needs hypothesis.
"""

import importlib

from funcnn.testing.gradcheck import check_grads, check_loss_grads

__all__ = ["check_grads", "check_loss_grads", "strategies"]


def __getattr__(name):
    if name == "strategies":
        return importlib.import_module("funcnn.testing.strategies")
    raise AttributeError(f"module 'funcnn.testing' has no attribute {name!r}")
