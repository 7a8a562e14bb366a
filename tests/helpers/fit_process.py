"""One training process for tests/test_reliability_resume_process.py.

    python fit_process.py CHECKPOINT_DIR OUT [--resume]

Trains a fixed model on a fixed problem with ``fn.fit(..., checkpoint_dir=...)``,
printing one progress line per epoch, then saves the result (params, optimizer state,
history and best-k) to OUT with ``fn.save`` and prints ``done <stop_reason>``. The test
kills it (SIGKILL) or interrupts it (SIGINT, i.e. Ctrl-C) partway and runs it again with
``--resume``. OUT is written only by a run that trained every epoch.
"""

from __future__ import annotations

import sys

import numpy as np

import funcnn as fn

EPOCHS = 8


def problem():
    x = fn.random.uniform(0, (4096, 1), 0.0, 2 * np.pi, np.float32)
    xv = fn.random.uniform(1, (256, 1), 0.0, 2 * np.pi, np.float32)
    return (x, np.sin(x)), (xv, np.sin(xv))


def main() -> int:
    folder, out = sys.argv[1], sys.argv[2]
    resume = "--resume" in sys.argv[3:]
    model = fn.serial(fn.Linear(1, 32), fn.Tanh(), fn.Linear(32, 32), fn.Tanh(), fn.Linear(32, 1))
    train, val = problem()
    try:
        result = fn.fit(model, fn.losses.mse, fn.optim.adam(3e-3), model.init(7), train, val=val,
                        epochs=EPOCHS, batch_size=8, key=11, progress="lines",
                        checkpoint_dir=folder, resume=resume)
        if result.stop_reason is not None:
            print(f"done {result.stop_reason}", flush=True)
            return 0
        fn.save(out, {
            "params": result.params,
            "opt_state": result.opt_state,
            "history": {k: result.history[k] for k in ("train_loss", "val_loss", "lr")},
            "best": {"loss": np.array([m.loss for m in result.best]),
                     "epoch": np.array([m.epoch for m in result.best]),
                     "params": {str(i): m.params for i, m in enumerate(result.best)}},
        })
    except KeyboardInterrupt:  # Ctrl-C outside fit (e.g. while saving OUT): nothing lost
        print("done interrupted-outside-fit", flush=True)
        return 130
    print(f"done {result.stop_reason}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
