"""The Optimizer type and what every optimizer shares: checks, the lr, the state layout.

An optimizer state is a plain dict::

    {"step": array(3),        # 0-d int64: updates done so far
     "lr":   array(0.001),    # 0-d float64: the lr the NEXT update will use
     "mu":   {...}, ...}      # per-leaf entries, each a tree shaped like params

Every leaf is an ndarray, so a state saves with ``np.savez`` (or ``fn.save``) and
resumes exactly. Entries that are dicts are per-leaf (same key paths, shapes and dtypes
as params); entries that are arrays are global.

Composite optimizers nest the states of their parts (see :mod:`funcnn.optim.chain`,
:mod:`funcnn.optim.accumulate`, :mod:`funcnn.optim.ema`): a chain keys them by
position (``"0"``, ``"1"``, ...), a wrapper keeps the wrapped optimizer's state under
``"inner"``, and each keeps ``"lr"`` at its top level as a read-out of its rule's.
:func:`funcnn.optim.masked` tells per-leaf entries from nested states by their
structure: an entry with the key paths of params is per-leaf.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from funcnn import tree
from funcnn.elementwise import PARALLEL_MIN, run_elementwise
from funcnn.errors import StructureError
from funcnn.layout import Layout, layout_of
from funcnn.types import Params

State = dict[str, Any]
"""An optimizer state: a nested dict of ndarrays (see the module docstring)."""

Schedule = Callable[[int], float]
"""A learning-rate schedule: ``schedule(step) -> lr``, step 0 is the first update."""

Mask = Callable[[str, np.ndarray], bool] | dict
"""A bool pytree shaped like params, or ``callable(path, leaf) -> bool``."""


class Optimizer(NamedTuple):
    """An optimizer is two pure functions; it unpacks as ``init, update = opt``.

    - ``init(params) -> state``: the state before the first update.
    - ``update(grads, state, params) -> (params, state)``: one step. Never mutates
      its arguments; returns new params and a new state.

    An optimizer whose ``update`` can also write its results over the caller's memory
    is a :class:`DonatingOptimizer` (the built-in ``sgd``, ``rmsprop``, ``adam``,
    ``adamw``, and ``chain``, ``accumulate`` and ``ema`` around one of them);
    :func:`funcnn.train_step` asks the type, never the signature. The four built-in
    rules are also :class:`ElementwiseOptimizer` s, which ``fit(comm=...)`` shards.
    """

    init: Callable[[Params], State]
    update: Callable[[Params, State, Params], tuple[Params, State]]


class GradientTransform(NamedTuple):
    """A step of a :func:`funcnn.optim.chain` that maps grads to grads (optax's
    ``GradientTransformation``); it unpacks as ``init, update = transform``.

    - ``init(params) -> state``: a plain dict (``{}`` when it keeps nothing).
    - ``update(grads, state, params) -> (grads, state)``: the transformed grads, e.g.
      clipped or with weight decay added. Never mutates its arguments.

    It is not an :class:`Optimizer`: it returns grads, not params. End a chain with an
    optimizer (the rule that turns grads into new params) to train with it.
    """

    init: Callable[[Params], State]
    update: Callable[[Params, State, Params], tuple[Params, State]]


class DonatingOptimizer(Optimizer):
    """An :class:`Optimizer` whose ``update`` also takes ``donate=True`` (keyword only).

    The results may then be written over the memory of ``params`` and the state's
    entries, which the caller gives up (see :func:`funcnn.train_step`). Results are
    bitwise the same as without it. (optax marks extended transforms the same way, with
    a subclass: ``GradientTransformationExtraArgs``.)
    """


Kernel = Callable[..., None]
"""``kernel(decay, p, g, *entries, p_out, *entries_out)``: one update rule on 1-D chunks
(see :func:`apply_rule`)."""


class ElementwiseRule(NamedTuple):
    """An optimizer's update written once, as an element-wise kernel on flat buffers.

    - ``where``: the optimizer's name, for error messages.
    - ``entries``: the names of its per-leaf state entries, in the kernel's order.
    - ``schedule``: its learning-rate schedule (``state["lr"]`` is read from it).
    - ``kernel_at(step) -> kernel``: the kernel of update number ``step`` (0 first).
    - ``decay_of(params)``: its weight decay, one rate or a tree of per-leaf rates.

    The whole-tree update (:func:`elementwise_optimizer`) and the update of a range of
    the flat buffers (:func:`update_range`, what ``fit(comm=...)`` shards across ranks)
    both run ``kernel_at(step)``, so they give the same bits.
    """

    where: str
    entries: tuple[str, ...]
    schedule: Schedule
    kernel_at: Callable[[int], Kernel]
    decay_of: Callable[[Params], float | Params]


class ElementwiseOptimizer(DonatingOptimizer):
    """A :class:`DonatingOptimizer` whose update is one :class:`ElementwiseRule`, kept as
    ``opt.rule`` (the built-in ``sgd``, ``rmsprop``, ``adam`` and ``adamw``). It still
    unpacks as ``init, update = opt``. Its update of element ``i`` reads only element
    ``i`` of params, grads and state, so ranks can each update a range of the elements
    (see :func:`update_range`)."""

    rule: ElementwiseRule

    def __new__(cls, init: Callable[[Params], State], update: Callable[..., tuple[Params, State]],
                *, rule: ElementwiseRule) -> ElementwiseOptimizer:  # noqa: PYI034
        self = super().__new__(cls, init, update)
        self.rule = rule
        return self


def elementwise_optimizer(rule: ElementwiseRule, init: Callable[[Params], State]
                          ) -> ElementwiseOptimizer:
    """The optimizer of ``rule``: ``update`` checks its arguments, runs the step's kernel
    over the whole tree (:func:`apply_rule`) and advances the counters."""
    memo: list = [None]  # the last params layout seen (see prepare_update)
    where, names, schedule, kernel_at, decay_of = rule  # locals: small models pay per lookup

    def update(grads: Params, state: State, params: Params, *,
               donate: bool = False) -> tuple[Params, State]:
        prepared = prepare_update(where, grads, state, params, names, memo)
        step = prepared.step
        new_params, entries = apply_rule(kernel_at(step), prepared, params, decay_of(params),
                                         donate=donate)
        new_state = next_state(schedule, step)
        new_state.update(zip(names, entries))
        return new_params, new_state

    return ElementwiseOptimizer(init, update, rule=rule)


def of_kind(opt: Optimizer, init: Callable[[Params], State],
            update: Callable[..., tuple[Params, State]]) -> Optimizer:
    """A wrapper of ``opt`` from ``init`` and ``update(grads, state, params, donate)``:
    a :class:`DonatingOptimizer` that passes ``donate`` on when ``opt`` is one, else a
    plain :class:`Optimizer` (whose ``update`` takes no ``donate``)."""
    if isinstance(opt, DonatingOptimizer):
        def update_donating(grads: Params, state: State, params: Params, *,
                            donate: bool = False) -> tuple[Params, State]:
            return update(grads, state, params, donate)

        return DonatingOptimizer(init, update_donating)

    def update_plain(grads: Params, state: State, params: Params) -> tuple[Params, State]:
        return update(grads, state, params, False)

    return Optimizer(init, update_plain)


def call_update(opt: Optimizer, grads: Params, state: State, params: Params,
                donate: bool) -> tuple[Params, State]:
    """``opt.update(grads, state, params)``, with ``donate=True`` only when asked."""
    if donate:
        return opt.update(grads, state, params, donate=True)
    return opt.update(grads, state, params)


# --- hyperparameter checks (at factory call) ---------------------------------------


def check_real(where: str, name: str, value: Any) -> float:
    """``value`` as a Python float; TypeError unless it is a finite real number."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{where}: {name} must be finite, got {value}")
    return value


def check_nonnegative(where: str, name: str, value: Any) -> float:
    """``value`` as a float; ValueError unless ``value >= 0``."""
    value = check_real(where, name, value)
    if value < 0:
        raise ValueError(f"{where}: {name} must be >= 0, got {value}")
    return value


def check_positive(where: str, name: str, value: Any) -> float:
    """``value`` as a float; ValueError unless ``value > 0``."""
    value = check_real(where, name, value)
    if value <= 0:
        raise ValueError(f"{where}: {name} must be > 0, got {value}")
    return value


def check_decay_rate(where: str, name: str, value: Any) -> float:
    """``value`` as a float; ValueError unless ``0 <= value < 1`` (a moment's beta)."""
    value = check_real(where, name, value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{where}: {name} must be in [0, 1), got {value}")
    return value


def check_mask_arg(where: str, name: str, mask: Any) -> None:
    """TypeError unless ``mask`` is None, a callable or a dict (a bool pytree)."""
    if mask is not None and not callable(mask) and not isinstance(mask, dict):
        raise TypeError(
            f"{where}: {name} must be a bool pytree shaped like params or a "
            f"callable(path, leaf) -> bool, got {type(mask).__name__}"
        )


# --- the learning rate -------------------------------------------------------------


def as_schedule(where: str, lr: Any) -> Schedule:
    """A number ``lr >= 0`` becomes a constant schedule; a callable is kept as is."""
    if callable(lr):
        return lr
    if isinstance(lr, (bool, np.bool_)) or not isinstance(lr, numbers.Real):
        raise TypeError(
            f"{where}: lr must be a number >= 0 or a schedule callable(step) -> float, "
            f"got {lr!r} ({type(lr).__name__})"
        )
    value = check_nonnegative(where, "lr", lr)
    return lambda step: value


def lr_at(schedule: Schedule, step: int) -> float:
    """``schedule(step)`` as a Python float, checked to be finite and >= 0."""
    value = schedule(step)
    if type(value) is float and 0.0 <= value < math.inf:  # the common case, quickly
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"the lr schedule returned {value!r} ({type(value).__name__}) at step {step}; "
            "expected a number"
        )
    value = float(value)
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(
            f"the lr schedule returned {value} at step {step}; expected a finite number >= 0"
        )
    return value


# --- state -------------------------------------------------------------------------


def init_state(schedule: Schedule, **entries: Params) -> State:
    """The state before the first update: step 0, ``lr = schedule(0)``, the entries."""
    return {"step": np.array(0, dtype=np.int64), "lr": np.array(lr_at(schedule, 0)), **entries}


def next_state(schedule: Schedule, step: int, **entries: Params) -> State:
    """The state after update number ``step``: counters advanced, new entries."""
    return {
        "step": np.array(step + 1, dtype=np.int64),
        "lr": np.array(lr_at(schedule, step + 1)),
        **entries,
    }


def leafwise(f: Callable[..., tuple], params: Params, *others: Params, outputs: int) -> tuple:
    """Apply ``f(p, *other_leaves) -> (out_1, ..., out_n)`` at every leaf of ``params``.

    Returns ``outputs`` trees shaped like ``params``; each output leaf is an ndarray with
    the dtype of its params leaf. (NumPy turns 0-d results into scalars, and NumPy 1.x
    computes ``0-d float32 * Python float`` in float64; this undoes both.) ``others``
    must already have been checked against ``params`` (see :func:`check_update`).
    """
    if isinstance(params, dict):
        trees: tuple[dict, ...] = tuple({} for _ in range(outputs))
        for k, p in params.items():
            subtrees = leafwise(f, p, *(o[k] for o in others), outputs=outputs)
            for t, sub in zip(trees, subtrees):
                t[k] = sub
        return trees
    return tuple(np.asarray(out, dtype=params.dtype) for out in f(params, *others))


def l2(g: np.ndarray, p: np.ndarray, wd: float) -> np.ndarray:
    """The gradient with coupled weight decay, ``g + wd * p`` (``g`` itself if wd is 0)."""
    return g + wd * p if wd else g


# --- flat updates ------------------------------------------------------------------
# Every optimizer writes its rule once, as an element-wise kernel on 1-D arrays (see
# apply_rule). prepare_update checks the arguments and, when all leaves share one
# dtype, apply_rule runs the kernel on whole flat buffers: one ufunc call per step of
# the rule for the whole tree. The params and state it returns are views into one fresh
# buffer each, which the next update recognizes (no copy). Other trees (mixed dtypes,
# no leaves) run the same kernel leaf by leaf.

Decay = tuple[tuple[int, int, float], ...]
"""``((lo, hi, weight_decay), ...)``: element ranges of a flat buffer that decay."""


class Prepared(NamedTuple):
    """The checked arguments of one update.

    With a ``layout``, ``params``, ``grads`` and ``entries`` are flat 1-D buffers
    (read only: they may be the caller's memory); without one they are the trees.
    """

    step: int
    layout: Layout | None
    params: Any
    grads: Any
    entries: tuple


def prepare_update(where: str, grads: Any, state: Any, params: Any, entries: tuple[str, ...],
                   memo: list) -> Prepared:
    """Check the arguments of ``update`` (as :func:`check_update`) and flatten them.

    ``memo`` is the optimizer's one-item list holding the last layout it saw. When
    params, grads and the state match it exactly, the checks are a few comparisons;
    otherwise :func:`check_update` runs and raises its usual messages.
    """
    layout = memo[0]
    if layout is not None and type(state) is dict and len(state) == 2 + len(entries):
        # the fast path: exactly the last layout everywhere (see Layout.match)
        step, flat = state.get("step"), layout.flat
        p, g = flat(params), flat(grads, False)
        found = []
        for name in entries:
            found.append(flat(state.get(name), False))
            if found[-1] is None:
                break
        else:
            if (p is not None and g is not None and type(step) is np.ndarray and step.shape == ()
                    and step.dtype.kind in "iu" and "lr" in state and int(step) >= 0):
                return Prepared(int(step), layout, p, g, tuple(found))
    step = check_update(where, grads, state, params, entries)
    layout = layout_of(params)
    if layout is None:
        return Prepared(step, None, params, grads, tuple(state[name] for name in entries))
    memo[0] = layout
    flat = [layout.gather(layout.leaves(t)) for t in (params, grads, *(state[n] for n in entries))]
    return Prepared(step, layout, flat[0], flat[1], tuple(flat[2:]))


def apply_rule(kernel: Callable[..., None], prepared: Prepared, params: Params,
               decay: float | Params = 0.0, *, donate: bool = False
               ) -> tuple[Params, tuple[Params, ...]]:
    """Run an optimizer's element-wise rule over the whole tree.

    ``kernel(decay, p, g, *entries, p_out, *entries_out)`` computes one chunk of 1-D
    arrays into the ``_out`` arrays; ``decay`` is its :data:`Decay` ranges, relative to
    the chunk. ``decay`` here is one weight decay for every leaf or a tree of per-leaf
    rates (see :func:`funcnn.optim.masks.decay_rates`). Returns the new params and the
    new entries, as trees shaped like ``params``.

    ``donate=True`` lets the results reuse the memory of ``params`` and the entries
    when they are flat buffers (see :func:`donated_outputs`); the kernel must then be
    alias-safe: ``p_out`` may be ``p`` and each entry's output may be that entry.
    """
    layout = prepared.layout
    if layout is not None:
        inputs = (prepared.params, prepared.grads, *prepared.entries)
        outs = elementwise(kernel, flat_decay(layout, decay), inputs,
                           donated_outputs(inputs) if donate else None)
        new_params, *entries = map(layout.views, outs)
        return new_params, tuple(entries)
    rates = decay if isinstance(decay, dict) else tree.map(lambda p: decay, params)

    def leaf(p, g, *rest):
        *entries, wd = rest
        inputs = tuple(np.ravel(a) for a in (p, g, *entries))
        return tuple(out.reshape(p.shape) for out in elementwise(
            kernel, ((0, p.size, wd),) if wd else (), inputs))

    trees = leafwise(leaf, params, prepared.grads, *prepared.entries, rates,
                     outputs=1 + len(prepared.entries))
    return trees[0], trees[1:]


def flat_decay(layout: Layout, decay: float | Params) -> Decay:
    """One weight decay for every leaf, or a tree of per-leaf rates, as :data:`Decay`
    ranges of the flat buffer of ``layout``."""
    if isinstance(decay, dict):
        return decay_ranges(layout, decay)
    return ((0, layout.size, decay),) if decay else ()


def clip_decay(decay: Decay, lo: int, hi: int) -> Decay:
    """The parts of the ``decay`` ranges inside elements ``[lo, hi)``, relative to ``lo``."""
    return tuple((max(a, lo) - lo, min(b, hi) - lo, wd) for a, b, wd in decay if a < hi and b > lo)


def decay_ranges(layout: Layout, decay: Params) -> Decay:
    """Per-leaf rates as ranges of the flat buffer (neighbours with one rate merged)."""
    ranges: list = []
    for wd, lo, hi in zip(layout.by_path(decay), layout.offsets, layout.offsets[1:]):
        if not wd or lo == hi:
            continue
        if ranges and ranges[-1][1] == lo and ranges[-1][2] == wd:
            ranges[-1] = (ranges[-1][0], hi, wd)
        else:
            ranges.append((lo, hi, wd))
    return tuple(ranges)


def donated_outputs(inputs: tuple) -> tuple | None:
    """The buffers of ``inputs`` (params, grads, entries) that a donated update may
    overwrite with its results: params and entries, unless a buffer is read only or
    shares memory with another input (say, grads passed as params). None then."""
    written = (0, *range(2, len(inputs)))  # params and the entries, not the grads
    outs = tuple(inputs[i] for i in written)
    if not all(out.flags.writeable and out.flags.c_contiguous for out in outs):
        return None
    if all(a.base is None for a in inputs):  # each owns its memory: distinct objects suffice
        return outs if len(set(map(id, inputs))) == len(inputs) else None
    for i in written:
        if any(j != i and np.may_share_memory(inputs[i], other) for j, other in enumerate(inputs)):
            return None
    return outs


def elementwise(kernel: Callable[..., None], decay: Decay, inputs: tuple,
                outs: tuple | None = None) -> tuple:
    """The outputs of ``kernel`` (one per input but the grads: new params and entries),
    1-D arrays computed from the 1-D ``inputs``: fresh ones, or ``outs`` when given.
    Big buffers go in cache-sized blocks (see :func:`funcnn.elementwise.run_elementwise`); the
    kernel is element-wise, so any cut gives the same bits."""
    first = inputs[0]
    n, dtype = first.size, first.dtype
    if outs is None:
        outs = tuple(map(np.empty, [n] * (len(inputs) - 1), [dtype] * (len(inputs) - 1)))
    if n < PARALLEL_MIN:
        kernel(decay, *inputs, *outs)
        return outs

    def chunk(lo: int, hi: int) -> None:
        kernel(clip_decay(decay, lo, hi), *(a[lo:hi] for a in inputs), *(o[lo:hi] for o in outs))

    run_elementwise(chunk, n)
    return outs


# --- one range of the flat buffers: fit(comm=...) shards the update across ranks ----------


def range_state(rule: ElementwiseRule, layout: Layout, state: State, params: Params, lo: int,
                hi: int) -> State:
    """``state`` checked against ``params``, with each per-leaf entry cut to elements
    ``[lo, hi)`` of its flat buffer (a copy the caller owns): the state that
    :func:`update_range` takes and returns. ``layout`` is the layout of ``params``."""
    check_params(rule.where, params)
    check_state(rule.where, state, params, rule.entries)
    return {name: np.array(layout.gather(layout.leaves(value))[lo:hi]) if name in rule.entries
            else value for name, value in state.items()}


def update_range(rule: ElementwiseRule, layout: Layout, grads: np.ndarray, state: State,
                 params: Params, lo: int, hi: int, p_out: np.ndarray) -> State:
    """One update of elements ``[lo, hi)`` of the flat buffers of ``layout``: the step's
    kernel, so the same bits as the whole-tree update there.

    ``grads`` holds those elements of the grads, ``state`` is a :func:`range_state` and
    ``params`` the whole params (for the decay mask). The new params of the range go to
    ``p_out``; the new entries are written over ``state``'s own (the caller's copies,
    which it gives up) and the state after the update is returned. The schedule is asked
    for both of the step's learning rates before any entry is written, so a schedule
    that raises leaves ``state`` as it was.
    """
    step = check_step(rule.where, state["step"])
    kernel = rule.kernel_at(step)
    entries = tuple(state[name] for name in rule.entries)
    after = next_state(rule.schedule, step, **dict(zip(rule.entries, entries)))
    decay = clip_decay(flat_decay(layout, rule.decay_of(params)), lo, hi)
    elementwise(kernel, decay, (layout.flat(params)[lo:hi], grads, *entries), (p_out, *entries))
    return after


def dtype_constants(*values: float) -> Callable[[np.dtype], tuple]:
    """``constants(dtype)``: ``values`` as 0-d arrays of ``dtype``, made once per dtype.

    The same numbers a ufunc makes of Python floats (rounded to the array's dtype), as
    cheaper operands: a kernel on small buffers is mostly per-call overhead.
    """
    made: dict = {}

    def constants(dtype: np.dtype) -> tuple:
        found = made.get(dtype)
        if found is None:
            arrays = tuple(np.array(v, dtype) for v in values)
            for a in arrays:
                a.setflags(write=False)
            found = made.setdefault(dtype, arrays)
        return found

    return constants


def with_decay(g: np.ndarray, p: np.ndarray, decay: Decay, out: np.ndarray,
               factor: Callable[[float], float] | None = None) -> np.ndarray:
    """``g + wd * p`` (as :func:`l2`) where the chunk's ``decay`` ranges say, ``g``
    elsewhere; or, given ``factor``, ``p * factor(wd)`` there and ``p`` elsewhere.
    Returns ``g`` (or ``p``) itself when nothing decays, else ``out``."""
    src = g if factor is None else p
    if not decay:
        return src
    if len(decay) == 1 and decay[0][0] == 0 and decay[0][1] == src.shape[0]:  # all of it
        wd = decay[0][2]
        if factor is None:
            return np.add(g, np.multiply(p, wd, out), out)
        return np.multiply(p, factor(wd), out)
    np.copyto(out, src)
    for a, b, wd in decay:
        if factor is None:
            np.add(g[a:b], np.multiply(p[a:b], wd, out[a:b]), out[a:b])
        else:
            np.multiply(p[a:b], factor(wd), out[a:b])
    return out


def flat_of(tree: Any, memo: list) -> tuple[Layout, np.ndarray] | None:
    """``(layout, buffer)``: ``tree`` as one flat, read-only buffer, or None when its
    leaves cannot be one (mixed dtypes, no leaves, not arrays).

    ``memo`` is the caller's one-item list holding the last layout seen: a tree of the
    views a flat update returned is then recognised in a few comparisons, without a
    copy. Gradient transforms use it to hand the next step flat buffers too.
    """
    layout = memo[0]
    if layout is not None:
        flat = layout.flat(tree, False)
        if flat is not None:
            return layout, flat
    layout = layout_of(tree)
    if layout is None:
        return None
    memo[0] = layout
    return layout, layout.gather(layout.leaves(tree))


# --- checks at every update --------------------------------------------------------


def check_params(where: str, params: Any) -> None:
    """TypeError naming the first leaf of ``params`` that is not a floating ndarray."""
    if not isinstance(params, dict):
        raise TypeError(f"{where}: params must be a dict pytree, got {type(params).__name__}")
    for path, p in tree.flatten(params).items():
        if isinstance(p, dict):
            continue
        if not isinstance(p, np.ndarray) or not np.issubdtype(p.dtype, np.floating):
            got = f"{p.dtype} array" if isinstance(p, np.ndarray) else type(p).__name__
            raise TypeError(
                f"{where}: params leaf {path!r} must be a floating ndarray, got {got} "
                "(cast it with fn.tree.astype(params, np.float32))"
            )


def check_like_params(where: str, name: str, other: Any, params: Params) -> None:
    """StructureError naming the first key path where ``other`` differs from ``params``.

    Checks structure, then each leaf's shape and dtype.
    """
    try:
        tree.assert_same_structure(params, other, names=("params", name))
    except StructureError as e:
        raise StructureError(f"{where}: {e}") from None
    flat_other = tree.flatten(other)
    for path, p in tree.flatten(params).items():
        q = flat_other[path]
        if isinstance(p, dict):
            continue
        if not isinstance(q, (np.ndarray, np.generic)):
            raise StructureError(
                f"{where}: {name} at {path!r} must be an array of shape {p.shape}, "
                f"got {type(q).__name__}"
            )
        if q.shape != p.shape:
            raise StructureError(
                f"{where}: {name} at {path!r} has shape {q.shape}, expected {p.shape} "
                "(the shape of params there)"
            )
        if q.dtype != p.dtype:
            raise StructureError(
                f"{where}: {name} at {path!r} has dtype {q.dtype}, expected {p.dtype} "
                f"(the dtype of params there; cast with fn.tree.astype({name}, ...))"
            )


def check_update(where: str, grads: Any, state: Any, params: Any, entries: tuple[str, ...]) -> int:
    """Check the arguments of ``update`` and return the step count held in ``state``.

    ``entries`` are the names of the per-leaf state entries this optimizer keeps.
    """
    check_params(where, params)
    check_like_params(where, "grads", grads, params)
    return check_state(where, state, params, entries)


def check_state(where: str, state: Any, params: Params, entries: tuple[str, ...]) -> int:
    """Check an optimizer state against ``params`` (keys, then each per-leaf entry's
    structure, shapes and dtypes); return its step count."""
    check_state_keys(where, state, ("step", "lr", *entries),
                     f"make it with {where}(...).init(params)")
    step = check_step(where, state["step"])
    for name in entries:
        check_like_params(where, f"state[{name!r}]", state[name], params)
    return step


def check_step(where: str, step: Any) -> int:
    """``state["step"]`` as an int; StructureError unless it is a 0-d integer array >= 0."""
    if not isinstance(step, np.ndarray) or step.shape != () or step.dtype.kind not in "iu":
        raise StructureError(f"{where}: state['step'] must be a 0-d integer array, got {step!r}")
    if step < 0:
        raise StructureError(f"{where}: state['step'] must be >= 0, got {int(step)}")
    return int(step)


def check_state_keys(where: str, state: Any, expected: tuple[str, ...], hint: str) -> None:
    """StructureError unless ``state`` is a dict with exactly the keys ``expected``."""
    if not isinstance(state, dict) or set(state) != set(expected):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise StructureError(
            f"{where}: state must be a dict with keys {list(expected)}, got {got} ({hint})"
        )


def check_wrapper_state(where: str, state: Any, entry: str, hint: str) -> int:
    """Check the state of a wrapper, ``{"step", "lr", entry, "inner"}`` ("lr" only when
    the inner state has one); return its step count."""
    if not (type(state) is dict and "step" in state and entry in state and "inner" in state
            and len(state) == 3 + ("lr" in state)):
        check_state_keys(where, state, ("step", "lr", entry, "inner"), hint)
    return check_step(where, state["step"])


def lr_entry(inner: Any) -> dict:
    """``{"lr": inner["lr"]}`` when the state ``inner`` has one, else ``{}``: the read-out
    a composite optimizer keeps at its top level, so ``state["lr"]`` works for it too."""
    return {"lr": inner["lr"]} if isinstance(inner, dict) and "lr" in inner else {}
