"""PyTorch twins of the seed's experiments, for docs/quality.md.

The same model, data, split, init scheme and hyperparameters as ``funcnn.examples``,
trained with ``torch.optim.Adam``:

- float32 params; weights ``normal(0, sqrt(2 / fan_in))`` (He normal), biases zero;
- loss ``0.5 * mean((pred - y)**2)`` (the seed's), Adam with coupled weight decay
  (``torch.optim.Adam(weight_decay=...)`` adds ``wd * p`` to the gradient, as the seed
  and ``fn.optim.adam`` do);
- the training set reshuffled every epoch (``torch.randperm``), the last batch short;
- the best model by validation loss after each epoch, as ``fn.fit`` keeps it.

``--init funcnn`` (default) starts from the very params ``funcnn.examples`` draws for
the same ``--seed`` and visits the batches in the same order (``fn.random`` keys, as
``fn.fit`` derives them), so each seed is a paired comparison: the two runs differ only
in floating-point rounding (which still grows over tens of thousands of steps).
``--init torch`` draws the init (He normal) and the shuffling from torch's own RNG.
The airfoil split is always funcnn's for the same seed, so both sides train and test
on the same rows. Needs ``pip install torch==2.13.0``.

    python benchmarks/quality/torch_twins.py sine-mlp --seeds 0 1 2 --out results/torch-mlp.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import funcnn as fn
from funcnn.examples import airfoil as fn_airfoil
from funcnn.examples import sine as fn_sine


class Skip(nn.Sequential):
    """``x + layers(x)``, the seed's SkipConnection; keys like ``fn.residual(fn.serial(...))``."""

    def forward(self, x):
        return x + super().forward(x)


def resnet_block(features: int) -> nn.Module:
    return Skip(nn.Linear(features, features), nn.ReLU(), nn.Linear(features, features))


def sine_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 1))


def sine_resnet() -> nn.Module:
    return nn.Sequential(nn.Linear(1, 16), nn.ReLU(), resnet_block(16), resnet_block(16),
                         resnet_block(16), nn.Linear(16, 1))


def airfoil_seed_model() -> nn.Module:
    inner = Skip(nn.Linear(8, 16), nn.ReLU(), resnet_block(16), nn.ReLU(), nn.Linear(16, 8))
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), inner, nn.ReLU(), nn.Linear(8, 1))


def he_init(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / module.in_features))
            nn.init.zeros_(module.bias)


def half_mse(pred, target):
    return 0.5 * torch.mean((pred - target) ** 2)


def load_funcnn_init(model: nn.Module, fn_model: fn.Layer, init_key) -> None:
    """Copy funcnn's initial params (same keys and layout) into the torch model."""
    state = fn.interop.to_torch_state_dict(fn_model.init(init_key))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})


def train(model, x, y, x_val, y_val, *, epochs, batch_size, lr, weight_decay, seed, match):
    """Mini-batch Adam; returns (best val loss, best epoch, best state_dict, seconds).

    ``match``: None for torch's own RNG, else ``(fn_model, init_key, fit_key)`` to start
    from funcnn's init and use ``fn.fit``'s batch order.
    """
    if match is None:
        torch.manual_seed(seed)
        he_init(model)
        gen = torch.Generator().manual_seed(seed + 10_000)
    else:
        fn_model, init_key, fit_key = match
        load_funcnn_init(model, fn_model, init_key)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    best = (math.inf, -1, None)
    start = time.perf_counter()
    n = len(x)
    for epoch in range(epochs):
        if match is None:
            order = torch.randperm(n, generator=gen)
        else:
            order = torch.from_numpy(fn.random.permutation(fn.random.fold_in(fit_key, epoch), n))
        for i in range(0, n, batch_size):
            index = order[i:i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = half_mse(model(x[index]), y[index])
            loss.backward()
            opt.step()
        with torch.no_grad():
            val = float(half_mse(model(x_val), y_val))
        if val < best[0]:
            best = (val, epoch, {k: v.clone() for k, v in model.state_dict().items()})
    return best[0], best[1], best[2], time.perf_counter() - start


def tensor(a) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def run_sine(arch: str, seed: int, epochs: int, init: str) -> dict:
    data = fn.datasets.sine(dtype=np.float32)
    model = sine_mlp() if arch == "mlp" else sine_resnet()
    init_key, fit_key = fn.random.split(seed)  # as funcnn.examples.sine derives them
    fn_model = fn_sine.mlp() if arch == "mlp" else fn_sine.resnet()
    match = (fn_model, init_key, fit_key) if init == "funcnn" else None
    val, epoch, _, seconds = train(model, tensor(data.x_train), tensor(data.y_train),
                                   tensor(data.x_val), tensor(data.y_val), epochs=epochs,
                                   batch_size=64, lr=0.01, weight_decay=1e-6, seed=seed,
                                   match=match)
    return {"seed": seed, "epochs": epochs, "init": init, "val_mse": val, "best_epoch": epoch + 1,
            "train_seconds": seconds}


def run_airfoil(seed: int, epochs: int, data: str | None, init: str) -> dict:
    x, y = fn.datasets.airfoil(data)
    split_key, init_key, fit_key = fn.random.split(seed, 3)  # as funcnn.examples.airfoil
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = fn.data.split(split_key, x, y)
    model = airfoil_seed_model()
    match = (fn_airfoil.seed_model(), init_key, fit_key) if init == "funcnn" else None
    val, epoch, state, seconds = train(model, tensor(x_train), tensor(y_train), tensor(x_val),
                                       tensor(y_val), epochs=epochs, batch_size=16, lr=1e-3,
                                       weight_decay=1e-6, seed=seed, match=match)
    model.load_state_dict(state)
    with torch.no_grad():
        pred = model(tensor(x_test)).double().numpy()
    test_rmse = float(np.sqrt(np.mean((pred - y_test) ** 2)))
    return {"seed": seed, "epochs": epochs, "init": init, "test_rmse_db": test_rmse,
            "val_loss": val,
            "best_epoch": epoch + 1, "train_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=("sine-mlp", "sine-resnet", "airfoil"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None,
                        help="default: the seed's (sine 1000, airfoil 10000)")
    parser.add_argument("--data", default=None, help="airfoil_self_noise.dat")
    parser.add_argument("--init", choices=("funcnn", "torch"), default="funcnn",
                        help="funcnn: same init params and batch order as funcnn (default); "
                             "torch: torch's own RNG")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = []
    for seed in args.seeds:
        if args.task == "airfoil":
            runs.append(run_airfoil(seed, args.epochs or 10000, args.data, args.init))
        else:
            arch = args.task.removeprefix("sine-")
            runs.append(run_sine(arch, seed, args.epochs or 1000, args.init))
        print(json.dumps(runs[-1]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    report = {"task": args.task, "framework": "torch " + torch.__version__, "runs": runs}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
