"""PNG plots for the examples; matplotlib is an optional extra (``funcnn[plot]``).

The figures are drawn with matplotlib's object-oriented API (``matplotlib.figure.Figure``)
and written straight to PNG, so pyplot and its global backend are never touched: the
examples plot the same on a laptop, over ssh and on CI, and never open a window.
Every function takes the target path first and returns it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MISSING = "matplotlib is not installed (pip install 'funcnn[plot]'); skipping plots"


def available() -> bool:
    """Whether matplotlib can be imported."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        return False
    return True


def _figure(figsize=(8, 5)):
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots()


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=100)
    return Path(path)


def best_models_vs_reference(path: Path, x: np.ndarray, reference: np.ndarray,
                             best: Sequence[tuple[float, np.ndarray]], *,
                             reference_label: str = "Reference (sin)",
                             title: str = "Validation Data: Best 3 Models vs Reference") -> Path:
    """The seed's sine plot: the reference curve and each best model's predictions.

    ``best`` holds ``(val_loss, predictions)`` pairs, best first.
    """
    fig, ax = _figure()
    ax.plot(x[:, 0], reference[:, 0], label=reference_label, color="black", linewidth=2)
    for i, (loss, pred) in enumerate(best, start=1):
        ax.plot(x[:, 0], pred[:, 0], linestyle="--", label=f"Best Model {i} (Val Loss: {loss:.4g})")
    ax.set(xlabel="x", ylabel="y", title=title)
    ax.legend()
    return _save(fig, path)


def sorted_predictions(path: Path, y: np.ndarray, best: Sequence[tuple[float, np.ndarray]], *,
                       ylabel: str = "sound pressure level (dB)",
                       title: str = "Test Data: Predictions vs Reference (Sorted by y)") -> Path:
    """The seed's airfoil plot: targets sorted by value, each best model's predictions.

    ``best`` holds ``(label_value, predictions)`` pairs, best first; the label value is
    shown as the model's test RMSE.
    """
    order = np.argsort(y[:, 0], kind="stable")
    index = np.arange(len(order))
    fig, ax = _figure()
    ax.scatter(index, y[order, 0], label="Reference", color="black", s=20)
    colors = ("red", "blue", "green", "orange", "purple")
    for i, (value, pred) in enumerate(best):
        ax.scatter(index, pred[order, 0], label=f"Best Model {i + 1} (test RMSE {value:.2f} dB)",
                   color=colors[i % len(colors)], marker="x", s=15)
    ax.set(xlabel="Index (sorted by y)", ylabel=ylabel, title=title)
    ax.legend()
    return _save(fig, path)


def xor_surface(path: Path, predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
                y: np.ndarray, *, title: str = "XOR: network output vs targets") -> Path:
    """The trained network's output on ``[0, 1]^2`` with the four XOR points on top."""
    grid = np.linspace(-0.25, 1.25, 121)
    g0, g1 = np.meshgrid(grid, grid)
    z = predict(np.column_stack([g0.ravel(), g1.ravel()])).reshape(g0.shape)
    fig, ax = _figure(figsize=(6, 5))
    image = ax.contourf(g0, g1, z, levels=np.linspace(0.0, 1.0, 11), cmap="coolwarm")
    fig.colorbar(image, ax=ax, label="network output")
    pred = predict(x)[:, 0]
    ax.scatter(x[:, 0], x[:, 1], c=y[:, 0], cmap="coolwarm", vmin=0, vmax=1, s=200,
               edgecolors="black")
    for (a, b), p, t in zip(x, pred, y[:, 0]):
        ax.annotate(f"target {t:.0f}\noutput {p:.3f}", (a, b), textcoords="offset points",
                    xytext=(0, 14 if b < 0.5 else -34), ha="center", fontsize=8)
    ax.set(xlabel="x0", ylabel="x1", title=title, xlim=(-0.25, 1.25), ylim=(-0.25, 1.25))
    return _save(fig, path)


def loss_curves(path: Path, history: dict[str, Any], *, best_epoch: int | None = None,
                ylabel: str = "loss (0.5 * mean squared error)",
                title: str = "Loss per epoch") -> Path:
    """Training (and validation, when there is one) loss per epoch, log scale.

    ``best_epoch`` (0-based) marks the best model with a dotted line.
    """
    train = np.asarray(history["train_loss"], np.float64)
    val = np.asarray(history["val_loss"], np.float64)
    epochs = np.arange(1, len(train) + 1)
    fig, ax = _figure()
    ax.plot(epochs, train, label="train (mean over the epoch's batches)")
    if np.any(np.isfinite(val)):
        ax.plot(epochs, val, label="validation (after the epoch)")
    if best_epoch is not None:
        ax.axvline(best_epoch, color="gray", linestyle=":",  # counted from 1, like the x axis
                   label=f"best model (epoch {best_epoch})")
    positive = np.concatenate([train[train > 0], val[np.isfinite(val) & (val > 0)]])
    if positive.size and math.isfinite(float(positive.max())):
        ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.legend()
    return _save(fig, path)
