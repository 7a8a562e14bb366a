"""``fit``: mini-batch training with best-k models, early stopping, progress and resume.

``fit`` is a convenience, not a framework; the loop it runs is this one, and you can
write your own when you need something else::

    step = fn.value_and_grad(model, fn.losses.mse)
    opt_state = opt.init(params)
    for epoch in range(epochs):
        order_key = fn.random.fold_in(key, epoch)
        for xb, yb in fn.data.batches(x_train, y_train, 64, key=order_key):
            loss, grads = step(params, xb, yb)
            params, opt_state = opt.update(grads, opt_state, params)
        val_loss = fn.losses.mse(model.apply(params, x_val), y_val)
        print(epoch, loss, val_loss)

On top of that loop ``fit`` keeps the best ``k`` params by validation loss (the tutorial
keeps 3; params are never mutated, so it keeps references, not copies), stops early
after ``patience`` epochs without improvement and then returns the best params, stops
with :class:`funcnn.errors.NonFiniteLossError` at the first NaN/Inf loss, returns what
it has on Ctrl-C, and, with ``checkpoint_dir``, saves everything needed to resume bit
for bit (``resume=True``).
"""

from __future__ import annotations

import itertools
import math
import numbers
import os
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any, NamedTuple, TextIO

import numpy as np

from funcnn import data, distributed, random, tree
from funcnn.checkpoint import load, save
from funcnn.errors import CheckpointError, NonFiniteLossError, StructureError
from funcnn.grad import _value_and_grad_core, loss_gradient_rule
from funcnn.callbacks import Callback, EpochRecord, ReduceLROnPlateau, append_log, rewrite_log
from funcnn.kernel import kernel_of
from funcnn.optim.ema import ema_params
from funcnn.optim.base import GradientTransform
from funcnn.progress import Progress
from funcnn.types import Layer, Params, State

LATEST = "latest.ckpt"
HISTORY_KEYS = ("train_loss", "val_loss", "lr", "time", "lr_scale")


class BestModel(NamedTuple):
    """One of the best models seen: its monitored loss, the epoch after which it was
    taken (counted from 1, as the progress lines, the examples' ``metrics.json`` and the
    messages count), its params and model state (BatchNorm statistics; ``{}`` for a
    model without state)."""

    loss: float
    epoch: int
    params: Params
    state: State | None = None

    def __repr__(self) -> str:
        return (f"BestModel(loss={self.loss:.6g}, epoch={self.epoch}, "
                f"params={_describe_tree(self.params)}, state={_describe_tree(self.state)})")


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
        params: the final params (the best ones after early stopping).
        opt_state: the optimizer state after the last update.
        state: the model state that goes with ``params`` (BatchNorm's running
            statistics; ``{}`` for a model without state).
        history: ``{"train_loss", "val_loss", "lr", "time", "lr_scale"}``, one float64
            entry per finished epoch (``val_loss`` is NaN without validation data; ``lr``
            is the learning rate the epoch's updates used, ``lr_scale`` the factor
            ``lr_on_plateau`` put on it; ``time`` in seconds).
        best: the best models, best first (by validation loss, else training loss).
        stop_reason: ``None`` (all epochs ran), ``"early_stopping"``, ``"callback"`` (a
            callback returned ``"stop"``) or ``"interrupted"``.
    """

    params: Params
    opt_state: Params
    history: dict[str, np.ndarray]
    best: tuple[BestModel, ...]
    stop_reason: str | None
    state: State = {}  # noqa: RUF012 -- never mutated; fit always passes its own

    @property
    def best_params(self) -> Params:
        """The params with the lowest monitored loss (the final ones if none recorded)."""
        return self.best[0].params if self.best else self.params

    @property
    def best_state(self) -> State:
        """The model state that goes with :attr:`best_params`."""
        return self.best[0].state if self.best else self.state

    def __repr__(self) -> str:
        epochs = len(self.history.get("train_loss", ()))
        losses = ", ".join(f"{name} {values[-1]:.6g}" for name, values in self.history.items()
                           if name.endswith("loss") and len(values))
        best = ", ".join(f"(loss={m.loss:.6g}, epoch={m.epoch})" for m in self.best)
        return (f"FitResult(params={_describe_tree(self.params)}, "
                f"opt_state={_describe_tree(self.opt_state)}, state={_describe_tree(self.state)}, "
                f"history=<{epochs} epochs{': last ' + losses if losses else ''}>, best=[{best}], "
                f"stop_reason={self.stop_reason!r})")


def _describe_tree(tree_) -> str:
    """``<3 arrays, 1,057 values>``: a tree's size, not its values."""
    if not isinstance(tree_, dict):
        return repr(tree_)
    leaves = [leaf for leaf in tree.leaves(tree_) if not isinstance(leaf, dict)]
    return f"<{len(leaves)} arrays, {sum(int(np.size(leaf)) for leaf in leaves):,} values>"


class _Run(NamedTuple):
    """Everything that changes during training, replaced as one object (one assignment)
    after every batch and every epoch. Ctrl-C can land between any two statements, so it
    must never see params from one step and optimizer state from another, nor an epoch
    recorded in the history whose position says it still has to run."""

    params: Params
    opt_state: Params
    state: State  # the model's (BatchNorm statistics), {} for none
    epoch: int  # epochs finished (recorded in history and best)
    batch: int  # batches done in the current epoch
    loss_sum: float  # sum of batch_loss * batch_size over those batches
    count: int  # samples in those batches
    since_best: int  # finished epochs since the last improvement
    plateau: dict  # lr_on_plateau's state ({} without it)
    elapsed: float  # seconds spent on the current epoch by earlier processes (resume)
    history: dict[str, tuple[float, ...]]
    best: tuple[BestModel, ...]
    epoch_lr: float | None = None  # the lr (times lr_scale) when the current epoch began


def fit(
    model: Layer,
    loss,
    optimizer,
    params: Params,
    train: tuple[np.ndarray, np.ndarray],
    *misplaced,
    epochs: int,
    batch_size: int,
    key,
    val: tuple[np.ndarray, np.ndarray] | None = None,
    opt_state: Params | None = None,
    keep_best: int = 3,
    patience: int | None = None,
    min_delta: float = 0.0,
    shuffle: bool = True,
    drop_last: bool = False,
    progress: str = "auto",
    stream: TextIO | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    state: State | None = None,
    eval_params: str = "params",
    lr_on_plateau: ReduceLROnPlateau | None = None,
    callbacks: Sequence[Callback] = (),
    comm=None,
) -> FitResult:
    """Train ``model`` on ``train = (x, y)`` with mini-batches; see the module docstring.

    Args:
        model, loss, optimizer: a Layer, a funcnn loss, an ``Optimizer(init, update)``.
        params: the initial params (e.g. ``model.init(key)``).
        train: ``(x, y)`` training arrays; ``val``: optional ``(x_val, y_val)``.
        epochs, batch_size: positive ints. ``key``: a key or int seed; epoch ``e``
            shuffles with ``fn.random.fold_in(key, e)``; random layers (Dropout) get a
            new key per batch from it (see :func:`batch_key`), so a run is reproducible.
        opt_state: continue from this optimizer state instead of ``optimizer.init``.
        keep_best: how many best models to keep (by validation loss if ``val`` is
            given, else by the epoch's training loss).
        patience: stop after this many epochs without an improvement of at least
            ``min_delta``, and return the best params. ``None``: never stop early.
        progress: ``"auto"``, ``"bar"``, ``"lines"`` or ``"silent"`` (see
            :mod:`funcnn.progress`), written to ``stream`` (stdout by default).
        checkpoint_dir: if given, after every epoch and on Ctrl-C write
            ``latest.ckpt`` (params, optimizer state, key, position in the epoch,
            history, best-k) and ``best-<i>.ckpt`` (the i-th best params), atomically.
        resume: continue from ``checkpoint_dir/latest.ckpt`` if it exists; the result
            is bitwise the same as a run that was never interrupted.
        state: the model state to start from (default ``model.init_state()``). Training
            steps run in training mode (batch statistics, dropout) and carry the state
            from batch to batch; validation runs with ``train=False``. The state is in
            the result, in every best-k entry and in the checkpoints
            (``best-<i>.state.ckpt`` beside ``best-<i>.ckpt`` for a model with state).
        eval_params: ``"params"`` (default) validates and keeps best-k with the trained
            params; ``"ema"`` with their average, ``fn.optim.ema_params(opt_state)``
            (the optimizer must be an ``fn.optim.ema(...)``); best-k then holds averages.
        lr_on_plateau: a :class:`funcnn.callbacks.ReduceLROnPlateau` that scales every
            update down when the monitored loss stalls; its state is checkpointed.
        callbacks: functions called after every epoch with a
            :class:`funcnn.callbacks.EpochRecord`; one returning ``"stop"`` ends
            training (``stop_reason="callback"``). With ``checkpoint_dir`` the records
            are also written to ``metrics.jsonl`` there, one JSON line per epoch.
        comm: an mpi4py communicator (``MPI.COMM_WORLD``) for data-parallel training
            under ``mpiexec -n N``: every rank runs the same script with the same data,
            key and arguments (checked once); each global batch is cut into contiguous
            per-rank rows, each rank's loss gradient is weighted by its share of the rows
            and the grads are summed over the ranks, so every rank holds the same params
            after every step and the run equals a one-process run up to rounding. The
            element-wise optimizers (``sgd``, ``rmsprop``, ``adam``, ``adamw``, with any
            weight decay, mask or schedule) are sharded, ZeRO stage 1 style: a
            Reduce_scatter gives each rank the summed grads of its 1/N of the flat
            params, it updates that range with its range of the optimizer state, and an
            Allgather shares the new params; the full state is gathered only for
            checkpoints and the result. Every other optimizer (``chain``, e.g. with
            ``clip_grad_norm``'s global norm, ``accumulate``, ``ema``, ``masked``, your
            own) gets the grads summed in one Allreduce and runs whole on every rank
            (see ``fn.distributed.sharded_update``). Validation is
            split across ranks too; only rank 0 prints and writes checkpoints; a
            checkpoint resumes on any number of ranks. BatchNorm statistics are
            per-rank (their running values then combined across ranks, weighted by
            rows, see ``fn.distributed.allreduce_state``) unless the layer was built
            with ``sync=comm``; Dropout draws its masks from ``fold_in(batch key,
            rank)``. See :mod:`funcnn.distributed`.

    Returns:
        a :class:`FitResult`.

    Raises:
        NonFiniteDataError: ``train`` or ``val`` holds NaN or Inf (checked before training;
            names the array and its first bad rows).
        NonFiniteLossError: a training or validation loss was NaN or Inf; names the
            epoch and batch; ``error.result`` holds the last finite state and best-k.
    """
    if misplaced:  # fit(model, loss, opt, params, x, y): a Python error would not say the fix
        raise TypeError(f"fit: got {len(misplaced)} positional argument(s) after train; pass the "
                        "data as one pair, fit(model, loss, optimizer, params, (x, y), epochs=..., "
                        "batch_size=..., key=...), and everything after it by keyword")
    loss_gradient_rule(loss)  # rejects a loss without a gradient rule before any work
    _check_fit_args(model, optimizer, epochs, batch_size, keep_best, patience, min_delta)
    comm = distributed.require_comm(comm)
    parallel = distributed.num_ranks(comm) > 1
    root = distributed.is_root(comm)
    plateau_rule = _check_plateau(lr_on_plateau)
    callbacks = _check_callbacks(callbacks)
    if eval_params not in ("params", "ema"):
        raise ValueError(f"fit: eval_params must be 'params' or 'ema', got {eval_params!r}")
    x, y = _pair(train, "train")
    rule = kernel_of(model)
    if state is None:
        state = model.init_state()
    with_state = bool(state) or rule.stateful

    def evaluate(params, model_state, xs):
        if not with_state:
            return model.apply(params, xs)
        return model.apply(params, xs, state=model_state, train=False)[0]

    if val is not None:
        x_val, y_val = _pair(val, "val")
        loss(evaluate(params, state, x_val[:1]), y_val[:1])  # a bad val shape fails now, not after an epoch
    total = data.num_batches(len(x), batch_size, drop_last)
    if total == 0:
        raise ValueError(f"fit: drop_last=True with {len(x)} samples and batch_size={batch_size} "
                         "leaves no batch; use a smaller batch_size or drop_last=False")
    key = random.as_key(key)
    if parallel:  # every rank must run the same training: a difference fails here, on all ranks
        distributed.check_same(params, comm, "params")
        distributed.check_same({"train": (x, y), "val": val}, comm, "data")
        distributed.check_same({"epochs": epochs, "batch_size": batch_size, "key": key,
                                "shuffle": shuffle, "drop_last": drop_last, "keep_best": keep_best,
                                "patience": patience, "min_delta": float(min_delta),
                                "eval_params": eval_params, "resume": resume}, comm, "arguments")
    report = Progress(progress if root else "silent", stream, epochs)
    folder = _checkpoint_folder(checkpoint_dir, resume)

    if opt_state is None:
        opt_state = optimizer.init(params)
    if eval_params == "ema":
        ema_params(opt_state)  # no average in this state: the StructureError says so now

    def evaluated(run_):  # the params validation and best-k use
        return ema_params(run_.opt_state) if eval_params == "ema" else run_.params

    plateau = plateau_rule.init() if plateau_rule is not None else {}
    run = _Run(params, opt_state, state, epoch=0, batch=0, loss_sum=0.0, count=0, since_best=0,
               plateau=plateau, elapsed=0.0, history={k: () for k in HISTORY_KEYS}, best=())
    if resume and os.path.exists(os.path.join(folder, LATEST)):
        run = _load_latest(folder, params, opt_state, state, plateau, key, batch_size, len(x))
        if root:
            rewrite_log(folder, _records(run.history, val is not None, min_delta))
        where = os.path.join(folder, LATEST)
        if run.epoch >= epochs:
            report.message(f"{where}: already complete ({run.epoch} of {epochs} epochs); nothing "
                           "to train (pass a larger epochs= to train on)")
        else:
            report.message(f"resuming from {where} in epoch {run.epoch + 1} after {run.batch} of "
                           f"{total} batches")
    elif resume:
        report.message(f"no checkpoint in {folder}; starting from scratch")

    # data-parallel with an element-wise optimizer: each rank updates its range of the
    # flat buffers and run.opt_state is its range state (see fn.distributed.ShardedUpdate)
    sharded = distributed.sharded_update(optimizer, run.params, comm)
    if sharded is not None:
        run = run._replace(opt_state=sharded.scatter(run.opt_state, run.params))

    def full_opt_state():  # a collective when sharded: every rank calls it at the same point
        return run.opt_state if sharded is None else sharded.gather_state(run.opt_state)

    def snapshot(stop_reason):
        final = run.best[0] if stop_reason == "early_stopping" else run
        return FitResult(final.params, full_opt_state(), _as_arrays(run.history), run.best,
                         stop_reason, final.state)

    def checkpoint():
        if folder is None:
            return
        saved = run if sharded is None else run._replace(opt_state=full_opt_state())
        if root:
            _save_run(folder, saved, key, batch_size, len(x))

    def validation_loss(params_, model_state):  # split across ranks, then reduced
        mine = distributed.shard(len(x_val), comm)
        rows = mine.stop - mine.start
        local = loss(evaluate(params_, model_state, x_val[mine]), y_val[mine]) if rows else None
        return distributed.allreduce_mean(local, rows, len(x_val), comm)

    step = _value_and_grad_core(model, loss_gradient_rule(loss))  # a program of the kernels
    noise_key = random.split(key, 2)[1] if rule.random else None
    epoch, started = run.epoch, time.perf_counter()
    ctrl_c = [False]  # data-parallel: a Ctrl-C is noted here and acted on by all ranks at once
    restore_sigint = _ctrl_c_noted(ctrl_c) if parallel else None
    try:
        for epoch in range(run.epoch, epochs):
            started = time.perf_counter()
            scale = float(run.plateau["scale"]) if run.plateau else 1.0
            if run.batch == 0 or run.epoch_lr is None:  # else resumed mid-epoch: its lr is saved
                lr = float(run.opt_state["lr"]) * scale if "lr" in run.opt_state else math.nan
                run = run._replace(epoch_lr=lr)
            lr = run.epoch_lr
            order = data.batches(x, y, batch_size, key=random.fold_in(key, epoch),
                                 shuffle=shuffle, drop_last=drop_last)
            for xb, yb in itertools.islice(order, run.batch, None):
                key_b = None if noise_key is None else batch_key(noise_key, epoch, run.batch)
                if parallel:
                    value, grads, new_model_state = _parallel_step(
                        step, comm, run, xb, yb, key_b, with_state, ctrl_c, sum_grads=sharded is None)
                else:
                    value, grads, *new_model_state = step(
                        run.params, xb, yb, key_b, run.state if with_state else None, 1.0)
                    new_model_state = new_model_state[0] if with_state else run.state
                if not math.isfinite(value):
                    raise NonFiniteLossError(
                        f"training loss is {value} at epoch {epoch + 1}, batch "
                        f"{run.batch + 1} of {total}; the params before this batch are "
                        "in error.result (try a smaller learning rate or check the data)"
                    )
                if sharded is not None:  # sums its range of the grads, updates it, gathers params
                    new_params, new_state = sharded.update(grads, run.opt_state, run.params)
                else:
                    new_params, new_state = optimizer.update(grads, run.opt_state, run.params)
                if scale != 1.0:  # lr_on_plateau: a smaller step, as a smaller lr would make
                    new_params = tree.map(lambda old, new: old + scale * (new - old), run.params,
                                          new_params)
                run = run._replace(params=new_params, opt_state=new_state, state=new_model_state,
                                   batch=run.batch + 1,
                                   loss_sum=run.loss_sum + value * len(xb),
                                   count=run.count + len(xb))
                report.batch(epoch, run.batch, total, value)

            train_loss = run.loss_sum / run.count
            val_loss = math.nan
            if val is not None:
                val_loss = validation_loss(evaluated(run), run.state)
                if not math.isfinite(val_loss):
                    raise NonFiniteLossError(f"validation loss is {val_loss} after epoch {epoch + 1}")
            monitored = val_loss if val is not None else train_loss
            improved = not run.best or monitored < run.best[0].loss - min_delta
            seconds = run.elapsed + time.perf_counter() - started
            row = (train_loss, val_loss, lr, seconds, scale)
            run = run._replace(  # one assignment records the finished epoch
                epoch=epoch + 1, batch=0, loss_sum=0.0, count=0, elapsed=0.0,
                since_best=0 if improved else run.since_best + 1,
                plateau=plateau_rule.update(run.plateau, monitored) if plateau_rule else run.plateau,
                history={k: (*run.history[k], v) for k, v in zip(HISTORY_KEYS, row)},
                best=_keep_best(run.best, BestModel(monitored, epoch + 1, evaluated(run), run.state),
                                keep_best),
            )
            report.epoch(epoch, train_loss, val_loss if val is not None else None, seconds,
                         "  *" if improved else "")
            checkpoint()
            if parallel and folder is not None:
                comm.Barrier()  # rank 0's checkpoint is on disk before any rank goes on
            record = EpochRecord(epoch + 1, train_loss, val_loss, lr, scale, seconds, improved,
                                 run.best[0].loss, run.best[0].epoch)
            if folder is not None and root:
                append_log(folder, record)
            if any([callback(record) == "stop" for callback in callbacks]):  # every one sees it
                report.message(f"stopped by a callback after epoch {epoch + 1}")
                return snapshot("callback")
            if patience is not None and run.since_best >= patience:
                report.message(f"early stopping: no improvement for {patience} epochs; "
                               f"restoring the best params (epoch {run.best[0].epoch})")
                return snapshot("early_stopping")
    except KeyboardInterrupt:
        if run.epoch == epoch:  # inside an epoch: keep the time it has taken so far
            run = run._replace(elapsed=run.elapsed + time.perf_counter() - started)
        checkpoint()
        where = f" (saved to {folder})" if folder is not None else ""
        report.message(f"interrupted in epoch {run.epoch + 1} after {run.batch} of {total} batches; "
                       f"returning what was trained so far{where}")
        return snapshot("interrupted")
    except NonFiniteLossError as error:
        error.result = snapshot("non_finite_loss")
        raise
    finally:
        if restore_sigint is not None:
            restore_sigint()
    return snapshot(None)


def _parallel_step(step, comm, run, xb, yb, key, with_state: bool, ctrl_c: list, *,
                   sum_grads: bool):
    """One data-parallel step: this rank's rows of the global batch, its loss gradient
    weighted by their share, the grads summed over the ranks (one Allreduce; with
    ``sum_grads=False`` this rank's weighted grads, None without rows, for a sharded
    update to reduce), the loss and the model state made the same on every rank. An
    error on one rank is raised on every rank, so none is left waiting in the next
    collective; so is a Ctrl-C noted in ``ctrl_c[0]`` (see :func:`_ctrl_c_noted`): all
    ranks stop before the same step."""
    mine = distributed.shard(len(xb), comm)
    rows = mine.stop - mine.start
    value, grads, new_state, failure = None, None, run.state, None
    if rows:
        if key is not None:
            key = random.fold_in(key, distributed.rank(comm))  # each rank its own masks
        try:
            value, grads, *out = step(run.params, xb[mine], yb[mine], key,
                                      run.state if with_state else None, rows / len(xb))
        except Exception as error:  # noqa: BLE001 -- re-raised below, on this rank and all others
            failure = error
        else:
            new_state = out[0] if with_state else run.state
    if distributed.raise_together(failure, comm, "a training step", interrupted=ctrl_c[0]):
        raise KeyboardInterrupt  # a Ctrl-C on any rank: every rank stops before this step
    if sum_grads:
        grads = distributed.sum_grads(grads, comm, like=run.params)
    value = distributed.allreduce_mean(value, rows, len(xb), comm)
    if with_state:
        new_state = distributed.allreduce_state(new_state, rows, len(xb), comm)
    return value, grads, new_state


def _ctrl_c_noted(flag: list):
    """While a data-parallel fit runs, SIGINT sets ``flag[0]`` instead of raising: a rank
    interrupted inside an Allreduce would leave the others waiting in it forever, so the
    ranks agree at the next step and stop together. Returns the function that restores
    the previous handler (None when this is not the main thread: signals stay as they are)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGINT)

    def note(signum, frame):
        flag[0] = True

    signal.signal(signal.SIGINT, note)
    return lambda: signal.signal(signal.SIGINT, previous)


def batch_key(noise_key, epoch: int, batch: int):
    """The key of batch ``batch`` (0-based) of epoch ``epoch`` for the random layers:
    ``fold_in(fold_in(noise_key, epoch), batch)`` with ``noise_key = split(key)[1]`` of
    fit's ``key``; a resumed run draws the same masks."""
    return random.fold_in(random.fold_in(noise_key, epoch), batch)


def _records(history: dict, with_val: bool, min_delta: float) -> list[EpochRecord]:
    """The epoch records of a history (as fit made them, epoch by epoch)."""
    records, best_loss, best_epoch = [], math.inf, 0
    columns = [history[k] for k in HISTORY_KEYS]
    for epoch, (train_loss, val_loss, lr, seconds, scale) in enumerate(zip(*columns), start=1):
        monitored = val_loss if with_val else train_loss
        improved = epoch == 1 or monitored < best_loss - min_delta
        if monitored < best_loss:
            best_loss, best_epoch = monitored, epoch
        records.append(EpochRecord(epoch, train_loss, val_loss, lr, scale, seconds, improved,
                                   best_loss, best_epoch))
    return records


def _keep_best(best: tuple[BestModel, ...], candidate: BestModel, k: int) -> tuple[BestModel, ...]:
    """The ``k`` lowest losses, best first; ties keep the earlier epoch."""
    if math.isnan(candidate.loss):
        return best
    merged = sorted([*best, candidate], key=lambda m: (m.loss, m.epoch))
    return tuple(merged[:k])


def _as_arrays(history: dict[str, tuple[float, ...]]) -> dict[str, np.ndarray]:
    return {name: np.array(values, dtype=np.float64) for name, values in history.items()}


# --- checkpoints ---------------------------------------------------------------------


def _save_run(folder, run: _Run, key, batch_size, n):
    os.makedirs(folder, exist_ok=True)
    best = run.best
    record = {
        "params": run.params,
        "opt_state": run.opt_state,
        "state": run.state,
        "plateau": run.plateau,
        "key": key,
        "progress": {
            "epoch": np.array(run.epoch, np.int64),
            "batch": np.array(run.batch, np.int64),
            "loss_sum": np.array(run.loss_sum, np.float64),
            "count": np.array(run.count, np.int64),
            "since_best": np.array(run.since_best, np.int64),
            "elapsed": np.array(run.elapsed, np.float64),
            "epoch_lr": np.array(math.nan if run.epoch_lr is None else run.epoch_lr, np.float64),
            "batch_size": np.array(batch_size, np.int64),
            "samples": np.array(n, np.int64),
        },
        "history": _as_arrays(run.history),
        "best": {
            "loss": np.array([m.loss for m in best], np.float64),
            "epoch": np.array([m.epoch for m in best], np.int64),
            "params": {str(i): m.params for i, m in enumerate(best)},
            "state": {str(i): m.state for i, m in enumerate(best)},
        },
    }
    for i, model in enumerate(best, start=1):
        save(os.path.join(folder, f"best-{i}.ckpt"), model.params)
        if model.state:
            save(os.path.join(folder, f"best-{i}.state.ckpt"), model.state)
    save(os.path.join(folder, LATEST), record)


def _load_latest(folder, params, opt_state, model_state, plateau, key, batch_size, n):
    path = os.path.join(folder, LATEST)
    record = load(path)
    try:
        saved_model_state = record.get("state", {})  # checkpoints of models without state may lack it
        for name, like, got in (("params", params, record["params"]),
                                ("opt_state", opt_state, record["opt_state"]),
                                ("state", model_state, saved_model_state)):
            tree.assert_same_structure(like, got, names=(f"the model's {name}", path))
        progress = record["progress"]
        if not np.array_equal(record["key"], key):
            raise StructureError(f"{path} was trained with key {record['key'].tolist()}, "
                                 f"but fit got key {key.tolist()}; pass the same key to resume")
        if int(progress["batch"]) and (int(progress["batch_size"]), int(progress["samples"])) != (batch_size, n):
            raise StructureError(
                f"{path} stopped mid-epoch with batch_size {int(progress['batch_size'])} on "
                f"{int(progress['samples'])} samples; resume needs the same, got {batch_size} on {n}"
            )
        history = {name: tuple(record["history"][name].tolist()) for name in HISTORY_KEYS[:4]}
        epochs_done = len(history["train_loss"])  # lr_scale: 1 in checkpoints written without it
        history["lr_scale"] = tuple(record["history"].get("lr_scale", np.ones(epochs_done)).tolist())
        saved_plateau = record.get("plateau", {})
        tree.assert_same_structure(plateau, saved_plateau, names=("fit's lr_on_plateau state", path))
        best_params, best_states = record["best"]["params"], record["best"].get("state", {})
        shift = 0 if "state" in record["best"] else 1  # checkpoints before 0.2 counted from 0
        best = tuple(BestModel(float(loss), int(epoch) + shift, best_params[str(i)],
                               best_states.get(str(i), {}))
                     for i, (loss, epoch) in enumerate(zip(record["best"]["loss"], record["best"]["epoch"])))
        return _Run(record["params"], record["opt_state"], saved_model_state, plateau=saved_plateau,
                    epoch=int(progress["epoch"]),
                    batch=int(progress["batch"]), loss_sum=float(progress["loss_sum"]),
                    count=int(progress["count"]), since_best=int(progress["since_best"]),
                    elapsed=float(progress["elapsed"]), history=history, best=best,
                    epoch_lr=_saved_epoch_lr(progress))
    except KeyError as missing:
        raise CheckpointError(f"{path} is not a fit() checkpoint: {missing} is missing") from None


def _saved_epoch_lr(progress: dict) -> float | None:
    """The lr recorded for the epoch a checkpoint stopped in (None in checkpoints written
    before it was saved: the lr where the run resumes is recorded then)."""
    if "epoch_lr" not in progress:
        return None
    return float(progress["epoch_lr"])


# --- argument checks -----------------------------------------------------------------


def _check_fit_args(model, optimizer, epochs, batch_size, keep_best, patience, min_delta) -> None:
    if not isinstance(model, Layer):
        raise TypeError(f"fit: model must be a funcnn Layer (e.g. fn.serial(fn.layers.Linear(2, 8), "
                        f"fn.layers.ReLU(), fn.layers.Linear(8, 1))), got {type(model).__name__}")
    if isinstance(optimizer, GradientTransform):
        raise TypeError("fit: optimizer is a gradient transform (it returns grads, not params); end "
                        "it with a rule: fn.optim.chain(transform, fn.optim.adam(1e-3))")
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise TypeError(f"fit: optimizer must be an Optimizer(init, update) such as "
                        f"fn.optim.adam(1e-3), got {type(optimizer).__name__}")
    _positive_int(epochs, "epochs")
    _positive_int(batch_size, "batch_size")
    _positive_int(keep_best, "keep_best")
    if patience is not None:
        _positive_int(patience, "patience")
    if not (isinstance(min_delta, numbers.Real) and min_delta >= 0):
        raise ValueError(f"fit: min_delta must be a number >= 0, got {min_delta!r}")


def _check_plateau(rule) -> ReduceLROnPlateau | None:
    if rule is not None and not isinstance(rule, ReduceLROnPlateau):
        raise TypeError(f"fit: lr_on_plateau must be an fn.callbacks.ReduceLROnPlateau(...) or None, "
                        f"got {type(rule).__name__}")
    return None if rule is None else rule.check()


def _check_callbacks(callbacks) -> tuple:
    if callable(callbacks):
        callbacks = (callbacks,)
    callbacks = tuple(callbacks)
    for i, callback in enumerate(callbacks):
        if not callable(callback):
            raise TypeError(f"fit: callbacks[{i}] must be a function of an EpochRecord, got "
                            f"{type(callback).__name__}")
    return callbacks


def _positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"fit: {name} must be a positive int, got {value!r}")


def _pair(arrays, name: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(arrays, (tuple, list)) or len(arrays) != 2:
        raise TypeError(f"fit: {name} must be a pair (x, y) of arrays, got {type(arrays).__name__}")
    x, y = arrays
    for label, a in (("x", x), ("y", y)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"fit: {name} {label} must be a numpy array, got {type(a).__name__}; "
                            f"convert it with np.asarray({label})")
        if a.ndim == 0:
            raise ValueError(f"fit: {name} {label} must have a sample axis (first dimension), "
                             "got a 0-d array")
    if len(x) != len(y):
        raise ValueError(f"fit: {name} x and y have different lengths: {len(x)} vs {len(y)}")
    if len(x) == 0:
        raise ValueError(f"fit: {name} data is empty")
    data.require_finite(x, f"{name} x")
    data.require_finite(y, f"{name} y")
    return x, y


def _checkpoint_folder(checkpoint_dir, resume: bool) -> str | None:
    """The checkpoint folder as a str, created now so a bad path fails before training."""
    if checkpoint_dir is None:
        if resume:
            raise ValueError("fit: resume=True needs checkpoint_dir")
        return None
    if not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(f"fit: checkpoint_dir must be a path (str or os.PathLike), "
                        f"got {type(checkpoint_dir).__name__}")
    folder = os.fspath(checkpoint_dir)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise CheckpointError(f"fit: checkpoint_dir {folder!r} exists and is not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"fit: cannot use checkpoint_dir {folder!r}: {e.strerror or e}") from e
    return folder
