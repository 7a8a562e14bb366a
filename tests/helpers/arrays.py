"""Array helpers for the ops tests: read-only views, and the same values in other layouts."""

import numpy as np


def frozen(a):
    """A read-only view (same memory layout): an op that writes into its inputs fails."""
    view = np.asarray(a).view()
    view.setflags(write=False)
    return view


def relayout(a, layout):
    """The same values in another memory layout (the ops must not care):
    ``"contiguous"``, ``"channels-last"`` (axis 1 innermost), ``"strided"`` (every other
    element of a larger array) or ``"reversed"`` (a negative stride on the last axis)."""
    if layout == "channels-last":
        return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 1, -1)), -1, 1)
    if layout == "strided":
        big = np.zeros((*a.shape[:-1], 2 * a.shape[-1]), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if layout == "reversed":
        return np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    return np.ascontiguousarray(a)


LAYOUTS = ("contiguous", "channels-last", "strided", "reversed")
