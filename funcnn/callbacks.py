"""What ``fit`` reports after every epoch, and the learning-rate cut on a plateau.

After each epoch ``fit`` builds an :class:`EpochRecord`, appends it as one JSON line to
``checkpoint_dir/metrics.jsonl`` (when it has a ``checkpoint_dir``) and passes it to
every callback in ``callbacks=``; a callback that returns ``"stop"`` ends training
(``stop_reason="callback"``)::

    def log(record):
        print(record.epoch, record.val_loss, record.lr)
        if record.val_loss < 1e-3:
            return "stop"

    fn.fit(..., callbacks=[log], lr_on_plateau=fn.callbacks.ReduceLROnPlateau(patience=5))
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

METRICS_LOG = "metrics.jsonl"


class EpochRecord(NamedTuple):
    """One finished epoch, as ``fit`` reports it (epochs count from 1).

    Attributes:
        epoch: the epoch just finished.
        train_loss: the mean training loss over its batches.
        val_loss: the validation loss after it (NaN without validation data).
        lr: the learning rate its updates used: the optimizer's (schedule) lr at its
            start times ``lr_scale``.
        lr_scale: the factor ``lr_on_plateau`` applies to every update (1.0 without).
        seconds: its wall time.
        improved: the monitored loss (validation, else training) improved by more than
            ``min_delta``.
        best_loss, best_epoch: the best monitored loss so far and its epoch.
    """

    epoch: int
    train_loss: float
    val_loss: float
    lr: float
    lr_scale: float
    seconds: float
    improved: bool
    best_loss: float
    best_epoch: int

    def to_json(self) -> str:
        """One line of JSON; NaN and infinities become null."""
        return json.dumps({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                           for k, v in self._asdict().items()})


Callback = Callable[[EpochRecord], object]
"""``callback(record)``; returning ``"stop"`` ends training."""


class ReduceLROnPlateau(NamedTuple):
    """Cut the learning rate when the monitored loss stops improving
    (``torch.optim.lr_scheduler.ReduceLROnPlateau``, mode ``"min"``, relative threshold).

    After each epoch: the loss improves when ``loss < best * (1 - threshold)``; after
    more than ``patience`` epochs without improvement the scale becomes
    ``max(scale * factor, min_scale)``, then ``cooldown`` epochs pass before counting
    again. ``fit`` multiplies every update by the scale (``params + scale * (new -
    old)``), which for every built-in rule is the same as multiplying its lr: the whole
    step is proportional to the lr. The scale and the counters are saved in checkpoints.
    """

    factor: float = 0.1
    patience: int = 10
    threshold: float = 1e-4
    cooldown: int = 0
    min_scale: float = 0.0

    def check(self) -> ReduceLROnPlateau:
        """The same settings, checked (ValueError naming the argument)."""
        for name, low, high in (("factor", 0.0, 1.0), ("threshold", 0.0, 1.0), ("min_scale", 0.0, 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value < high:
                raise ValueError(f"ReduceLROnPlateau: {name} must be a number in [{low}, {high}), "
                                 f"got {value!r}")
        for name in ("patience", "cooldown"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"ReduceLROnPlateau: {name} must be an int >= 0, got {value!r}")
        return self

    def init(self) -> dict:
        """The state before the first epoch: scale 1, no best yet."""
        return {"scale": np.array(1.0), "best": np.array(np.inf), "bad_epochs": np.array(0, np.int64),
                "cooldown_left": np.array(0, np.int64)}

    def update(self, state: dict, loss: float) -> dict:
        """The state after an epoch whose monitored loss is ``loss``."""
        scale, best = float(state["scale"]), float(state["best"])
        bad, cooldown_left = int(state["bad_epochs"]), int(state["cooldown_left"])
        if loss < best * (1.0 - self.threshold):
            best, bad = loss, 0
        else:
            bad += 1
        if cooldown_left > 0:
            cooldown_left, bad = cooldown_left - 1, 0
        if bad > self.patience:
            scale, cooldown_left, bad = max(scale * self.factor, self.min_scale), self.cooldown, 0
        return {"scale": np.array(scale), "best": np.array(best), "bad_epochs": np.array(bad, np.int64),
                "cooldown_left": np.array(cooldown_left, np.int64)}


def rewrite_log(folder: str, records: list[EpochRecord]) -> None:
    """``metrics.jsonl`` holding exactly ``records`` (written anew: on resume it then
    matches the checkpoint, whatever an interrupted process appended)."""
    path = os.path.join(folder, METRICS_LOG)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(record.to_json() + "\n" for record in records)
    os.replace(tmp, path)


def append_log(folder: str, record: EpochRecord) -> None:
    """Append one epoch's line to ``metrics.jsonl``."""
    with open(os.path.join(folder, METRICS_LOG), "a", encoding="utf-8") as f:
        f.write(record.to_json() + "\n")


__all__ = ["METRICS_LOG", "Callback", "EpochRecord", "ReduceLROnPlateau", "append_log", "rewrite_log"]
