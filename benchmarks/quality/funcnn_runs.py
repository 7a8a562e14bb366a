"""Run a funcnn example over several seeds and collect its metrics, for docs/quality.md.

Each seed is one ``python -m funcnn.examples`` run (in-process), writing its own folder
``<runs>/<task>-seed<S>``; the metrics of all seeds go to one JSON file.

    python benchmarks/quality/funcnn_runs.py sine-mlp --seeds 0 1 2 --out results/funcnn-mlp.json
    python benchmarks/quality/funcnn_runs.py airfoil --recipe better --data PATH --out ...
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from funcnn import examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=examples.NAMES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: the example's")
    parser.add_argument("--recipe", choices=("seed", "better"), default=None,
                        help="airfoil only; seed: the tutorial recipe (the result files' name)")
    parser.add_argument("--data", default=None, help="airfoil_self_noise.dat (airfoil only)")
    parser.add_argument("--runs", default="runs/quality", help="folder for each run's outputs")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()
    options = {} if args.epochs is None else {"epochs": args.epochs}
    if args.task == "airfoil":
        options.update(recipe="better" if args.recipe == "better" else "tutorial", data=args.data)
    name = args.task + (f"-{args.recipe}" if args.recipe else "")
    runs = []
    for seed in args.seeds:
        out = Path(args.runs) / f"{name}-seed{seed}"
        result = examples.run(args.task, seed=seed, out=out, progress="silent", plots=True,
                              **options)
        runs.append(result.metrics)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"task": name, "framework": "funcnn", "runs": runs,
                                          "threads": os.environ.get("OPENBLAS_NUM_THREADS")},
                                         indent=2) + "\n")


if __name__ == "__main__":
    main()
