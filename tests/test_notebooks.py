"""The tutorial notebooks run top to bottom (with FUNCNN_NOTEBOOK_EPOCHS=2), so they never rot.

Each notebook is executed with nbclient in a temporary folder on a ``python3`` kernel
of this very interpreter (ipykernel from the same environment), strict: a first cell
injected before the notebook's own turns warnings into errors and numpy floating-point
errors into exceptions, as tests/conftest.py does for the test process. The notebooks
are also checked to be committed without outputs and to match their generator.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.airfoil_data import AIRFOIL, AVAILABLE, MISSING

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))

STRICT = """
import sys, warnings
import numpy as np
assert sys.executable == {executable!r}, sys.executable
warnings.simplefilter("error")
np.seterr(all="raise", under="ignore")
"""


def test_there_are_five_notebooks():
    assert [p.name for p in NOTEBOOKS] == [
        "01_xor.ipynb", "02_sine_mlp.ipynb", "03_sine_resnet.ipynb", "04_airfoil.ipynb",
        "05_digits_cnn.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.id


def test_notebooks_match_their_generator():
    proc = subprocess.run([sys.executable, str(NOTEBOOK_DIR / "build_notebooks.py"), "--check"],
                          check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    if "airfoil" in path.name:
        if not AVAILABLE:
            pytest.skip(MISSING)
        monkeypatch.setenv("FUNCNN_AIRFOIL_PATH", str(AIRFOIL))
    monkeypatch.setenv("FUNCNN_NOTEBOOK_EPOCHS", "2")
    path_entries = [str(REPO), os.environ.get("PYTHONPATH")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, path_entries)))
    monkeypatch.setenv("FUNCNN_DATA_DIR", str(tmp_path / "cache"))  # never the user's cache
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(STRICT.format(executable=sys.executable)))
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs
              if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert images, "every notebook shows its plots inline"
    if "digits" in path.name:  # torch is in the test extra: its cells ran
        text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
        assert "the same weights in funcnn: test accuracy" in text
        assert "PyTorch is not installed" not in text


def test_digits_notebook_torch_cells_without_torch_say_so(monkeypatch, capsys):
    """The PyTorch cells, run where ``import torch`` fails, print why they skip and raise
    nothing (torch is a test-time dependency, not a runtime one)."""
    nb = nbformat.read(NOTEBOOK_DIR / "05_digits_cnn.ipynb", as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "code" and "torch" in c.source]
    assert len(cells) == 2
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    scope: dict = {}
    for source in cells:
        exec(source, scope)  # they skip before touching the notebook's other variables
    assert capsys.readouterr().out == (
        "PyTorch is not installed (pip install torch==2.13.0): skipping the PyTorch cells\n")
