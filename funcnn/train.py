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

On top of that loop ``fit`` keeps the best ``k`` params by validation loss (the seed
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
import time
from typing import Any, NamedTuple, TextIO

import numpy as np

from funcnn import data, random, tree
from funcnn.checkpoint import load, save
from funcnn.errors import CheckpointError, NonFiniteLossError, StructureError
from funcnn.grad import loss_gradient_rule
from funcnn.progress import Progress
from funcnn.types import Layer, Params

LATEST = "latest.ckpt"
HISTORY_KEYS = ("train_loss", "val_loss", "lr", "time")


class BestModel(NamedTuple):
    """One of the best models seen: its monitored loss, epoch (0-based) and params."""

    loss: float
    epoch: int
    params: Params


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
        params: the final params (the best ones after early stopping).
        opt_state: the optimizer state after the last update.
        history: ``{"train_loss", "val_loss", "lr", "time"}``, one float64 entry per
            finished epoch (``val_loss`` is NaN without validation data; ``lr`` is the
            learning rate at the start of the epoch; ``time`` in seconds).
        best: the best models, best first (by validation loss, else training loss).
        stop_reason: ``None`` (all epochs ran), ``"early_stopping"`` or ``"interrupted"``.
    """

    params: Params
    opt_state: Params
    history: dict[str, np.ndarray]
    best: tuple[BestModel, ...]
    stop_reason: str | None

    @property
    def best_params(self) -> Params:
        """The params with the lowest monitored loss (the final ones if none recorded)."""
        return self.best[0].params if self.best else self.params


class _Position(NamedTuple):
    """Everything that changes every batch, replaced as one object so that Ctrl-C
    can never observe params from one step and optimizer state from another."""

    params: Params
    opt_state: Params
    batch: int  # batches done in the current epoch
    loss_sum: float  # sum of batch_loss * batch_size over those batches
    count: int  # samples in those batches


def fit(
    model: Layer,
    loss,
    optimizer,
    params: Params,
    train: tuple[np.ndarray, np.ndarray],
    *,
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
) -> FitResult:
    """Train ``model`` on ``train = (x, y)`` with mini-batches; see the module docstring.

    Args:
        model, loss, optimizer: a Layer, a funcnn loss, an ``Optimizer(init, update)``.
        params: the initial params (e.g. ``model.init(key)``).
        train: ``(x, y)`` training arrays; ``val``: optional ``(x_val, y_val)``.
        epochs, batch_size: positive ints. ``key``: a key or int seed; epoch ``e``
            shuffles with ``fn.random.fold_in(key, e)``.
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

    Returns:
        a :class:`FitResult`.

    Raises:
        NonFiniteLossError: a training or validation loss was NaN or Inf; names the
            epoch and batch; ``error.result`` holds the last finite state and best-k.
    """
    loss_and_grad = loss_gradient_rule(loss)
    _check_fit_args(model, optimizer, epochs, keep_best, patience, min_delta)
    x, y = _pair(train, "train")
    if val is not None:
        x_val, y_val = _pair(val, "val")
    data.num_batches(len(x), batch_size, drop_last)  # validates batch_size early
    key = random.as_key(key)
    report = Progress(progress, stream, epochs)
    folder = os.fspath(checkpoint_dir) if checkpoint_dir is not None else None
    if resume and folder is None:
        raise ValueError("fit: resume=True needs checkpoint_dir")

    if opt_state is None:
        opt_state = optimizer.init(params)
    history: dict[str, list[float]] = {k: [] for k in HISTORY_KEYS}
    best: list[BestModel] = []
    start_epoch, since_best, elapsed = 0, 0, 0.0
    position = _Position(params, opt_state, 0, 0.0, 0)
    if resume and os.path.exists(os.path.join(folder, LATEST)):
        saved = _load_latest(folder, params, opt_state, key, batch_size, len(x))
        position, start_epoch, since_best, elapsed, history, best = saved
        report.message(f"resuming from {os.path.join(folder, LATEST)} at epoch {start_epoch + 1}, "
                       f"batch {position.batch + 1}")
    elif resume:
        report.message(f"no checkpoint in {folder}; starting from scratch")

    def snapshot(stop_reason):
        final = position.params
        if stop_reason == "early_stopping":
            final = best[0].params
        return FitResult(final, position.opt_state, _as_arrays(history), tuple(best), stop_reason)

    def checkpoint(epoch):
        if folder is not None:
            _save_run(folder, position, key, epoch, since_best, elapsed, history, best,
                      batch_size, len(x))

    step = _make_step(model, loss_and_grad)
    total = data.num_batches(len(x), batch_size, drop_last)
    epoch, started = start_epoch, time.perf_counter()
    try:
        for epoch in range(start_epoch, epochs):
            started = time.perf_counter()
            lr = float(position.opt_state["lr"]) if "lr" in position.opt_state else math.nan
            order = data.batches(x, y, batch_size, key=random.fold_in(key, epoch),
                                 shuffle=shuffle, drop_last=drop_last)
            for xb, yb in itertools.islice(order, position.batch, None):
                value, grads = step(position.params, xb, yb)
                if not math.isfinite(value):
                    raise NonFiniteLossError(
                        f"training loss is {value} at epoch {epoch + 1}, batch "
                        f"{position.batch + 1} of {total}; the params before this batch are "
                        "in error.result (try a smaller learning rate or check the data)"
                    )
                new_params, new_state = optimizer.update(grads, position.opt_state, position.params)
                position = _Position(new_params, new_state, position.batch + 1,
                                     position.loss_sum + value * len(xb), position.count + len(xb))
                report.batch(epoch, position.batch, total, value)

            train_loss = position.loss_sum / position.count
            val_loss = math.nan
            if val is not None:
                val_loss = loss(model.apply(position.params, x_val), y_val)
                if not math.isfinite(val_loss):
                    raise NonFiniteLossError(f"validation loss is {val_loss} after epoch {epoch + 1}")
            monitored = val_loss if val is not None else train_loss
            improved = not best or monitored < best[0].loss - min_delta
            since_best = 0 if improved else since_best + 1
            best = _keep_best(best, BestModel(monitored, epoch, position.params), keep_best)
            elapsed += time.perf_counter() - started
            for name, value in zip(HISTORY_KEYS, (train_loss, val_loss, lr, elapsed)):
                history[name].append(value)
            elapsed = 0.0
            position = position._replace(batch=0, loss_sum=0.0, count=0)
            report.epoch(epoch, train_loss, val_loss if val is not None else None,
                         history["time"][-1], "  *" if improved else "")
            checkpoint(epoch + 1)
            if patience is not None and since_best >= patience:
                report.message(f"early stopping: no improvement for {patience} epochs; "
                               f"restoring the best params (epoch {best[0].epoch + 1})")
                return snapshot("early_stopping")
    except KeyboardInterrupt:
        if position.batch:
            elapsed += time.perf_counter() - started
        checkpoint(epoch)
        where = f" (saved to {folder})" if folder is not None else ""
        report.message(f"interrupted at epoch {epoch + 1}, batch {position.batch}; "
                       f"returning what was trained so far{where}")
        return snapshot("interrupted")
    except NonFiniteLossError as error:
        error.result = snapshot("non_finite_loss")
        raise
    return snapshot(None)


def _make_step(model: Layer, loss_and_grad):
    def step(params, xb, yb):
        pred, pullback = model.vjp(params, xb)
        value, dpred = loss_and_grad(pred, yb)
        return value, pullback(dpred)[0]

    return step


def _keep_best(best: list[BestModel], candidate: BestModel, k: int) -> list[BestModel]:
    """The ``k`` lowest losses, best first; ties keep the earlier epoch."""
    if math.isnan(candidate.loss):
        return best
    merged = sorted([*best, candidate], key=lambda m: (m.loss, m.epoch))
    return merged[:k]


def _as_arrays(history: dict[str, list[float]]) -> dict[str, np.ndarray]:
    return {name: np.array(values, dtype=np.float64) for name, values in history.items()}


# --- checkpoints ---------------------------------------------------------------------


def _save_run(folder, position, key, epoch, since_best, elapsed, history, best, batch_size, n):
    os.makedirs(folder, exist_ok=True)
    state = {
        "params": position.params,
        "opt_state": position.opt_state,
        "key": key,
        "progress": {
            "epoch": np.array(epoch, np.int64),
            "batch": np.array(position.batch, np.int64),
            "loss_sum": np.array(position.loss_sum, np.float64),
            "count": np.array(position.count, np.int64),
            "since_best": np.array(since_best, np.int64),
            "elapsed": np.array(elapsed, np.float64),
            "batch_size": np.array(batch_size, np.int64),
            "samples": np.array(n, np.int64),
        },
        "history": _as_arrays(history),
        "best": {
            "loss": np.array([m.loss for m in best], np.float64),
            "epoch": np.array([m.epoch for m in best], np.int64),
            "params": {str(i): m.params for i, m in enumerate(best)},
        },
    }
    for i, model in enumerate(best, start=1):
        save(os.path.join(folder, f"best-{i}.ckpt"), model.params)
    save(os.path.join(folder, LATEST), state)


def _load_latest(folder, params, opt_state, key, batch_size, n):
    path = os.path.join(folder, LATEST)
    state = load(path)
    try:
        for name, like in (("params", params), ("opt_state", opt_state)):
            tree.assert_same_structure(like, state[name], names=(f"the model's {name}", path))
        progress = state["progress"]
        if not np.array_equal(state["key"], key):
            raise StructureError(f"{path} was trained with key {state['key'].tolist()}, "
                                 f"but fit got key {key.tolist()}; pass the same key to resume")
        if int(progress["batch"]) and (int(progress["batch_size"]), int(progress["samples"])) != (batch_size, n):
            raise StructureError(
                f"{path} stopped mid-epoch with batch_size {int(progress['batch_size'])} on "
                f"{int(progress['samples'])} samples; resume needs the same, got {batch_size} on {n}"
            )
        position = _Position(state["params"], state["opt_state"], int(progress["batch"]),
                             float(progress["loss_sum"]), int(progress["count"]))
        history = {name: state["history"][name].tolist() for name in HISTORY_KEYS}
        best_params = state["best"]["params"]
        best = [BestModel(float(loss), int(epoch), best_params[str(i)])
                for i, (loss, epoch) in enumerate(zip(state["best"]["loss"], state["best"]["epoch"]))]
    except KeyError as missing:
        raise CheckpointError(f"{path} is not a fit() checkpoint: {missing} is missing") from None
    return (position, int(progress["epoch"]), int(progress["since_best"]),
            float(progress["elapsed"]), history, best)


# --- argument checks -----------------------------------------------------------------


def _check_fit_args(model, optimizer, epochs, keep_best, patience, min_delta) -> None:
    if not isinstance(model, Layer):
        raise TypeError(f"fit: model must be a funcnn Layer, got {type(model).__name__}")
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise TypeError(f"fit: optimizer must be an Optimizer(init, update) such as "
                        f"fn.optim.adam(1e-3), got {type(optimizer).__name__}")
    _positive_int(epochs, "epochs")
    _positive_int(keep_best, "keep_best")
    if patience is not None:
        _positive_int(patience, "patience")
    if not (isinstance(min_delta, numbers.Real) and min_delta >= 0):
        raise ValueError(f"fit: min_delta must be a number >= 0, got {min_delta!r}")


def _positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"fit: {name} must be a positive int, got {value!r}")


def _pair(arrays, name: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(arrays, (tuple, list)) or len(arrays) != 2:
        raise TypeError(f"fit: {name} must be a pair (x, y) of arrays, got {type(arrays).__name__}")
    x, y = arrays
    for label, a in (("x", x), ("y", y)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"fit: {name} {label} must be a numpy array, got {type(a).__name__}")
    if len(x) != len(y):
        raise ValueError(f"fit: {name} x and y have different lengths: {len(x)} vs {len(y)}")
    if len(x) == 0:
        raise ValueError(f"fit: {name} data is empty")
    return x, y
