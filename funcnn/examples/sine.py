"""sin(x) on [0, 2 pi] with the tutorial's MLP or ResNet: ``python -m funcnn.examples sine-mlp``.

The tutorial's setting, unchanged: 5000 evenly spaced training points, the validation grid
shifted by half a step, loss ``0.5 * mean((pred - y)**2)``, Adam with lr 0.01 and
(coupled, L2) weight decay 1e-6, batches of 64 reshuffled every epoch, 1000 epochs,
the best 3 models kept by validation loss. Params are float32, He-initialised.
"""

from __future__ import annotations

import sys
from typing import TextIO

import numpy as np

import funcnn as fn
from funcnn.examples import (
    LOSS_PNG,
    NOTHING_SAVED,
    PREDICTIONS_PNG,
    ExampleResult,
    output_folder,
    say,
    write_results,
)
from funcnn.examples import plots as plotting

LR = 0.01
WEIGHT_DECAY = 1e-6
BATCH_SIZE = 64
EPOCHS = 1000
KEEP_BEST = 3


def mlp() -> fn.Layer:
    """The tutorial's MLP: Linear(1, 16) - ReLU - Linear(16, 16) - ReLU - Linear(16, 1)."""
    L = fn.layers
    return fn.serial(L.Linear(1, 16), L.ReLU(), L.Linear(16, 16), L.ReLU(), L.Linear(16, 1))


def resnet() -> fn.Layer:
    """The tutorial's ResNet: Linear(1, 16) - ReLU - 3 x ResNetBlock(16) - Linear(16, 1)."""
    L = fn.layers
    return fn.serial(L.Linear(1, 16), L.ReLU(), L.ResNetBlock(16), L.ResNetBlock(16),
                     L.ResNetBlock(16), L.Linear(16, 1))


MODELS = {"mlp": mlp, "resnet": resnet}


def run(arch: str = "mlp", *, epochs: int = EPOCHS, seed: int = 0, out=None,
        progress: str = "auto", plots: bool = True, stream: TextIO | None = None) -> ExampleResult:
    """Train the tutorial's sine model ``arch`` ("mlp" or "resnet") and write its results.

    Args:
        arch: "mlp" or "resnet".
        epochs: number of epochs (the tutorial: 1000).
        seed: seeds the init (``split(key(seed))[0]``) and the shuffling (``[1]``).
        out: output folder (default ``runs/sine-<arch>``).
        progress: fit's progress mode: "auto", "bar", "lines" or "silent".
        plots: draw the PNGs (needs matplotlib).
        stream: where to print (stdout by default).

    Returns:
        an :class:`~funcnn.examples.ExampleResult`; ``metrics["val_mse"]`` is the best
        model's validation loss (the tutorial's ``0.5 * mean`` squared error).
    """
    if arch not in MODELS:
        raise ValueError(f"sine: arch must be one of {sorted(MODELS)}, got {arch!r}")
    stream = sys.stdout if stream is None else stream
    name = f"sine-{arch}"
    folder = output_folder(out, name)
    data = fn.datasets.sine(dtype=np.float32)
    model = MODELS[arch]()
    init_key, fit_key = fn.random.split(seed)
    params = model.init(init_key)
    say(stream, f"{name}: {fn.tree.size(params)} params, {epochs} epochs, "
                f"batch {BATCH_SIZE}, adam lr {LR} weight_decay {WEIGHT_DECAY}, seed {seed}")

    result = fn.fit(model, fn.losses.mse, fn.optim.adam(LR, weight_decay=WEIGHT_DECAY),
                    params, (data.x_train, data.y_train),
                    val=(data.x_val, data.y_val), epochs=epochs, batch_size=BATCH_SIZE,
                    key=fit_key, keep_best=KEEP_BEST, progress=progress, stream=stream)

    if not result.best:
        raise KeyboardInterrupt(NOTHING_SAVED)  # stopped before the first epoch finished
    best = result.best[0]
    metrics = {
        "example": name, "seed": seed, "epochs": epochs,
        "epochs_run": len(result.history["train_loss"]), "stop_reason": result.stop_reason,
        "val_mse": best.loss, "best_epoch": best.epoch,
        "best_k": [{"val_mse": m.loss, "epoch": m.epoch} for m in result.best],
        "train_seconds": float(np.sum(result.history["time"])),
    }
    say(stream, f"{name}: best validation MSE (0.5 * mean squared error) {best.loss:.4g} "
                f"at epoch {best.epoch}")
    files = write_results(folder, best.params, metrics)
    if plots:
        files.update(_draw(folder, model, data, result, name, stream))
    for label, path in files.items():
        say(stream, f"  {label}: {path}")
    return ExampleResult(metrics, result, files)


def _draw(folder, model, data, result, name, stream):
    if not plotting.available():
        say(stream, plotting.MISSING)
        return {}
    best = [(m.loss, model.apply(m.params, data.x_val)) for m in result.best]
    return {
        "predictions": plotting.best_models_vs_reference(
            folder / PREDICTIONS_PNG, data.x_val, data.y_val, best,
            title=f"{name}: Validation Data: Best {len(best)} Models vs Reference"),
        "loss": plotting.loss_curves(folder / LOSS_PNG, result.history,
                                     best_epoch=result.best[0].epoch,
                                     title=f"{name}: loss per epoch"),
    }
