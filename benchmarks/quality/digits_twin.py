"""PyTorch twin of ``python -m funcnn.examples digits``, for docs/quality.md.

The same experiment in torch, paired with funcnn's run of the same ``--seed``:

- the same layers (``nn.Sequential`` of ``Conv2d(1, 16, 3, padding=1)``, ``BatchNorm2d(16)``,
  ..., ``Linear(128, 10)``; its ``state_dict`` has funcnn's keys), starting from **the
  very params funcnn draws** (He normal) and funcnn's initial BatchNorm buffers;
- the same fixed split, the same batches in the same order (``fn.fit``'s
  ``fn.random.permutation(fold_in(fit_key, epoch), n)``), and **the same dropout masks**:
  each training batch's mask is the one funcnn's ``Dropout`` draws from fit's key for
  that batch (``fn.train.batch_key``, then ``serial``'s split of it per child);
- ``torch.optim.AdamW`` with funcnn's hyperparameters, its lr set before every step to
  the value of funcnn's warm-up + cosine schedule for that step;
- ``F.cross_entropy`` (mean over the batch); BatchNorm in training mode for the
  steps and evaluation mode (running statistics) for validation and test;
- the best model by validation loss after each epoch (ties keep the earlier epoch),
  whose test accuracy is reported.

So the two sides run the same algorithm and differ only in floating-point rounding.
``--check-epochs N`` shows that: it trains both sides in float64 for N epochs and prints
their validation losses side by side (they agree to about 10 digits).
Needs ``pip install torch==2.13.0``.

    python benchmarks/quality/digits_twin.py --out benchmarks/quality/results/torch-digits.json
    python benchmarks/quality/digits_twin.py --check-epochs 5
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import funcnn as fn
from funcnn.examples import digits as fn_digits
from funcnn.train import batch_key


class GivenDropout(nn.Module):
    """Dropout whose mask (zeros and ``1 / (1 - rate)``) is set from outside before each
    training step; the identity in evaluation mode, as ``nn.Dropout``."""

    def __init__(self):
        super().__init__()
        self.mask = None

    def forward(self, x):
        return x * self.mask if self.training else x


def torch_cnn() -> nn.Sequential:
    """The ``nn.Sequential`` twin of ``fn_digits.cnn()``, layer for layer (same indices)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        GivenDropout(), nn.Linear(128, fn_digits.CLASSES),
    )


def dropout_masks(fn_model: fn.Layer, fit_key, epoch: int, batch: int, shapes: dict[int, tuple],
                  dtype) -> dict:
    """The scaled masks funcnn's Dropout layers (at the indices of ``shapes``) draw in
    training batch ``batch`` of ``epoch`` (both from 0) of ``fn.fit(..., key=fit_key)``,
    for inputs of ``dtype`` (the scale ``1 / (1 - rate)`` is rounded to it)."""
    noise_key = fn.random.split(fit_key, 2)[1]  # as fit derives it
    child_keys = fn.random.split(batch_key(noise_key, epoch, batch), len(fn_model.children))
    return {i: fn_model.children[i].apply({}, np.ones(shape, dtype), key=child_keys[i], train=True)
            for i, shape in shapes.items()}


def train(seed: int, epochs: int, dtype=np.float32, threads: int = 1) -> dict:
    """One paired run: returns the metrics (and the per-epoch validation losses)."""
    torch.set_num_threads(threads)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    parts = {name: fn.datasets.digits(name, dtype=dtype) for name in ("train", "val", "test")}
    (x, y), (x_val, y_val), (x_test, y_test) = (
        (torch.from_numpy(a), torch.from_numpy(b)) for a, b in parts.values())
    fn_model = fn_digits.cnn(dtype=dtype)
    init_key, fit_key = fn.random.split(seed)  # as funcnn.examples.digits derives them
    net = torch_cnn().to(tdtype)
    start = fn.interop.to_torch_state_dict(fn_model.init(init_key), fn_model.init_state())
    net.load_state_dict({k: torch.from_numpy(v) for k, v in start.items()})  # strict: same keys
    drops = [i for i, m in enumerate(net) if isinstance(m, GivenDropout)]
    assert [fn_model.children[i].name for i in drops] == [f"Dropout(rate={fn_digits.DROPOUT})"]

    n, batch_size = len(x), fn_digits.BATCH_SIZE
    steps = fn.data.num_batches(n, batch_size)
    schedule = fn_digits.lr_schedule(epochs, steps)
    opt = torch.optim.AdamW(net.parameters(), lr=schedule(0), weight_decay=fn_digits.WEIGHT_DECAY)
    best = (math.inf, 0, None)
    val_losses = []
    started = time.perf_counter()
    step = 0
    for epoch in range(epochs):
        net.train()
        order = torch.from_numpy(fn.random.permutation(fn.random.fold_in(fit_key, epoch), n))
        for batch, i in enumerate(range(0, n, batch_size)):
            index = order[i:i + batch_size]
            shapes = {d: (len(index), 128) for d in drops}
            for d, mask in dropout_masks(fn_model, fit_key, epoch, batch, shapes, dtype).items():
                net[d].mask = torch.from_numpy(mask)
            for group in opt.param_groups:
                group["lr"] = schedule(step)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x[index]), y[index]).backward()
            opt.step()
            step += 1
        net.eval()
        with torch.no_grad():
            val = float(F.cross_entropy(net(x_val), y_val))
        val_losses.append(val)
        if val < best[0]:
            best = (val, epoch + 1, {k: v.clone() for k, v in net.state_dict().items()})
    seconds = time.perf_counter() - started
    net.load_state_dict(best[2])
    net.eval()
    with torch.no_grad():
        test_logits = net(x_test)
        test_accuracy = float((test_logits.argmax(-1) == y_test).double().mean())
        val_accuracy = float((net(x_val).argmax(-1) == y_val).double().mean())
        test_loss = float(F.cross_entropy(test_logits, y_test))
    return {"seed": seed, "epochs": epochs, "init": "funcnn", "test_accuracy": test_accuracy,
            "val_accuracy": val_accuracy, "val_loss": best[0], "test_loss": test_loss,
            "best_epoch": best[1], "train_seconds": seconds, "val_loss_per_epoch": val_losses}


def check(epochs: int, seed: int) -> None:
    """Both sides in float64 for ``epochs`` epochs: validation loss after each."""
    ours_model = fn_digits.cnn(dtype=np.float64)
    init_key, fit_key = fn.random.split(seed)
    steps = fn.data.num_batches(len(fn.datasets.digits("train")[1]), fn_digits.BATCH_SIZE)
    data = {name: fn.datasets.digits(name, dtype=np.float64) for name in ("train", "val")}
    ours = fn.fit(ours_model, fn.losses.softmax_cross_entropy, fn_digits.optimizer(epochs, steps),
                  ours_model.init(init_key), data["train"], val=data["val"], epochs=epochs,
                  batch_size=fn_digits.BATCH_SIZE, key=fit_key, state=ours_model.init_state(),
                  progress="silent").history["val_loss"]
    theirs = train(seed, epochs, dtype=np.float64)["val_loss_per_epoch"]
    print("| epoch | funcnn (float64) | torch (float64) | rel. diff. |")
    print("| ---: | --- | --- | ---: |")
    for epoch, (a, b) in enumerate(zip(ours, theirs), start=1):
        print(f"| {epoch} | {a:.12e} | {b:.12e} | {abs(a - b) / abs(b):.1e} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=fn_digits.EPOCHS,
                        help=f"default: the example's ({fn_digits.EPOCHS})")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--check-epochs", type=int, default=None, metavar="N",
                        help="instead: both sides in float64 for N epochs (seed: the first "
                             "of --seeds)")
    parser.add_argument("--out", default=None,
                        help="JSON file to write (required unless --check-epochs)")
    args = parser.parse_args()
    if args.check_epochs:
        check(args.check_epochs, args.seeds[0])
        return
    if args.out is None:
        parser.error("--out is required")
    runs = []
    for seed in args.seeds:
        runs.append(train(seed, args.epochs, threads=args.threads))
        shown = {k: v for k, v in runs[-1].items() if k != "val_loss_per_epoch"}
        print(json.dumps(shown), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    report = {"task": "digits", "framework": "torch " + torch.__version__, "runs": runs}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
