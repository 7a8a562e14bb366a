#!/usr/bin/env bash
# Reproduce the numbers of docs/quality.md (about 2 hours on 2 busy cores; each line
# can run on its own, in any order). Needs: pip install -e '.[plot]' torch==2.13.0
# Usage: bash benchmarks/quality/run_all.sh [path/to/airfoil_self_noise.dat]
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1  # one core per run
DATA="${1:-../shared/data/airfoil_self_noise.dat}"
R=benchmarks/quality/results
RUNS=runs/quality

python benchmarks/quality/funcnn_runs.py sine-mlp --runs $RUNS --out $R/funcnn-sine-mlp.json
python benchmarks/quality/funcnn_runs.py sine-resnet --runs $RUNS --out $R/funcnn-sine-resnet.json
python benchmarks/quality/funcnn_runs.py airfoil --recipe seed --data "$DATA" --runs $RUNS --out $R/funcnn-airfoil-seed.json
python benchmarks/quality/funcnn_runs.py airfoil --recipe better --data "$DATA" --runs $RUNS --out $R/funcnn-airfoil-better.json

python benchmarks/quality/torch_twins.py sine-mlp --out $R/torch-sine-mlp.json
python benchmarks/quality/torch_twins.py sine-resnet --out $R/torch-sine-resnet.json
python benchmarks/quality/torch_twins.py airfoil --data "$DATA" --out $R/torch-airfoil-seed.json

# More seeds for the sine MLP, whose 3-seed medians are dominated by seed noise.
python benchmarks/quality/funcnn_runs.py sine-mlp --seeds 3 4 5 6 7 8 9 --runs $RUNS --out $R/funcnn-sine-mlp-seeds3-9.json
python benchmarks/quality/torch_twins.py sine-mlp --seeds 3 4 5 6 7 8 9 --out $R/torch-sine-mlp-seeds3-9.json
# More seeds for the airfoil seed recipe (one process per seed: they run in parallel).
for s in 3 4 5; do
  python benchmarks/quality/funcnn_runs.py airfoil --recipe seed --seeds $s --data "$DATA" --runs $RUNS --out $R/funcnn-airfoil-seed-$s.json &
  python benchmarks/quality/torch_twins.py airfoil --seeds $s --data "$DATA" --out $R/torch-airfoil-seed-$s.json &
done
wait
python benchmarks/quality/summarize.py --merge $R airfoil-seed-seeds3-5 airfoil-seed-3 airfoil-seed-4 airfoil-seed-5
# What each part of the better recipe buys.
python benchmarks/quality/airfoil_ablation.py --data "$DATA" --out $R/airfoil-ablation.json
# Same init, same batches: funcnn and torch step for step (float32 and float64).
(cd benchmarks/quality && python trajectory.py sine-mlp --epochs 30)
# Digits: the CNN example and its twin (same init, batches and dropout masks), seeds 0-9,
# the float64 check, and the recipe search on the validation split (about 15 minutes).
python benchmarks/quality/funcnn_runs.py digits --runs $RUNS --out $R/funcnn-digits.json
python benchmarks/quality/digits_twin.py --out $R/torch-digits.json
python benchmarks/quality/funcnn_runs.py digits --seeds 3 4 5 6 7 8 9 --runs $RUNS --out $R/funcnn-digits-seeds3-9.json
python benchmarks/quality/digits_twin.py --seeds 3 4 5 6 7 8 9 --out $R/torch-digits-seeds3-9.json
python benchmarks/quality/digits_twin.py --check-epochs 5
python benchmarks/quality/digits_recipes.py --out $R/digits-recipes.json
python benchmarks/quality/digits_recipes.py --seeds 0 1 2 3 4 5 6 7 8 9 --variants start \
  "no BatchNorm" "100 epochs" "peak lr 3e-2 (the recipe)" "no BatchNorm, peak lr 3e-2" \
  --out $R/digits-recipes-finalists.json

python benchmarks/quality/summarize.py $R
