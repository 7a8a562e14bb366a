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
    """The tutorial's sine plot, the reference curve and each best model's predictions,
    over a panel of the residuals ``prediction - reference``, where a good fit shows.

    ``best`` holds ``(val_loss, predictions)`` pairs, best first.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 7), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    top.plot(x[:, 0], reference[:, 0], label=reference_label, color="black", linewidth=2)
    bottom.axhline(0.0, color="black", linewidth=1)
    for i, (loss, pred) in enumerate(best, start=1):
        label = f"Best Model {i} (Val Loss: {loss:.4g})"
        top.plot(x[:, 0], pred[:, 0], linestyle="--", label=label)
        bottom.plot(x[:, 0], pred[:, 0] - reference[:, 0], linewidth=1, label=label)
    top.set(ylabel="y", title=title)
    top.legend()
    bottom.set(xlabel="x", ylabel="prediction - reference",
               title="Residuals (the curves above overlap once the fit is good)")
    return _save(fig, path)


def predicted_vs_actual(path: Path, y: np.ndarray, best: Sequence[tuple[float, np.ndarray]], *,
                        units: str = "dB", quantity: str = "sound pressure level",
                        title: str = "Test Data: Predicted vs Actual") -> Path:
    """Each test point's prediction against its target, with the line ``y = x``.

    ``best`` holds ``(rmse, predictions)`` pairs, best first; the best model's points
    are drawn, and the RMSE of every kept model is in the title.
    """
    rmse, pred = best[0]
    actual = np.asarray(y, np.float64)[:, 0]
    predicted = np.asarray(pred, np.float64)[:, 0]
    fig, ax = _figure(figsize=(7, 7))
    ax.scatter(actual, predicted, s=14, alpha=0.6, color="tab:blue",
               label=f"best model ({len(actual)} test points)")
    both = np.concatenate([actual, predicted])
    lo, hi = float(both.min()), float(both.max())
    pad = 0.03 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad
    ax.plot([lo, hi], [lo, hi], color="black", linestyle="--", linewidth=1,
            label="y = x (a perfect prediction)")
    others = ", ".join(f"{r:.2f}" for r, _ in best[1:])
    kept = f" (the other kept models: {others} {units})" if others else ""
    ax.set(xlabel=f"actual {quantity} ({units})", ylabel=f"predicted {quantity} ({units})",
           xlim=(lo, hi), ylim=(lo, hi), aspect="equal",
           title=f"{title}\nbest model: test RMSE {rmse:.2f} {units}{kept}")
    ax.legend(loc="upper left")
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

    Over :data:`SMOOTH_FROM` epochs the raw curves are drawn thin and faint, with a
    moving average over about 2% of the run on top (a geometric mean: an average on
    the log scale of the plot), so a long, noisy run reads as a trend rather than a
    band. ``best_epoch`` (counted from 1) marks the best model with a dotted line.
    """
    fig, ax = _figure()
    _loss_panel(ax, history, best_epoch, ylabel, title)
    return _save(fig, path)


def _loss_panel(ax, history: dict[str, Any], best_epoch: int | None, ylabel: str,
                title: str) -> None:
    train = np.asarray(history["train_loss"], np.float64)
    val = np.asarray(history["val_loss"], np.float64)
    epochs = np.arange(1, len(train) + 1)
    window = _smoothing_window(len(train))
    curves = [("train", "mean over the epoch's batches", train, "tab:blue")]
    if np.any(np.isfinite(val)):
        curves.append(("validation", "after the epoch", val, "tab:orange"))
    for name, what, values, color in curves:
        if window == 1:
            ax.plot(epochs, values, color=color, label=f"{name} ({what})")
            continue
        ax.plot(epochs, values, color=color, linewidth=0.5, alpha=0.3,
                label=f"{name}, raw ({what})")
        ax.plot(epochs, _moving_average(values, window), color=color, linewidth=2, zorder=3,
                label=f"{name}, moving average over {window} epochs")  # above every raw curve
    if best_epoch is not None:
        ax.axvline(best_epoch, color="gray", linestyle=":",  # counted from 1, like the x axis
                   label=f"best model (epoch {best_epoch})")
    positive = np.concatenate([train[train > 0], val[np.isfinite(val) & (val > 0)]])
    if positive.size and math.isfinite(float(positive.max())):
        ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    _integer_ticks(ax.xaxis)
    ax.legend()


def _integer_ticks(axis) -> None:
    """Ticks at whole numbers only (epochs: no 1.5)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def loss_and_accuracy(path: Path, history: dict[str, Any], accuracy: dict[str, Sequence[float]],
                      *, best_epoch: int, ylabel: str = "loss", title: str = "") -> Path:
    """Two panels side by side: the loss per epoch (as :func:`loss_curves`) and the
    accuracy per epoch, ``accuracy = {"train": [...], "validation": [...]}`` as fractions
    (one value per epoch, from epoch 1), drawn in percent."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 5), layout="constrained")
    left, right = fig.subplots(1, 2)
    _loss_panel(left, history, best_epoch, ylabel, "loss per epoch")
    colors = {"train": "tab:blue", "validation": "tab:orange"}
    lowest = 100.0
    for name, values in accuracy.items():
        percent = 100.0 * np.asarray(values, np.float64)
        epochs = np.arange(1, len(percent) + 1)
        right.plot(epochs, percent, color=colors.get(name),
                   marker="." if len(percent) < 30 else None,
                   label=f"{name} (evaluation mode, after the epoch)")
        lowest = min(lowest, float(percent.min()))
    right.axvline(best_epoch, color="gray", linestyle=":", label=f"best model (epoch {best_epoch})")
    right.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy per epoch",
              ylim=(max(0.0, lowest - 2.0), 100.5))
    _integer_ticks(right.xaxis)
    right.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def confusion_matrix(path: Path, counts: np.ndarray, *, title: str = "Confusion matrix") -> Path:
    """``counts[true, predicted]`` as a heat map with every non-zero count written in its
    cell; the diagonal holds the right answers, everything off it is a mistake."""
    counts = np.asarray(counts)
    classes = len(counts)
    fig, ax = _figure(figsize=(7, 6.2))
    image = ax.imshow(counts, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, label="images", shrink=0.8)
    threshold = counts.max() / 2 if counts.size else 0
    for (true, predicted), count in np.ndenumerate(counts):
        if count:
            ax.text(predicted, true, str(count), ha="center", va="center", fontsize=9,
                    color="white" if count > threshold else "black",
                    fontweight="normal" if true == predicted else "bold")
    ticks = np.arange(classes)
    ax.set(xticks=ticks, yticks=ticks, xlabel="predicted digit", ylabel="true digit", title=title)
    return _save(fig, path)


MAX_SHOWN = 48
""":func:`misclassified_digits` draws at most this many images."""


def misclassified_digits(path: Path, images: np.ndarray, labels: Sequence[int],
                         predicted: Sequence[int], *, total: int,
                         title: str = "Misclassified test digits") -> Path:
    """A grid of the misclassified images ``(n, H, W)``, each titled with its true and
    predicted label; the first :data:`MAX_SHOWN` when there are more. ``total`` is the
    number of test images (for the title)."""
    from matplotlib.figure import Figure

    shown = min(len(images), MAX_SHOWN)
    columns = min(max(shown, 1), 8)
    rows = max(1, math.ceil(shown / columns))
    size = (1.45 * columns + 0.6, 1.6 * rows + 0.9) if shown else (6.0, 2.0)  # room for the text
    fig = Figure(figsize=size, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.set_axis_off()
    brightest = max(1.0, float(np.max(images))) if len(images) else 1.0  # one scale for all
    for ax, image, label, guess in zip(axes, images[:shown], labels, predicted):
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=brightest)
        ax.set_title(f"true {label}, predicted {guess}", fontsize=9)
    if not len(images):
        axes[0].text(0.5, 0.5, "every test digit is classified correctly", ha="center",
                     va="center", transform=axes[0].transAxes)
    more = f" (the first {shown})" if shown < len(images) else ""
    fig.suptitle(f"{title}: {len(images)} of {total}{more}")
    return _save(fig, path)


SMOOTH_FROM = 200
"""Loss curves of more epochs than this get a moving average over the raw curve."""


def _smoothing_window(epochs: int) -> int:
    """1 (no smoothing) up to :data:`SMOOTH_FROM` epochs, else an odd window of about 2%."""
    return 1 if epochs <= SMOOTH_FROM else (epochs // 50) | 1


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """The centred moving average of ``values`` over ``window`` points (fewer at the
    ends), of the logs when every value is positive (a geometric mean), NaNs left out."""
    finite = np.isfinite(values)
    use_log = bool(np.all(values[finite] > 0))
    v = np.where(finite, np.log(np.where(finite & (values > 0), values, 1.0)) if use_log
                 else values, 0.0)
    sums = np.concatenate([[0.0], np.cumsum(v)])
    counts = np.concatenate([[0], np.cumsum(finite)])
    i, half = np.arange(len(values)), window // 2
    lo, hi = np.maximum(i - half, 0), np.minimum(i + half + 1, len(values))
    n = counts[hi] - counts[lo]
    mean = np.divide(sums[hi] - sums[lo], n, out=np.full(len(values), np.nan), where=n > 0)
    return np.exp(mean) if use_log else mean
