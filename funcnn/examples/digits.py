"""Handwritten digits with a small CNN, offline: ``python -m funcnn.examples digits``.

The data is ``fn.datasets.digits()``: the UCI 8x8 handwritten digits (1797 images, the
file scikit-learn ships), inside the funcnn package, so this runs without a network.
Pixels are scaled to [0, 1]. The split is the dataset's fixed, stratified one (no random
numbers; ``fn.datasets.DIGITS_SPLITS``): of each digit's images in file order, the k-th
goes to test when ``k % 5 == 4``, to validation when ``k % 5 == 3``, else to training:
**1085 train, 357 validation, 355 test** images.

The model (6,106 params; torch's layouts and keys)::

    Conv2d(1, 16, 3, padding=1, bias=False) - BatchNorm(16) - ReLU - MaxPool2d(2)  # 16 x 4 x 4
    Conv2d(16, 32, 3, padding=1) - ReLU - MaxPool2d(2) - Flatten        # 32 x 2 x 2 = 128
    Dropout(0.25) - Linear(128, 10)                                     # logits

Training: softmax cross-entropy on the int labels; AdamW (decoupled weight decay 1e-4)
with the learning rate warmed up linearly over 2 epochs to 3e-2, then a cosine decay to
0 at the last epoch; batches of 32 reshuffled every epoch; 60 epochs. ``fit`` gives
Dropout a new key per batch and carries BatchNorm's running statistics. The recipe was
chosen on the validation split alone (``benchmarks/quality/digits_recipes.py``; the
comparison is in ``docs/quality.md``); the test split only reports.

Reported: the test accuracy of the best model by validation loss. Written to the output
folder (default ``runs/digits``): ``best.ckpt`` (its params), ``best.state.ckpt`` (its
BatchNorm statistics), ``metrics.json``, and with matplotlib ``loss.png`` (loss and
accuracy per epoch), ``confusion.png`` (the test confusion matrix) and
``misclassified.png`` (the misclassified test digits, each with its predicted label).
To keep the accuracy of every epoch, ``fit`` keeps every epoch's model
(``keep_best=epochs``: 6,106 params each, 1.5 MB for 60 epochs); the curves are computed
from them after training.
"""

from __future__ import annotations

import sys
from typing import TextIO

import numpy as np

import funcnn as fn
from funcnn.errors import NonFiniteLossError
from funcnn.examples import (
    LOSS_PNG,
    NOTHING_SAVED,
    ExampleResult,
    output_folder,
    say,
    write_results,
)
from funcnn.examples import plots as plotting
from funcnn.train import BestModel

EPOCHS = 60
BATCH_SIZE = 32
LR = 3e-2
WEIGHT_DECAY = 1e-4
WARMUP_EPOCHS = 2
DROPOUT = 0.25
CLASSES = 10
KEEP_BEST = 3  # reported in metrics.json; fit keeps every epoch's model for the curves
CONFUSION_PNG = "confusion.png"
MISCLASSIFIED_PNG = "misclassified.png"


def cnn(*, batchnorm: bool = True, dropout: float = DROPOUT, dtype=np.float32) -> fn.Layer:
    """``Conv2d(1, 16, 3, padding=1) - [BatchNorm(16)] - ReLU - MaxPool2d(2) -
    Conv2d(16, 32, 3, padding=1) - ReLU - MaxPool2d(2) - Flatten - [Dropout] -
    Linear(128, 10)``, for ``(N, 1, 8, 8)`` images; params in ``dtype``.

    With BatchNorm the first convolution has no bias: BatchNorm subtracts the batch mean,
    which cancels it (its exact gradient is 0, so Adam would only push it around by
    rounding noise), as torch CNNs write ``Conv2d(..., bias=False)`` before a BatchNorm.
    """
    L = fn.layers
    return fn.serial(
        L.Conv2d(1, 16, 3, padding=1, bias=not batchnorm, dtype=dtype),
        *([L.BatchNorm(16, dtype=dtype)] if batchnorm else []),
        L.ReLU(), L.MaxPool2d(2),
        L.Conv2d(16, 32, 3, padding=1, dtype=dtype), L.ReLU(), L.MaxPool2d(2), L.Flatten(),
        *([L.Dropout(dropout)] if dropout else []), L.Linear(128, CLASSES, dtype=dtype),
    )


def lr_schedule(epochs: int, steps_per_epoch: int) -> fn.optim.Schedule:
    """Linear warm-up over :data:`WARMUP_EPOCHS` to :data:`LR`, then cosine decay to 0 at
    the end of ``epochs``."""
    total = epochs * steps_per_epoch
    warmup = min(WARMUP_EPOCHS * steps_per_epoch, total - 1)
    return fn.optim.schedules.warmup_cosine(LR, warmup, total)


def optimizer(epochs: int, steps_per_epoch: int) -> fn.optim.Optimizer:
    """AdamW (decoupled weight decay :data:`WEIGHT_DECAY`) on :func:`lr_schedule`."""
    return fn.optim.adamw(lr_schedule(epochs, steps_per_epoch), weight_decay=WEIGHT_DECAY)


def logits(model: fn.Layer, best: BestModel, images: np.ndarray) -> np.ndarray:
    """The model's logits for ``images`` in evaluation mode (BatchNorm's running statistics)."""
    if not best.state:
        return model.apply(best.params, images)
    return model.apply(best.params, images, state=best.state)[0]


def accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of ``predicted`` labels equal to ``labels``."""
    return float(np.mean(predicted == labels))


def confusion(labels: np.ndarray, predicted: np.ndarray, classes: int = CLASSES) -> np.ndarray:
    """``counts[true, predicted]``, an int64 ``(classes, classes)`` matrix."""
    flat = np.bincount(labels * classes + predicted, minlength=classes * classes)
    return flat.reshape(classes, classes)


def run(*, epochs: int = EPOCHS, seed: int = 0, out=None, progress: str = "auto",
        plots: bool = True, stream: TextIO | None = None) -> ExampleResult:
    """Train the digits CNN on the fixed split and write its results.

    Args:
        epochs: number of epochs (default 60); the lr schedule spans them.
        seed: ``fn.random.split(fn.random.key(seed))`` gives the init key and fit's key
            (shuffling and dropout masks); the split does not depend on it.
        out: output folder (default ``runs/digits``).
        progress: fit's progress mode: "auto", "bar", "lines" or "silent".
        plots: draw the PNGs (needs matplotlib).
        stream: where to print (stdout by default).

    Returns:
        an :class:`~funcnn.examples.ExampleResult`; ``metrics["test_accuracy"]`` is the
        test accuracy of the best model by validation loss.
    """
    stream = sys.stdout if stream is None else stream
    folder = output_folder(out, "digits")
    parts = {name: fn.datasets.digits(name) for name in ("train", "val", "test")}
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = parts.values()
    model = cnn()
    init_key, fit_key = fn.random.split(seed)
    params = model.init(init_key)
    steps = fn.data.num_batches(len(x_train), BATCH_SIZE)
    say(stream, f"digits: CNN with {fn.tree.size(params):,} params; fixed split "
                f"{len(x_train)}/{len(x_val)}/{len(x_test)} (train/val/test); {epochs} epochs, "
                f"batch {BATCH_SIZE}, adamw lr {LR} ({WARMUP_EPOCHS}-epoch warm-up, cosine) "
                f"weight_decay {WEIGHT_DECAY}, dropout {DROPOUT}, batchnorm, seed {seed}")

    try:
        result = fn.fit(model, fn.losses.softmax_cross_entropy, optimizer(epochs, steps), params,
                        (x_train, y_train), val=(x_val, y_val), epochs=epochs,
                        batch_size=BATCH_SIZE, key=fit_key, state=model.init_state(),
                        keep_best=epochs, progress=progress, stream=stream)
    except NonFiniteLossError as error:
        say(stream, f"digits: {error}; keeping the best models seen before it")
        result = error.result
    if not result.best:
        raise KeyboardInterrupt(NOTHING_SAVED)  # stopped before the first epoch finished

    def test_accuracy(m: BestModel) -> float:
        return accuracy(logits(model, m, x_test).argmax(axis=-1), y_test)

    best = result.best[0]
    test_pred = logits(model, best, x_test).argmax(axis=-1)
    wrong = np.flatnonzero(test_pred != y_test)
    by_epoch = sorted(result.best, key=lambda m: m.epoch)
    curves = {name: [accuracy(logits(model, m, x).argmax(axis=-1), y) for m in by_epoch]
              for name, (x, y) in (("train", (x_train, y_train)), ("validation", (x_val, y_val)))}
    metrics = {
        "example": "digits", "seed": seed, "epochs": epochs,
        "epochs_run": len(result.history["train_loss"]), "stop_reason": result.stop_reason,
        "split": {name: len(y) for name, (_, y) in parts.items()},
        "test_accuracy": test_accuracy(best),
        "val_accuracy": curves["validation"][best.epoch - 1],
        "train_accuracy": curves["train"][best.epoch - 1],
        "val_loss": best.loss,
        "test_loss": fn.losses.softmax_cross_entropy(logits(model, best, x_test), y_test),
        "best_epoch": best.epoch,
        "best_k": [{"val_loss": m.loss, "epoch": m.epoch, "test_accuracy": test_accuracy(m)}
                   for m in result.best[:KEEP_BEST]],
        "accuracy_per_epoch": curves,
        "confusion": confusion(y_test, test_pred).tolist(),
        "misclassified": [{"test_index": int(i), "label": int(y_test[i]),
                           "predicted": int(test_pred[i])} for i in wrong],
        "train_seconds": float(np.sum(result.history["time"])),
    }
    say(stream, f"digits: test accuracy of the best model by validation loss (epoch {best.epoch}): "
                f"{100 * metrics['test_accuracy']:.2f}% ({len(y_test) - len(wrong)}/{len(y_test)}; "
                f"val {100 * metrics['val_accuracy']:.2f}%, "
                f"train {100 * metrics['train_accuracy']:.2f}%)")
    files = write_results(folder, best.params, metrics, best.state)
    if plots:
        files.update(_draw(folder, result, curves, metrics, x_test[wrong], stream))
    for label, path in files.items():
        say(stream, f"  {label}: {path}")
    return ExampleResult(metrics, result, files)


def _draw(folder, result, curves, metrics, wrong_images, stream):
    if not plotting.available():
        say(stream, plotting.MISSING)
        return {}
    percent = f"{100 * metrics['test_accuracy']:.2f}%"
    labels = [m["label"] for m in metrics["misclassified"]]
    predicted = [m["predicted"] for m in metrics["misclassified"]]
    return {
        "loss": plotting.loss_and_accuracy(
            folder / LOSS_PNG, result.history, curves, best_epoch=metrics["best_epoch"],
            ylabel="softmax cross-entropy", title=f"digits CNN, seed {metrics['seed']}"),
        "confusion": plotting.confusion_matrix(
            folder / CONFUSION_PNG, np.array(metrics["confusion"]),
            title=f"digits: test confusion matrix (accuracy {percent})"),
        "misclassified": plotting.misclassified_digits(
            folder / MISCLASSIFIED_PNG, wrong_images[:, 0], labels, predicted,
            total=metrics["split"]["test"],
            title="digits: misclassified test images"),
    }
