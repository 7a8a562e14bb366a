"""Print the quality table of docs/quality.md from the JSON files that run_all.sh writes.

    python benchmarks/quality/summarize.py [benchmarks/quality/results]
    python benchmarks/quality/summarize.py --merge FOLDER TARGET PART...

``--merge`` joins the runs of ``{funcnn,torch}-PART.json`` into ``{funcnn,torch}-TARGET.json``
(for seeds that were run as separate processes).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

MLP_10 = ("sine-mlp", "sine-mlp-seeds3-9")
AIRFOIL_6 = ("airfoil-seed", "airfoil-seed-seeds3-5")
DIGITS_10 = ("digits", "digits-seeds3-9")
ROWS = [
    # (label, metric, result files (without the funcnn-/torch- prefix), has a twin, format);
    # lower is better, but for the metrics in HIGHER_IS_BETTER
    ("sine MLP: validation MSE", "val_mse", ("sine-mlp",), True, "{:.3g}"),
    ("sine MLP, seeds 0-9: validation MSE", "val_mse", MLP_10, True, "{:.3g}"),
    ("sine ResNet: validation MSE", "val_mse", ("sine-resnet",), True, "{:.3g}"),
    ("airfoil, tutorial recipe: test RMSE (dB)", "test_rmse_db", ("airfoil-seed",), True, "{:.2f}"),
    ("airfoil, tutorial recipe, seeds 0-5: test RMSE (dB)", "test_rmse_db", AIRFOIL_6, True,
     "{:.2f}"),
    ("airfoil, better recipe: test RMSE (dB)", "test_rmse_db", ("airfoil-better",), False,
     "{:.2f}"),
    ("digits CNN: test accuracy (%, higher is better)", "test_accuracy", ("digits",), True,
     "{:.2%}"),
    ("digits CNN, seeds 0-9: test accuracy (%)", "test_accuracy", DIGITS_10, True, "{:.2%}"),
]
HIGHER_IS_BETTER = {"test_accuracy"}


def values(folder: Path, framework: str, names: tuple[str, ...], metric: str) -> list[float]:
    runs = []
    for name in names:
        path = folder / f"{framework}-{name}.json"
        if not path.exists():
            return []
        runs += json.loads(path.read_text())["runs"]
    return [run[metric] for run in sorted(runs, key=lambda r: r["seed"])]


def cell(vals: list[float], fmt: str) -> str:
    if not vals:
        return "not run"
    if len(vals) > 3:
        shown = f"{len(vals)} seeds"
    else:  # a percent sign on the median only
        shown = ", ".join(fmt.format(v).rstrip("%") for v in vals)
    return f"**{fmt.format(statistics.median(vals))}** ({shown})"


def merge(folder: Path, target: str, parts: list[str]) -> None:
    for framework in ("funcnn", "torch"):
        reports = [json.loads((folder / f"{framework}-{part}.json").read_text()) for part in parts]
        merged = dict(reports[0], runs=[run for report in reports for run in report["runs"]])
        (folder / f"{framework}-{target}.json").write_text(json.dumps(merged, indent=2) + "\n")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--merge"]:
        merge(Path(argv[1]), argv[2], argv[3:])
        return 0
    folder = Path(argv[0]) if argv else Path(__file__).resolve().parent / "results"
    print("| task | funcnn: median (per seed) | PyTorch twin: median (per seed) "
          "| seeds where funcnn is better |")
    print("| --- | --- | --- | --- |")
    for label, metric, names, twin, fmt in ROWS:
        ours = values(folder, "funcnn", names, metric)
        theirs = values(folder, "torch", names, metric) if twin else []
        wins = "n/a"
        if ours and len(theirs) == len(ours):
            sign = -1 if metric in HIGHER_IS_BETTER else 1
            ties = sum(a == b for a, b in zip(ours, theirs))
            wins = f"{sum(sign * a < sign * b for a, b in zip(ours, theirs))} of {len(ours)}"
            wins += f" ({ties} tied)" if ties else ""
        twin_cell = cell(theirs, fmt) if twin else "n/a"
        print(f"| {label} | {cell(ours, fmt)} | {twin_cell} | {wins} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
