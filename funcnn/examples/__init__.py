"""The tutorial's experiments, ready to run.

From a shell (``--help`` lists the options of each)::

    python -m funcnn.examples xor
    python -m funcnn.examples sine-mlp --epochs 200 --out runs/mlp
    python -m funcnn.examples sine-resnet --seed 1
    python -m funcnn.examples airfoil --recipe better --data airfoil_self_noise.dat
    python -m funcnn.examples digits --epochs 60

or from Python, with the same options as keyword arguments::

    from funcnn import examples
    outcome = examples.run("sine-mlp", epochs=20, out="runs/mlp", progress="silent")
    outcome.metrics["val_mse"], outcome.files["checkpoint"]

Each run trains the tutorial's model with the tutorial's hyperparameters (unless told
otherwise; ``digits``, a small CNN on the UCI 8x8 digits shipped with funcnn, is not the
tutorial's), shows fit's progress, prints the final metrics, and writes into the output
folder (default ``runs/<example>``):

- ``best.ckpt``: the best params (``fn.load(path, like=model.init(0))`` reads them),
  and ``best.state.ckpt`` beside it for a model with state (BatchNorm statistics);
- ``metrics.json``: the printed numbers and the settings that produced them;
- ``predictions.png`` and ``loss.png`` (digits: ``loss.png``, ``confusion.png`` and
  ``misclassified.png``), when matplotlib is installed (``pip install 'funcnn[plot]'``);
  without it the example says so and still trains.

Ctrl-C stops training early and still writes the best model seen so far.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import numpy as np

from funcnn.checkpoint import save
from funcnn.train import FitResult
from funcnn.types import Params, State

NAMES = ("xor", "sine-mlp", "sine-resnet", "airfoil", "digits")
CHECKPOINT = "best.ckpt"
STATE_CHECKPOINT = "best.state.ckpt"
METRICS = "metrics.json"
PREDICTIONS_PNG = "predictions.png"
LOSS_PNG = "loss.png"
NOTHING_SAVED = "before the first epoch finished; nothing was saved"


class ExampleResult(NamedTuple):
    """What an example returns.

    Attributes:
        metrics: the final numbers it printed (and wrote to ``metrics.json``).
        fit: the :class:`funcnn.FitResult` of the training run (params, history, best-k).
        files: the files written: ``"checkpoint"``, ``"metrics"``, and ``"predictions"``
            and ``"loss"`` when the plots were drawn.
    """

    metrics: dict[str, Any]
    fit: FitResult
    files: dict[str, Path]


def run(name: str, **options: Any) -> ExampleResult:
    """Run the example ``name`` (one of :data:`NAMES`) with keyword ``options``.

    The options are those of the example's ``run`` function (``epochs``, ``seed``,
    ``out``, ``progress``, ``plots``, ``stream``; airfoil adds ``data`` and ``recipe``).
    """
    if name == "xor":
        from funcnn.examples import xor

        return xor.run(**options)
    if name in ("sine-mlp", "sine-resnet"):
        from funcnn.examples import sine

        return sine.run(name.removeprefix("sine-"), **options)
    if name == "airfoil":
        from funcnn.examples import airfoil

        return airfoil.run(**options)
    if name == "digits":
        from funcnn.examples import digits

        return digits.run(**options)
    raise ValueError(f"unknown example {name!r}; choose one of {', '.join(NAMES)}")


# --- shared by the examples ------------------------------------------------------------


def output_folder(out: str | os.PathLike | None, name: str) -> Path:
    """``out`` (default ``runs/<name>``), created if needed."""
    folder = Path("runs") / name if out is None else Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_results(folder: Path, params: Params, metrics: dict[str, Any],
                  state: State | None = None) -> dict[str, Path]:
    """Save the best params to ``best.ckpt``, the metrics to ``metrics.json`` and, for a
    model with state (``state`` not empty), the state to ``best.state.ckpt``."""
    checkpoint = folder / CHECKPOINT
    save(checkpoint, params)
    metrics_path = folder / METRICS
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
             for k, v in metrics.items()}
    metrics_path.write_text(json.dumps(clean, indent=2) + "\n", encoding="utf-8")
    files = {"checkpoint": checkpoint, "metrics": metrics_path}
    if state:
        files["state"] = folder / STATE_CHECKPOINT
        save(files["state"], state)
    return files


def say(stream: TextIO, text: str) -> None:
    """Print a line of the example's own output (shown even with ``progress="silent"``)."""
    stream.write(text + "\n")
    stream.flush()


def rmse(pred: np.ndarray, target: np.ndarray) -> float:
    """Root mean squared error, computed in float64."""
    d = np.asarray(pred, np.float64) - np.asarray(target, np.float64)
    return float(np.sqrt(np.mean(d * d)))
