"""funcnn and its PyTorch twin from the same init on the same batches: per-epoch val loss.

Both sides start from funcnn's initial params and visit the batches in ``fn.fit``'s
order, so they compute the same sequence of Adam steps; they differ only in rounding
(matmul summation order). This prints the validation loss after each of the first
epochs for both, in float32 (the examples' dtype) and float64, to show where rounding
makes the two trajectories part: the training problem is chaotic at lr 0.01, so two
float32 runs that differ in the 7th digit after the first epoch end up as different
(equally good) minima; in float64 they stay together far longer.

    python benchmarks/quality/trajectory.py sine-mlp --epochs 30
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch_twins as twins

import funcnn as fn


def fn_model(arch: str, dtype) -> fn.Layer:
    L = fn.layers
    if arch == "mlp":
        return fn.serial(L.Linear(1, 16, dtype=dtype), L.ReLU(), L.Linear(16, 16, dtype=dtype),
                         L.ReLU(), L.Linear(16, 1, dtype=dtype))
    return fn.serial(L.Linear(1, 16, dtype=dtype), L.ReLU(),
                     *[L.ResNetBlock(16, dtype=dtype) for _ in range(3)],
                     L.Linear(16, 1, dtype=dtype))


def curves(arch: str, epochs: int, dtype, seed: int = 0):
    data = fn.datasets.sine(dtype=dtype)
    init_key, fit_key = fn.random.split(seed)
    model = fn_model(arch, dtype)
    opt = fn.optim.adam(0.01, weight_decay=1e-6)
    ours = fn.fit(model, fn.losses.mse, opt, model.init(init_key), (data.x_train, data.y_train),
                  val=(data.x_val, data.y_val), epochs=epochs, batch_size=64, key=fit_key,
                  progress="silent").history["val_loss"]
    net = twins.sine_mlp() if arch == "mlp" else twins.sine_resnet()
    net = net.to(torch.float64) if dtype == np.float64 else net
    twins.load_funcnn_init(net, model, init_key)
    x, y, x_val, y_val = (torch.from_numpy(np.ascontiguousarray(a)) for a in data)
    opt = torch.optim.Adam(net.parameters(), lr=0.01, weight_decay=1e-6)
    theirs = []
    for epoch in range(epochs):
        order = torch.from_numpy(fn.random.permutation(fn.random.fold_in(fit_key, epoch), len(x)))
        for i in range(0, len(x), 64):
            index = order[i:i + 64]
            opt.zero_grad(set_to_none=True)
            twins.half_mse(net(x[index]), y[index]).backward()
            opt.step()
        with torch.no_grad():
            theirs.append(float(twins.half_mse(net(x_val), y_val)))
    return ours, np.array(theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=("sine-mlp", "sine-resnet"))
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for dtype in (np.float32, np.float64):
        ours, theirs = curves(args.task.removeprefix("sine-"), args.epochs, dtype)
        print(f"{args.task}, {np.dtype(dtype).name}: validation loss after each epoch")
        print("epoch  funcnn          torch           relative difference")
        for e, (a, b) in enumerate(zip(ours, theirs), start=1):
            print(f"{e:5d}  {a:.9e}  {b:.9e}  {abs(a - b) / abs(b):.1e}")


if __name__ == "__main__":
    main()
