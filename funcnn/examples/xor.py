"""XOR with the tutorial's 2-2-1 sigmoid network: ``python -m funcnn.examples xor``.

The tutorial trains it by hand: full-batch gradient descent with learning rate 0.1 for
10000 epochs on the squared error ``0.5 * sum((pred - y)**2)`` over the four points,
weights drawn as ``np.random.seed(0); randn(...) * 0.5`` (biases too). This example
does the same with funcnn, so it reaches the tutorial's predictions to rounding error:

- model ``serial(Linear(2, 2), Sigmoid(), Linear(2, 1), Sigmoid())`` in float64;
- the tutorial's init, drawn from ``np.random.RandomState(seed)`` in the tutorial's order
  (W1, b1, W2, b2) and transposed to funcnn's ``(out, in)`` weight layout;
- loss :data:`half_sse`, ``0.5 * sum`` of squared errors, whose exact gradient is the
  tutorial's ``pred - y`` (funcnn's ``mse`` is the *mean*, four times smaller);
- ``fn.optim.sgd(0.1)``, one update per epoch on all four points.

With one batch per epoch, ``fn.fit`` would print one progress line per epoch (10000
lines), so this example runs the plain loop from ``fn.train``'s docs and prints the
predictions every 1000 epochs, as the tutorial does.
"""

from __future__ import annotations

import math
import sys
import time
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
from funcnn.progress import MODES
from funcnn.train import BestModel, FitResult

LR = 0.1
EPOCHS = 10000
PRINT_EVERY = 1000
INIT_SCALE = 0.5


@fn.losses.make_loss
def half_sse(pred, target):
    """The tutorial's XOR loss: ``0.5 * sum((pred - target)**2)``; gradient ``pred - target``."""
    d = pred - target
    return 0.5 * np.sum(d * d), d


def model() -> fn.Layer:
    """The tutorial's XOR network: 2 inputs, 2 sigmoid hidden units, 1 sigmoid output."""
    L = fn.layers
    return fn.serial(L.Linear(2, 2, dtype=np.float64), L.Sigmoid(),
                     L.Linear(2, 1, dtype=np.float64), L.Sigmoid())


def seed_init(seed: int = 0) -> fn.Params:
    """The tutorial's init: ``randn(...) * 0.5`` for W1 (2, 2), b1 (2), W2 (2, 1), b2 (1).

    Drawn in that order from a private ``np.random.RandomState(seed)``, which gives the
    same numbers as the tutorial's global ``np.random.seed(0); np.random.randn(...)``.
    """
    rs = np.random.RandomState(seed)
    w1, b1 = rs.randn(2, 2) * INIT_SCALE, rs.randn(2) * INIT_SCALE
    w2, b2 = rs.randn(2, 1) * INIT_SCALE, rs.randn(1) * INIT_SCALE
    return {"0": {"weight": np.ascontiguousarray(w1.T), "bias": b1},
            "2": {"weight": np.ascontiguousarray(w2.T), "bias": b2}}


def run(*, epochs: int = EPOCHS, seed: int = 0, out=None, progress: str = "auto",
        plots: bool = True, stream: TextIO | None = None) -> ExampleResult:
    """Train the tutorial's XOR network by full-batch gradient descent and write its results.

    Args:
        epochs: number of gradient-descent steps (the tutorial: 10000).
        seed: seeds ``np.random.RandomState`` for the init (the tutorial uses 0).
        out: output folder (default ``runs/xor``).
        progress: "silent" hides the predictions printed every 1000 epochs; any other
            mode ("auto", "bar", "lines") shows them.
        plots: draw the PNGs (needs matplotlib).
        stream: where to print (stdout by default).

    Returns:
        an :class:`~funcnn.examples.ExampleResult`; ``metrics["predictions"]`` are the
        outputs for the four points and ``metrics["loss"]`` the final ``half_sse``.
    """
    if progress not in MODES:
        raise ValueError(f"progress must be one of {MODES}, got {progress!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"xor: epochs must be a positive int, got {epochs!r}")
    stream = sys.stdout if stream is None else stream
    folder = output_folder(out, "xor")
    x, y = fn.datasets.xor()
    net = model()
    params = seed_init(seed)
    say(stream, f"xor: 2-2-1 sigmoid net, full-batch gradient descent lr {LR}, "
                f"{epochs} epochs, loss 0.5 * sum of squared errors, seed {seed}")

    result = _train(net, params, x, y, epochs, progress != "silent", stream)

    best = result.best[0]
    pred = net.apply(best.params, x)[:, 0]
    correct = int(np.sum((pred > 0.5) == (y[:, 0] > 0.5)))
    metrics = {
        "example": "xor", "seed": seed, "epochs": epochs,
        "epochs_run": len(result.history["train_loss"]), "stop_reason": result.stop_reason,
        "loss": best.loss, "best_epoch": best.epoch,
        "predictions": [float(p) for p in pred], "targets": [float(t) for t in y[:, 0]],
        "correct": correct,
        "train_seconds": float(np.sum(result.history["time"])),
    }
    say(stream, f"XOR Predictions after training: {np.array2string(pred, precision=4)}")
    say(stream, f"xor: loss (0.5 * sum of squared errors) {best.loss:.4g}; "
                f"{correct}/4 points on the right side of 0.5")
    files = write_results(folder, best.params, metrics)
    if plots:
        files.update(_draw(folder, net, best, x, y, result, stream))
    for label, path in files.items():
        say(stream, f"  {label}: {path}")
    return ExampleResult(metrics, result, files)


def _train(net, params, x, y, epochs, verbose, stream) -> FitResult:
    """The tutorial's loop: forward, exact gradient, one SGD step, on all four points."""
    step = fn.value_and_grad(net, half_sse)
    opt = fn.optim.sgd(LR)
    opt_state = opt.init(params)
    losses, lrs, times = [], [], []
    best = None
    stop_reason = None
    try:
        for epoch in range(epochs):
            started = time.perf_counter()
            if verbose and epoch % PRINT_EVERY == 0:
                pred = net.apply(params, x)[:, 0]
                shown = np.array2string(pred, precision=4)
                say(stream, f"XOR Predictions in epoch {epoch}: {shown}")
            lrs.append(float(opt_state["lr"]))
            loss, grads = step(params, x, y)
            if not math.isfinite(loss):
                raise fn.errors.NonFiniteLossError(f"xor: the loss is {loss} at epoch {epoch + 1}")
            if best is None or loss < best.loss:
                best = BestModel(loss, epoch, params)  # the loss of these params, before the step
            params, opt_state = opt.update(grads, opt_state, params)
            losses.append(loss)
            times.append(time.perf_counter() - started)
    except KeyboardInterrupt:
        stop_reason = "interrupted"
        say(stream, f"interrupted after {len(losses)} epochs; keeping what was trained so far")
        if best is None:
            raise KeyboardInterrupt(NOTHING_SAVED) from None
    final_loss = half_sse(net.apply(params, x), y)
    if final_loss < best.loss:
        best = BestModel(final_loss, len(losses), params)
    history = {"train_loss": np.array(losses), "val_loss": np.full(len(losses), np.nan),
               "lr": np.array(lrs), "time": np.array(times)}
    return FitResult(params, opt_state, history, (best,), stop_reason)


def _draw(folder, net, best, x, y, result, stream):
    if not plotting.available():
        say(stream, plotting.MISSING)
        return {}
    return {
        "predictions": plotting.xor_surface(folder / PREDICTIONS_PNG,
                                            lambda p: net.apply(best.params, p), x, y),
        "loss": plotting.loss_curves(folder / LOSS_PNG, result.history,
                                     ylabel="loss (0.5 * sum of squared errors)",
                                     title="xor: loss per epoch"),
    }
