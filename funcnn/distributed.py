"""Data-parallel training on MPI: the pieces of a hand-written loop.

Under ``mpiexec -n N python train.py`` every rank runs the same script with the same
full data and key. Each global batch of ``B`` rows is cut into contiguous per-rank
slices of ``B_r`` rows (:func:`shard`); each rank computes the mean loss and grads over
its own rows, and one Allreduce sums them weighted by rows:

    g = sum_r (B_r / B) * g_r        (the gradient of the mean loss over all B rows)

so every rank applies the same update and holds the same params after every step, and
the run is a one-process run up to rounding. A rank with no rows adds zeros but still
joins the Allreduce, so nothing hangs.

``fit(..., comm=comm)`` goes one step further with the element-wise optimizers (``sgd``,
``rmsprop``, ``adam``, ``adamw``): instead of every rank updating all params, each updates
its 1/N of them (:func:`sharded_update`: Reduce_scatter, the range update, Allgather).

``comm`` is an mpi4py intracommunicator (``MPI.COMM_WORLD``), or None for one process;
funcnn never imports mpi4py itself (``pip install "funcnn[mpi]"`` installs it):

    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    params = fn.distributed.broadcast_params(model.init(0), comm)
    step = fn.distributed.data_parallel(fn.value_and_grad(model, loss), comm)
    for xb, yb in fn.data.batches(x, y, 64, key=key):   # the same batches on every rank
        value, grads = step(params, xb, yb)              # its rows, then one Allreduce
        params, opt_state = opt.update(grads, opt_state, params)
"""

from __future__ import annotations

import hashlib
import itertools
import numbers
import sys
import types
from collections.abc import Callable
from typing import Any

import numpy as np

from funcnn import tree as _tree
from funcnn.errors import DistributedError, MPIUnavailableError
from funcnn.layout import Layout, layout_of
from funcnn.optim.base import (
    ElementwiseOptimizer,
    ElementwiseRule,
    State,
    range_state,
    update_range,
)
from funcnn.random import Key, fold_in
from funcnn.types import Params

_INSTALL = ('pip install "funcnn[mpi]" (mpi4py and the MPICH wheel, mpiexec included), or '
            "pip install mpi4py built against your system MPI (Open MPI, MPICH, Intel MPI)")


# --- the communicator ------------------------------------------------------------------


def require_comm(comm: Any) -> Any:
    """Return ``comm`` if it is None (one process) or an mpi4py intracommunicator.

    funcnn does not import mpi4py: an object can only be a communicator if the caller
    imported ``mpi4py.MPI`` already.

    Raises:
        MPIUnavailableError: ``comm`` is given but mpi4py is not installed.
        TypeError: ``comm`` is something else (the ``MPI`` module, a rank, ``COMM_NULL``,
            an intercommunicator, ...).
    """
    if comm is None:
        return None
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and isinstance(comm, mpi.Intracomm) and comm != mpi.COMM_NULL:
        return comm
    try:
        import mpi4py  # noqa: F401  (the package only: this does not start MPI)
    except ImportError:
        raise MPIUnavailableError(
            f"comm= needs mpi4py, which is not installed (got comm of type "
            f"{type(comm).__name__}); install it with {_INSTALL}, then pass "
            "comm=MPI.COMM_WORLD, or pass comm=None for one process"
        ) from None
    if mpi is not None and comm == mpi.COMM_NULL:
        got = "MPI.COMM_NULL"
    elif mpi is not None and isinstance(comm, mpi.Intercomm):
        got = "an intercommunicator (it joins two groups; reduce over one intracommunicator)"
    elif isinstance(comm, types.ModuleType):
        got = f"the module {comm.__name__} (pass its COMM_WORLD)"
    else:
        got = _kind(comm)
    raise TypeError(
        f"comm must be an mpi4py intracommunicator such as MPI.COMM_WORLD "
        f"(from mpi4py import MPI), or None for one process; got {got}"
    )


def rank(comm: Any) -> int:
    """This process's rank in ``comm`` (0 for ``comm=None``)."""
    comm = require_comm(comm)
    return 0 if comm is None else comm.Get_rank()


def num_ranks(comm: Any) -> int:
    """The number of ranks in ``comm`` (1 for ``comm=None``)."""
    comm = require_comm(comm)
    return 1 if comm is None else comm.Get_size()


def is_root(comm: Any) -> bool:
    """Whether this is rank 0, the one that prints and writes files (True for None)."""
    return rank(comm) == 0


def rank_key(key: Key | int, comm: Any) -> Key:
    """``fn.random.fold_in(key, rank)``: a key of this rank's own (e.g. its dropout masks).

    With ``comm=None`` this is ``fold_in(key, 0)``, the key of rank 0.
    """
    return fold_in(key, rank(comm))


# --- cutting a global batch ------------------------------------------------------------


def shards(num_rows: int, num_ranks: int) -> tuple[slice, ...]:
    """The contiguous slices of ``num_rows`` rows that ranks ``0 .. num_ranks-1`` take.

    With ``q, m = divmod(num_rows, num_ranks)`` the first ``m`` ranks take ``q + 1``
    rows and the others ``q`` (possibly 0); together the slices cover every row once.

    Example:
        >>> shards(10, 4)
        (slice(0, 3, None), slice(3, 6, None), slice(6, 8, None), slice(8, 10, None))
    """
    num_rows = _count(num_rows, "shards", "num_rows", minimum=0)
    num_ranks = _count(num_ranks, "shards", "num_ranks", minimum=1)
    q, m = divmod(num_rows, num_ranks)
    bounds = [r * q + min(r, m) for r in range(num_ranks + 1)]
    return tuple(slice(a, b) for a, b in itertools.pairwise(bounds))


def shard(num_rows: int, comm: Any) -> slice:
    """This rank's slice of a global batch of ``num_rows`` rows (see :func:`shards`).

    ``xb[shard(len(xb), comm)]`` is a view. With ``comm=None``: ``slice(0, num_rows)``.
    """
    return shards(num_rows, num_ranks(comm))[rank(comm)]


# --- reductions ------------------------------------------------------------------------


def allreduce_grads(grads: Params | None, rows_on_rank: int, rows_in_batch: int, comm: Any,
                    *, like: Params | None = None) -> Params:
    """Sum every rank's mean grads weighted by its share of the batch, in one Allreduce.

        g = sum_r (rows_on_rank_r / rows_in_batch) * grads_r

    Every rank gets the same ``g``, a new nested dict like ``grads``. When the grads are
    one flat buffer of one dtype (built-in layers), ``g`` is too (a view tree, which the
    optimizers update without copying); otherwise the leaves are gathered into one
    buffer of their common float dtype and split again.

    Args:
        grads: This rank's grads (the mean over its rows). Ignored when
            ``rows_on_rank`` is 0 (the rank adds zeros), and then may be None.
        rows_on_rank: Rows this rank computed ``grads`` on; 0 still joins.
        rows_in_batch: Rows of the global batch (the sum of ``rows_on_rank``).
        comm: An mpi4py intracommunicator; with None or one rank, ``grads`` are
            returned as they are.
        like: The params, to give the structure when ``grads`` is None.

    Returns:
        The global batch's grads, identical on every rank.

    Raises:
        ValueError: row counts out of range, or ``grads=None`` with rows or without ``like``.
        TypeError: a leaf that is not a float array (the message names its key path).
    """
    comm = _peers(comm)
    weight = _weight("allreduce_grads", rows_on_rank, rows_in_batch)
    if grads is None and (weight or like is None):
        need = "grads of its rows" if weight else "like=params (the structure to add zeros in)"
        raise ValueError(f"allreduce_grads: grads is None with rows_on_rank={rows_on_rank}; "
                         f"pass {need}")
    if comm is None:
        return grads if grads is not None else _tree.map(np.zeros_like, like)
    buffer, unpack = _weighted_buffer(like if grads is None else grads, weight)
    if buffer.size:
        comm.Allreduce(_mpi().IN_PLACE, buffer)
    return unpack(buffer)


def allreduce_mean(value: Any, rows_on_rank: int, rows_in_batch: int, comm: Any):
    """The mean over a global batch of per-rank means, e.g. a loss or a metric.

        mean = sum_r value_r * rows_on_rank_r / rows_in_batch

    ``value`` is this rank's mean over its rows: a number, or a float array of the same
    shape on every rank (several metrics at once). With ``rows_on_rank`` 0 it adds
    zeros, and may be None for a number. Returns a float (a float64 array for an
    array), the same on every rank; with one process (``comm=None`` or one rank),
    ``value`` as it is.
    """
    comm = _peers(comm)
    weight = _weight("allreduce_mean", rows_on_rank, rows_in_batch)
    if comm is None:
        return value
    if value is None and weight:
        raise ValueError(f"allreduce_mean: value is None with rows_on_rank={rows_on_rank}")
    shape = np.shape(value)
    total = np.zeros(shape) if not weight else np.asarray(value, np.float64) * float(rows_on_rank)
    total = np.array(total, dtype=np.float64, ndmin=1)  # a fresh, writable buffer
    comm.Allreduce(_mpi().IN_PLACE, total)
    total /= rows_in_batch
    return float(total[0]) if shape == () else total.reshape(shape)


def data_parallel(value_and_grad_fn: Callable[..., tuple], comm: Any) -> Callable[..., tuple]:
    """Turn ``f(params, x, y) -> (value, grads)`` into the same function of a global batch.

    The returned ``step(params, x, y, *, key=None, state=None, **kwargs)`` takes this
    rank's rows (``x[shard(len(x), comm)]``, the same for ``y``), calls ``f`` on them
    (not at all on a rank with no rows), and returns the global batch's mean value and
    grads: :func:`allreduce_mean` of the value and :func:`allreduce_grads` of the grads
    (one Allreduce over the grads' flat buffer, one of a single float). Every rank must
    pass the same ``params``, ``x``, ``y``, ``key`` and ``state``. This is exact for a
    loss that is a mean over rows (every funcnn loss).

    With ``key``, ``f`` gets :func:`rank_key` of it (each rank its own Dropout masks).
    With ``state`` (BatchNorm statistics), ``f`` returns ``(value, grads, new_state)``
    and so does ``step``, the new state agreed across ranks by :func:`allreduce_state`.
    Layers that communicate themselves (``BatchNorm(sync=comm)``) need the same number of
    rows on every rank: global batches a multiple of the number of ranks
    (``drop_last=True`` when the last one is short). They sum the cotangents of all ranks
    in their backward pass, and those are scaled by ``1 / rows_on_rank`` here (each rank's
    loss is the mean over its rows), so only equal shares give the global batch's
    gradient. With one process (``comm=None`` or one rank) this returns ``f`` itself:
    the same bits as without MPI.

    Example:
        >>> step = fn.distributed.data_parallel(fn.value_and_grad(model, fn.losses.mse), comm)
        >>> loss, grads = step(params, xb, yb)      # the same on every rank
    """
    comm = _peers(comm)
    if not callable(value_and_grad_fn):
        raise TypeError("data_parallel: expected a function f(params, x, y) -> (value, grads) "
                        f"such as fn.value_and_grad(model, loss), got {_kind(value_and_grad_fn)}")
    if comm is None:
        return value_and_grad_fn

    def step(params: Params, x: Any, y: Any, *args: Any, key: Key | int | None = None,
             state: Any = None, **kwargs: Any) -> tuple:
        rows = len(x)
        mine = shard(rows, comm)
        n = mine.stop - mine.start
        if key is not None:
            kwargs["key"] = rank_key(key, comm)
        if state is not None:
            kwargs["state"] = state
        value = grads = None
        new_state = state
        if n:
            got = value_and_grad_fn(params, x[mine], None if y is None else y[mine],
                                    *args, **kwargs)
            value, grads = got[0], got[1]
            new_state = got[2] if state is not None else None
        grads = allreduce_grads(grads, n, rows, comm, like=params)
        value = allreduce_mean(value, n, rows, comm)
        if state is None:
            return value, grads
        return value, grads, allreduce_state(new_state, n, rows, comm)

    return step


def allreduce_state(state: Any, rows_on_rank: int, rows_in_batch: int, comm: Any) -> Any:
    """Model state (BatchNorm's running statistics) made the same on every rank.

        float leaves:  s = sum_r (rows_on_rank_r / rows_in_batch) * s_r   (one Allreduce)
        other leaves (counters such as num_batches_tracked): rank 0's

    A running mean updated from each rank's batch mean this way is the one updated from
    the global batch's mean (the update is linear in it); running variances become the
    row-weighted mean of the ranks' (torch DDP instead copies rank 0's buffers). A rank
    with no rows passes the state it had; its float leaves count for nothing and rank 0
    always has rows. Returns ``state`` as it is for one process.
    """
    comm = _peers(comm)
    weight = _weight("allreduce_state", rows_on_rank, rows_in_batch)
    if comm is None:
        return state
    leaves = _tree.flatten(state)
    floats = {p: v for p, v in leaves.items()
              if isinstance(v, (np.ndarray, np.generic)) and np.asarray(v).dtype.kind == "f"}
    if floats:
        buffer, unpack = _weighted_buffer(_tree.unflatten(floats), weight)
        comm.Allreduce(_mpi().IN_PLACE, buffer)
        floats = _tree.flatten(unpack(buffer))
    others = {p: v for p, v in leaves.items() if p not in floats}
    if others:
        others = comm.bcast(others if comm.Get_rank() == 0 else None, root=0)
    return _tree.unflatten({p: floats[p] if p in floats else others[p] for p in leaves})


def broadcast_params(params: Params, comm: Any, root: int = 0) -> Params:
    """Rank ``root``'s params on every rank: new arrays, one Bcast of one flat buffer.

    Every rank must pass params of the same structure (key paths, shapes, dtypes; the
    values may differ): a rank whose differ gets a :class:`DistributedError` naming the
    first differing key path, on every rank. Returns ``params`` itself for one process.
    """
    size = num_ranks(comm)
    if isinstance(root, bool) or not isinstance(root, numbers.Integral) or not 0 <= root < size:
        raise ValueError(f"broadcast_params: root must be a rank in [0, {size}), got {root!r}")
    comm = _peers(comm)
    if comm is None:
        return params
    mine = _descriptions(params, "broadcast_params", with_values=False)
    theirs = comm.bcast(mine, root=root)
    _agree(comm, _difference(theirs, mine, comm.Get_rank(), root),
           "broadcast_params: params differ in structure between ranks",
           "every rank must build the same model (layers, widths, dtypes)")
    layout = layout_of(params)
    if layout is None:  # leaves of several dtypes, or not arrays: pickled (rare, small)
        return comm.bcast(params if comm.Get_rank() == root else None, root=root)
    if comm.Get_rank() == root:
        buffer = np.array(layout.flat(params))
    else:  # root's layout, in root's key order (from zero-stride templates)
        layout = layout_of(_tree.unflatten({path: _template(d) for path, d in theirs.items()}))
        buffer = np.empty(layout.size, layout.dtype)
    comm.Bcast(buffer, root=root)
    return layout.views(buffer)


def check_same(tree: Any, comm: Any, what: str = "params") -> None:
    """Check that ``tree`` is the same on every rank (broadcast-and-compare).

    Rank 0 broadcasts a fingerprint of each leaf (arrays: dtype, shape and a BLAKE2
    hash of the bytes; numbers, strings, None: their repr); every rank compares its own.
    On any difference every rank raises the same :class:`DistributedError`, naming the
    first differing key path and the first rank that differs, so none is left waiting.
    ``tree`` is a nested dict, list or tuple of those leaves, e.g. params, ``(x, y)``
    or ``{"batch_size": 64, "lr": 1e-3}``; ``what`` names it in the message.
    With one process only the leaves' kinds are checked.
    """
    comm = _peers(comm)
    mine = _descriptions(tree, f"check_same({what})", with_values=comm is not None)
    if comm is None:
        return
    if what == "params":
        hint = ("build params from the same key on every rank, or call "
                "fn.distributed.broadcast_params(params, comm)")
    elif what == "data":
        hint = "every rank must load the same full data (each takes its own rows of a batch)"
    else:
        hint = f"every rank must run the same script with the same {what}"
    _agree(comm, _difference(comm.bcast(mine, root=0), mine, comm.Get_rank(), 0),
           f"check_same: {what} differ between ranks", hint)


# --- rank 0 only ----------------------------------------------------------------------


def on_root(comm: Any, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``f(*args, **kwargs)`` on rank 0 only; every rank waits until it is done.

    For output: ``on_root(comm, fn.save, path, params)``. Returns ``f``'s result on
    rank 0 and None elsewhere. If ``f`` raises on rank 0, rank 0 re-raises it and every
    other rank raises a :class:`DistributedError` quoting it (nobody hangs).
    """
    comm = _peers(comm)
    if comm is None:
        return f(*args, **kwargs)
    result, failure = None, None
    if comm.Get_rank() == 0:
        try:
            result = f(*args, **kwargs)
        except Exception as error:
            failure = error
    # the message only goes out once f has returned: a barrier for every rank but 0
    news = comm.bcast(None if failure is None else f"{type(failure).__name__}: {failure}", root=0)
    if failure is not None:
        raise failure
    if news is not None:
        name = getattr(f, "__qualname__", type(f).__name__)
        raise DistributedError(f"on_root: rank 0 failed in {name}: {news}")
    return result


# --- what fit(comm=) adds to them -----------------------------------------------------


def sum_grads(grads: Params | None, comm: Any, *, like: Params) -> Params:
    """Grads already weighted by their rows' share of the batch (``fit`` scales each
    rank's loss gradient before the backward), summed over the ranks in one Allreduce:
    in place when they are one flat buffer of ``like``'s layout (what ``value_and_grad``
    returns); zeros from a rank with no rows (``grads=None``)."""
    comm = _peers(comm)
    if comm is None:
        return grads
    layout = layout_of(like)
    if layout is None:  # not one flat buffer: gather, reduce, split (rare)
        return allreduce_grads(grads, 1 if grads is not None else 0, 1, comm, like=like)
    buffer = layout.flat(grads) if grads is not None else None
    if buffer is None or not buffer.flags.writeable:
        buffer = np.zeros(layout.size, layout.dtype) if grads is None else np.array(buffer)
    comm.Allreduce(_mpi().IN_PLACE, buffer)
    return layout.views(buffer)


def sharded_update(optimizer: Any, params: Params, comm: Any) -> ShardedUpdate | None:
    """The update of ``optimizer`` shared out over the ranks of ``comm``, if it can be:
    a :class:`ShardedUpdate` for an element-wise optimizer (the built-in ``sgd``,
    ``rmsprop``, ``adam``, ``adamw``: :class:`funcnn.optim.ElementwiseOptimizer`) on
    params of one float dtype; None for one process and for anything else (``chain``,
    ``accumulate``, ``ema``, ``masked``, user optimizers), which every rank then runs
    whole on the summed grads (:func:`sum_grads`).

    ``fit(..., comm=comm)`` uses it; in a loop of your own it takes each rank's grads
    weighted by its share of the rows, unsummed::

        update = fn.distributed.sharded_update(opt, params, comm)
        opt_state = update.scatter(opt.init(params), params)   # this rank's range
        for xb, yb in batches:                                 # the same on every rank
            mine = fn.distributed.shard(len(xb), comm)
            rows = mine.stop - mine.start
            grads = None                                       # a rank without rows
            if rows:
                _, grads = value_and_grad(params, xb[mine], yb[mine])
                grads = fn.tree.map(lambda g: g * (rows / len(xb)), grads)
            params, opt_state = update.update(grads, opt_state, params)
        full = update.gather_state(opt_state)   # every rank calls it, e.g. to checkpoint
    """
    comm = _peers(comm)
    if comm is None or not isinstance(optimizer, ElementwiseOptimizer):
        return None
    layout = layout_of(params)
    return None if layout is None else ShardedUpdate(optimizer.rule, layout, comm)


class ShardedUpdate:
    """An element-wise optimizer's update, each rank doing its range of the elements
    (ZeRO stage 1: the optimizer state is sharded, params and grads are not).

    The flat buffer of ``n`` elements is cut into ``N`` contiguous ranges: ``n // N``
    elements each, the remainder to the last rank. A step (:meth:`update`) is a
    Reduce_scatter of the ranks' weighted grads, so each rank gets the sum over the
    ranks of its range; the optimizer's kernel on that range only (its params, and its
    own range of every state entry); an Allgather of the new params. Every rank then
    holds the same params, bit for bit. Per step and rank this moves the same bytes as
    one Allreduce and does ``1/N`` of the update.

    The state between steps is a *range state* (:meth:`scatter`): ``step`` and ``lr``
    as usual, each per-leaf entry (``mu``, ``nu``, ...) a 1-D array of this rank's
    range. :meth:`gather_state` rebuilds the full state (for checkpoints and results).
    """

    def __init__(self, rule: ElementwiseRule, layout: Layout, comm: Any):
        self.rule, self.layout, self.comm = rule, layout, comm
        n, ranks, me = layout.size, comm.Get_size(), comm.Get_rank()
        self.block = n // ranks  # the Allgather's equal blocks; the last rank adds the tail
        self.counts = [self.block] * (ranks - 1) + [n - (ranks - 1) * self.block]
        self.lo = me * self.block
        self.hi = self.lo + self.counts[me]
        self._summed = np.empty(self.hi - self.lo, layout.dtype)  # this rank's summed grads

    def scatter(self, state: State, params: Params) -> State:
        """This rank's range state of the full ``state`` (the same on every rank),
        checked against ``params``; its arrays are copies."""
        return range_state(self.rule, self.layout, state, params, self.lo, self.hi)

    def update(self, grads: Params | None, state: State, params: Params) -> tuple[Params, State]:
        """One step from this rank's grads, already weighted by its share of the batch
        (None for a rank without rows: zeros). Returns the new params (the same on every
        rank, views of one new buffer) and this rank's new range state; the arrays of
        ``state``'s entries are reused for it, so ``state`` must not be used again."""
        layout, comm = self.layout, self.comm
        mine = layout.flat(grads) if grads is not None else np.zeros(layout.size, layout.dtype)
        comm.Reduce_scatter(mine, self._summed, self.counts, op=_mpi().SUM)
        new_flat = np.empty(layout.size, layout.dtype)
        new_state, failure = state, None
        try:  # e.g. a FloatingPointError in one rank's range only: raised on every rank
            new_state = update_range(self.rule, layout, self._summed, state, params, self.lo,
                                     self.hi, new_flat[self.lo:self.hi])
        except Exception as error:  # noqa: BLE001 -- re-raised by raise_together, everywhere
            failure = error
        raise_together(failure, comm, "the optimizer update")
        self._allgather(new_flat)
        return layout.views(new_flat), new_state

    def gather_state(self, state: State) -> State:
        """The full optimizer state from every rank's range state (a collective: every
        rank calls it; every rank gets it): what ``optimizer.update`` would have made."""
        full = {}
        for name, value in state.items():
            if name in self.rule.entries:
                buffer = np.empty(self.layout.size, self.layout.dtype)
                buffer[self.lo:self.hi] = value
                self._allgather(buffer)
                value = self.layout.views(buffer)
            full[name] = value
        return full

    def _allgather(self, buffer: np.ndarray) -> None:
        """Fill ``buffer`` with every rank's range, in place: one Allgather of the equal
        blocks and a Bcast of the last rank's tail (fewer elements than ranks)."""
        ranks = len(self.counts)
        if self.block:
            self.comm.Allgather(_mpi().IN_PLACE, buffer[:ranks * self.block])
        if self.counts[-1] > self.block:
            self.comm.Bcast(buffer[ranks * self.block:], root=ranks - 1)


def raise_together(failure: BaseException | None, comm: Any, where: str, *,
                   interrupted: bool = False) -> bool:
    """After work that may fail on some ranks: if it failed anywhere, raise on every rank
    (the rank's own error where it failed, a :class:`DistributedError` quoting the first
    failure elsewhere), so no rank waits forever in the next collective. Returns whether
    any rank was ``interrupted`` (a Ctrl-C it noted), so all can stop at the same step.
    One small Allreduce when nothing failed."""
    comm = _peers(comm)
    if comm is None:
        if failure is not None:
            raise failure
        return interrupted
    flags = np.array([failure is not None, interrupted], np.int64)
    comm.Allreduce(_mpi().IN_PLACE, flags)
    if flags[0]:
        notes = comm.allgather(None if failure is None else f"{type(failure).__name__}: {failure}")
        if failure is not None:
            raise failure
        first = next(r for r, note in enumerate(notes) if note is not None)
        raise DistributedError(f"{where} failed on rank {first}: {notes[first]}", rank=first)
    return bool(flags[1])


# --- helpers --------------------------------------------------------------------------


def _peers(comm: Any) -> Any:
    """``comm`` if it has other ranks; None for one process (None or a comm of one rank),
    where every function here does what it does without MPI."""
    comm = require_comm(comm)
    return comm if comm is not None and comm.Get_size() > 1 else None


def _mpi():
    """The mpi4py.MPI module; only called once a communicator passed require_comm."""
    from mpi4py import MPI

    return MPI


def _weight(where: str, rows_on_rank: Any, rows_in_batch: Any) -> float:
    rows_in_batch = _count(rows_in_batch, where, "rows_in_batch", minimum=1)
    rows_on_rank = _count(rows_on_rank, where, "rows_on_rank", minimum=0)
    if rows_on_rank > rows_in_batch:
        raise ValueError(f"{where}: rows_on_rank={rows_on_rank} is more than "
                         f"rows_in_batch={rows_in_batch}")
    return rows_on_rank / rows_in_batch


def _template(d: tuple) -> Any:
    """A leaf of the shape and dtype a fingerprint describes, without its memory."""
    return {} if d[0] == "empty" else np.broadcast_to(np.zeros((), d[1]), d[2])


def _weighted_buffer(tree: Params, weight: float):
    """``(buffer, unpack)``: ``weight * tree`` as one new 1-D buffer (zeros, whatever the
    values, when ``weight`` is 0), and ``unpack(buffer) -> tree`` of the same structure."""
    layout = layout_of(tree)
    if layout is not None:
        buffer = np.multiply(layout.flat(tree), weight) if weight else np.zeros(layout.size,
                                                                                 layout.dtype)
        return buffer, layout.views
    items = _tree.flatten(tree)
    arrays = {p: np.asarray(v) for p, v in items.items() if not isinstance(v, dict)}
    for path, a in arrays.items():
        if a.dtype.kind != "f":
            raise TypeError(f"allreduce_grads: grads leaf {path!r} is {a.dtype}; "
                            "grads must be float arrays")
    if not arrays:
        return np.zeros(0), lambda buffer: _tree.unflatten(items)
    dtype = np.result_type(*arrays.values())
    if weight:
        buffer = np.concatenate([np.ravel(a).astype(dtype) for a in arrays.values()])
        buffer *= weight
    else:
        buffer = np.zeros(sum(a.size for a in arrays.values()), dtype)

    def unpack(buffer: np.ndarray) -> Params:
        out, start = dict(items), 0
        for path, a in arrays.items():
            out[path] = buffer[start:start + a.size].reshape(a.shape).astype(a.dtype)
            start += a.size
        return _tree.unflatten(out)

    return buffer, unpack


def _descriptions(tree: Any, where: str, with_values: bool) -> dict[str, tuple]:
    """``{key path: fingerprint}`` in depth-first order: arrays ``("array", dtype,
    shape, hash)``, plain values ``("value", type, repr)``, empty dicts, lists and tuples
    ``("empty", type)``; without ``with_values``, no hash and no repr."""
    out: dict[str, tuple] = {}
    stack = [("", tree)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, (dict, list, tuple)) and len(node) == 0:
            out[path] = ("empty", type(node).__name__)
        elif isinstance(node, dict):
            stack.extend((f"{path}.{k}" if path else str(k), v) for k, v in reversed(node.items()))
        elif isinstance(node, (list, tuple)):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(node))))
        elif isinstance(node, (np.ndarray, np.generic)):
            a = np.asarray(node)
            if a.dtype.hasobject:
                raise TypeError(f"{where}: leaf {path or '<root>'!r} is an object array; "
                                "pass numeric arrays")
            out[path] = ("array", a.dtype.str, a.shape)
            if with_values:
                out[path] += (hashlib.blake2b(np.ascontiguousarray(a), digest_size=16).hexdigest(),)
        elif node is None or isinstance(node, (bool, numbers.Number, str, bytes)):
            out[path] = ("value", type(node).__name__) + ((repr(node),) if with_values else ())
        else:
            raise TypeError(f"{where}: cannot compare leaf {path or '<root>'!r} of type "
                            f"{type(node).__name__} across ranks; pass arrays, numbers, "
                            "strings, None, or dicts, lists and tuples of them")
    return out


def _difference(theirs: dict, mine: dict, me: int, root: int) -> tuple[str, str] | None:
    """The first key path (in root's order) where this rank's ``mine`` differs from
    root's ``theirs``, and a sentence saying how; None if they are the same."""
    for path, t in theirs.items():
        m = mine.get(path)
        if m is None:
            return path, f"rank {me} has no {path!r}, which rank {root} has ({_show(t)})"
        if m == t:
            continue
        if m[0] == "array" and m[:3] == t[:3]:
            return path, (f"{path!r} holds other values on rank {me} than on rank {root} "
                          f"({_show(m[:3])} on both; hash {m[3][:12]} vs {t[3][:12]})")
        return path, f"{path!r} is {_show(m)} on rank {me} but {_show(t)} on rank {root}"
    for path, m in mine.items():
        if path not in theirs:
            return path, f"rank {me} has {path!r} ({_show(m)}), which rank {root} has not"
    return None


def _show(d: tuple) -> str:
    if d[0] == "array":
        shown = f"a {np.dtype(d[1])} array of shape {d[2]}"
        return shown + (f" with hash {d[3][:12]}" if len(d) > 3 else "")
    if d[0] == "empty":
        return f"an empty {d[1]}"
    return d[2] if len(d) > 2 else f"a {d[1]}"


def _agree(comm, problem: tuple[str, str] | None, head: str, hint: str) -> None:
    """Raise the same DistributedError on every rank if any rank found a ``problem``."""
    problems = comm.allgather(problem)
    bad = [r for r, p in enumerate(problems) if p is not None]
    if not bad:
        return
    path, detail = problems[bad[0]]
    others = f" (ranks that differ: {bad})" if len(bad) > 1 else ""
    raise DistributedError(f"{head}: {detail}{others}; {hint}", rank=bad[0], path=path)


def _count(value: Any, where: str, name: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be an int, got {_kind(value)}")
    if value < minimum:
        raise ValueError(f"{where}: {name} must be >= {minimum}, got {value}")
    return int(value)


def _kind(value: Any) -> str:
    """A short description of a wrong argument: its type and a bounded repr."""
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{type(value).__module__}.{type(value).__qualname__} {text}".replace("builtins.", "")


__all__ = [
    "ShardedUpdate",
    "allreduce_grads",
    "allreduce_mean",
    "allreduce_state",
    "broadcast_params",
    "check_same",
    "data_parallel",
    "is_root",
    "num_ranks",
    "on_root",
    "raise_together",
    "rank",
    "rank_key",
    "require_comm",
    "shard",
    "sharded_update",
    "shards",
    "sum_grads",
]
