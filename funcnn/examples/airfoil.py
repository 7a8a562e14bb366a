"""UCI Airfoil Self-Noise regression: ``python -m funcnn.examples airfoil``.

Two recipes, both on the tutorial's 50/20/30 train/val/test split (made with a key derived
from ``--seed``), both reporting the test RMSE in dB of the best model by validation
loss:

``tutorial`` (default): the tutorial's model and settings, unchanged: raw inputs and targets,
    ``Linear(5, 8) - ReLU - residual(serial(Linear(8, 16), ReLU, ResNetBlock(16), ReLU,
    Linear(16, 8))) - ReLU - Linear(8, 1)``, Adam lr 1e-3 weight decay 1e-6, batches of
    16, 10000 epochs, best 3 kept. Slow (about 4 minutes for 10000 epochs on one core)
    and 2 to 4 dB (``docs/quality.md``): the raw frequency column (200 to 20000 Hz)
    dwarfs the others. ``seed``, its old name, still works but is deprecated.

``better``: what the tutorial's closing remarks suggest, measured in ``docs/quality.md``:

    - features: log of frequency and of displacement thickness (both span two decades),
      then every input *and* the target standardized with statistics of the training
      split only (``fn.data.fit_standardizer``), saved beside the params;
    - a wider residual net: ``Linear(5, 128) - ReLU - 3 x ResNetBlock(128) - Linear(128, 1)``;
    - AdamW (decoupled weight decay 1e-4), lr warm-up for 5 epochs then cosine decay
      to 0 over the run (``fn.optim.schedules.warmup_cosine``);
    - batches of 32, 600 epochs, early stopping after 150 epochs without a better
      validation loss, restoring the best params.

    ``--batchnorm`` puts a ``BatchNorm`` after the first Linear and ``--dropout RATE`` a
    ``Dropout`` after each block (the better recipe only); their measured effect is in
    ``docs/quality.md``. With BatchNorm the best model's statistics are saved in
    ``best.state.ckpt`` beside ``best.ckpt``.
"""

from __future__ import annotations

import sys
import warnings
from typing import NamedTuple, TextIO

import numpy as np

import funcnn as fn
from funcnn.errors import NonFiniteLossError
from funcnn.examples import (
    LOSS_PNG,
    NOTHING_SAVED,
    PREDICTIONS_PNG,
    ExampleResult,
    output_folder,
    rmse,
    say,
    write_results,
)
from funcnn.examples import plots as plotting

STANDARDIZER = "standardizer.ckpt"
KEEP_BEST = 3


class Recipe(NamedTuple):
    """Hyperparameters of one airfoil recipe."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    patience: int | None


TUTORIAL = Recipe(epochs=10000, batch_size=16, lr=1e-3, weight_decay=1e-6, patience=None)
BETTER = Recipe(epochs=600, batch_size=32, lr=3e-3, weight_decay=1e-4, patience=150)
RECIPES = {"tutorial": TUTORIAL, "better": BETTER}
OLD_RECIPE_NAMES = {"seed": "tutorial"}  # deprecated spellings, still accepted
BETTER_WIDTH = 128
BETTER_BLOCKS = 3
WARMUP_EPOCHS = 5


def seed_model() -> fn.Layer:
    """The tutorial's airfoil network (881 params), the ``tutorial`` recipe's model."""
    L = fn.layers
    inner = fn.serial(L.Linear(8, 16), L.ReLU(), L.ResNetBlock(16), L.ReLU(), L.Linear(16, 8))
    return fn.serial(L.Linear(5, 8), L.ReLU(), fn.residual(inner), L.ReLU(), L.Linear(8, 1))


def better_model(width: int = BETTER_WIDTH, blocks: int = BETTER_BLOCKS, *, dropout: float = 0.0,
                 batchnorm: bool = False) -> fn.Layer:
    """``Linear(5, width) - [BatchNorm] - ReLU - blocks x (ResNetBlock(width) - [Dropout]) -
    Linear(width, 1)``."""
    L = fn.layers
    layers = [L.Linear(5, width), *([L.BatchNorm(width)] if batchnorm else []), L.ReLU()]
    for _ in range(blocks):
        layers += [L.ResNetBlock(width), *([L.Dropout(dropout)] if dropout else [])]
    return fn.serial(*layers, L.Linear(width, 1))


def better_features(x: np.ndarray) -> np.ndarray:
    """The better recipe's inputs: frequency and thickness on a log scale, the rest as is."""
    x = np.asarray(x, np.float64)
    return np.column_stack([np.log(x[:, 0]), x[:, 1], x[:, 2], x[:, 3], np.log(x[:, 4])])


def better_optimizer(recipe: Recipe, steps_per_epoch: int) -> fn.optim.Optimizer:
    """AdamW on a warm-up + cosine schedule spanning the whole run."""
    total = recipe.epochs * steps_per_epoch
    warmup = min(WARMUP_EPOCHS * steps_per_epoch, total - 1)
    schedule = fn.optim.schedules.warmup_cosine(recipe.lr, warmup, total)
    return fn.optim.adamw(schedule, weight_decay=recipe.weight_decay)


class Encoding(NamedTuple):
    """How a recipe maps raw data to the model's inputs/targets and predictions back."""

    inputs: object  # raw x -> float32 model input
    targets: object  # raw y -> float32 model target
    predictions: object  # model output -> dB (float64)
    stats: dict | None  # the standardizers, to save


def _encoding(recipe_name: str, x_train: np.ndarray, y_train: np.ndarray) -> Encoding:
    if recipe_name == "tutorial":
        return Encoding(lambda x: x.astype(np.float32), lambda y: y.astype(np.float32),
                        lambda z: z.astype(np.float64), None)
    x_stats = fn.data.fit_standardizer(better_features(x_train))
    y_stats = fn.data.fit_standardizer(y_train.astype(np.float64))
    return Encoding(
        lambda x: fn.data.standardize(x_stats, better_features(x)).astype(np.float32),
        lambda y: fn.data.standardize(y_stats, y.astype(np.float64)).astype(np.float32),
        lambda z: fn.data.unstandardize(y_stats, z.astype(np.float64)),
        {"x": x_stats, "y": y_stats},
    )


def run(*, recipe: str = "tutorial", data=None, epochs: int | None = None, seed: int = 0, out=None,
        progress: str = "auto", plots: bool = True, stream: TextIO | None = None,
        dropout: float = 0.0, batchnorm: bool = False) -> ExampleResult:
    """Train an airfoil recipe and write its results.

    Args:
        recipe: "tutorial" or "better" (see the module docstring); "seed", the old
            name of "tutorial", gives a DeprecationWarning.
        data: path to ``airfoil_self_noise.dat``; default: ``fn.datasets.airfoil()``'s
            cache, downloading it once if needed.
        epochs: overrides the recipe's epochs (tutorial 10000, better 600); the better
            recipe's schedule then spans the given epochs.
        seed: the key ``fn.random.key(seed)`` is split three ways: data split, init,
            shuffling.
        out: output folder (default ``runs/airfoil``).
        progress: fit's progress mode: "auto", "bar", "lines" or "silent".
        plots: draw the PNGs (needs matplotlib).
        stream: where to print (stdout by default).
        dropout: a Dropout of this rate after each ResNet block (better recipe only).
        batchnorm: a BatchNorm after the first Linear (better recipe only).

    Returns:
        an :class:`~funcnn.examples.ExampleResult`; ``metrics["test_rmse_db"]`` is the
        best model's test RMSE in dB.
    """
    if recipe in OLD_RECIPE_NAMES:
        new = OLD_RECIPE_NAMES[recipe]
        warnings.warn(f"airfoil: recipe {recipe!r} is now called {new!r}; {recipe!r} will be "
                      "removed", DeprecationWarning, stacklevel=2)
        recipe = new
    if recipe not in RECIPES:
        raise ValueError(f"airfoil: recipe must be one of {sorted(RECIPES)}, got {recipe!r}")
    if recipe != "better" and (dropout or batchnorm):
        raise ValueError("airfoil: --dropout and --batchnorm change the better recipe's model; "
                         "use them with --recipe better")
    settings = RECIPES[recipe]
    if epochs is not None:
        settings = settings._replace(epochs=epochs)
    stream = sys.stdout if stream is None else stream
    folder = output_folder(out, "airfoil")
    x, y = fn.datasets.airfoil(data)
    split_key, init_key, fit_key = fn.random.split(seed, 3)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = fn.data.split(split_key, x, y)
    enc = _encoding(recipe, x_train, y_train)
    model = seed_model() if recipe == "tutorial" else better_model(dropout=dropout, batchnorm=batchnorm)
    params = model.init(init_key)
    steps = fn.data.num_batches(len(x_train), settings.batch_size)
    if recipe == "tutorial":
        optimizer = fn.optim.adam(settings.lr, weight_decay=settings.weight_decay)
    else:
        optimizer = better_optimizer(settings, steps)
    opt_name = "adam" if recipe == "tutorial" else "adamw"
    say(stream, f"airfoil ({recipe} recipe): {fn.tree.size(params)} params; split "
                f"{len(x_train)}/{len(x_val)}/{len(x_test)}; {settings.epochs} epochs, batch "
                f"{settings.batch_size}, {opt_name} lr {settings.lr} "
                f"weight_decay {settings.weight_decay}, patience {settings.patience}, seed {seed}"
                + (f", dropout {dropout}" if dropout else "") + (", batchnorm" if batchnorm else ""))

    try:
        result = fn.fit(model, fn.losses.mse, optimizer, params,
                        (enc.inputs(x_train), enc.targets(y_train)),
                        val=(enc.inputs(x_val), enc.targets(y_val)), epochs=settings.epochs,
                        batch_size=settings.batch_size, key=fit_key, keep_best=KEEP_BEST,
                        patience=settings.patience, progress=progress, stream=stream)
    except NonFiniteLossError as error:
        say(stream, f"airfoil: {error}; keeping the best models seen before it")
        result = error.result
    if not result.best:
        raise KeyboardInterrupt(NOTHING_SAVED)  # stopped before the first epoch finished

    def predict(m, inputs):  # m: a BestModel (params and the BatchNorm statistics with them)
        if not m.state:
            return enc.predictions(model.apply(m.params, enc.inputs(inputs)))
        return enc.predictions(model.apply(m.params, enc.inputs(inputs), state=m.state)[0])

    best = result.best[0]
    test_rmse = [rmse(predict(m, x_test), y_test) for m in result.best]
    metrics = {
        "example": "airfoil", "recipe": recipe, "seed": seed, "epochs": settings.epochs,
        "dropout": dropout, "batchnorm": batchnorm,
        "epochs_run": len(result.history["train_loss"]), "stop_reason": result.stop_reason,
        "test_rmse_db": test_rmse[0],
        "val_rmse_db": rmse(predict(best, x_val), y_val),
        "train_rmse_db": rmse(predict(best, x_train), y_train),
        "best_epoch": best.epoch,
        "best_k": [{"val_loss": m.loss, "epoch": m.epoch, "test_rmse_db": r}
                   for m, r in zip(result.best, test_rmse)],
        "baseline_test_rmse_db": rmse(np.full_like(y_test, y_train.mean()), y_test),
        "train_seconds": float(np.sum(result.history["time"])),
    }
    say(stream, f"airfoil ({recipe} recipe): test RMSE of the best model (epoch "
                f"{best.epoch}): {test_rmse[0]:.3f} dB  (val {metrics['val_rmse_db']:.3f} dB, "
                f"train {metrics['train_rmse_db']:.3f} dB; predicting the training mean: "
                f"{metrics['baseline_test_rmse_db']:.3f} dB)")
    files = write_results(folder, best.params, metrics, best.state)
    if enc.stats is not None:
        files["standardizer"] = folder / STANDARDIZER
        fn.save(files["standardizer"], enc.stats)
    if plots:
        files.update(_draw(folder, predict, result, test_rmse, x_test, y_test, recipe, stream))
    for label, path in files.items():
        say(stream, f"  {label}: {path}")
    return ExampleResult(metrics, result, files)


def _draw(folder, predict, result, test_rmse, x_test, y_test, recipe, stream):
    if not plotting.available():
        say(stream, plotting.MISSING)
        return {}
    best = [(r, predict(m, x_test)) for m, r in zip(result.best, test_rmse)]
    units = "dB^2" if recipe == "tutorial" else "standardized units"
    return {
        "predictions": plotting.predicted_vs_actual(
            folder / PREDICTIONS_PNG, y_test, best,
            title=f"airfoil ({recipe} recipe): Test Data: Predicted vs Actual"),
        "loss": plotting.loss_curves(
            folder / LOSS_PNG, result.history, best_epoch=result.best[0].epoch,
            ylabel=f"0.5 * mean squared error ({units})",
            title=f"airfoil ({recipe} recipe): loss per epoch"),
    }
