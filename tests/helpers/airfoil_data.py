"""Where the tests find the UCI airfoil file; they never download it.

The first of these that exists, in the loader's own order (``fn.datasets.airfoil()``):

1. ``$FUNCNN_DATA_DIR/airfoil_self_noise.dat`` (``~/.cache/funcnn/...`` when the variable
   is unset): where ``fn.datasets.airfoil()`` caches its one download;
2. ``../shared/data/airfoil_self_noise.dat`` beside the repository.

Tests that need the file skip with :data:`MISSING` when neither exists. Read once, at
import, so a test that points ``FUNCNN_DATA_DIR`` elsewhere changes nothing here.
"""

from __future__ import annotations

from pathlib import Path

from funcnn import datasets

CANDIDATES = (
    datasets.default_cache_dir() / datasets.AIRFOIL_FILENAME,
    Path(__file__).resolve().parents[3] / "shared" / "data" / datasets.AIRFOIL_FILENAME,
)
AIRFOIL = next((path for path in CANDIDATES if path.exists()), CANDIDATES[-1])
"""The airfoil file the tests use (it may not exist: see :data:`AVAILABLE`)."""
AVAILABLE = AIRFOIL.exists()
MISSING = (
    f"no airfoil data at {' or '.join(map(str, CANDIDATES))}: set {datasets.ENV_DATA_DIR} to a "
    "folder holding airfoil_self_noise.dat, or download it once with "
    "python -c 'import funcnn; funcnn.datasets.airfoil()'"
)
