"""funcnn as it was at another git revision, importable next to this checkout's funcnn.

``python -m benchmarks.run --before REV`` times that revision's ``fn.train_step`` in
the same interleaved run as today's, so a before/after ratio is free of the load that
makes two separate runs incomparable. The revision's ``funcnn/`` is taken with
``git archive`` into a temporary directory, renamed to ``funcnn_before`` (its
``import funcnn`` / ``from funcnn...`` lines rewritten to match) and imported from
there; the directory is removed when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

PACKAGE = "funcnn_before"
_IMPORT = re.compile(r"^(\s*(?:from|import)\s+)funcnn\b", re.MULTILINE)


@dataclass(frozen=True)
class Before:
    """The other revision's funcnn: the imported package and its short commit hash."""

    fn: ModuleType
    rev: str


@contextlib.contextmanager
def funcnn_at(rev: str, repo: Path) -> Iterator[Before]:
    """Import ``funcnn/`` of commit ``rev`` of the git repository ``repo`` as
    ``funcnn_before``; its temporary directory is removed on exit."""
    short = _git(repo, "rev-parse", "--short", "--verify", f"{rev}^{{commit}}").decode().strip()
    with tempfile.TemporaryDirectory(prefix="funcnn-before-") as tmp:
        package = Path(tmp) / PACKAGE
        _extract(repo, short, Path(tmp))
        (Path(tmp) / "funcnn").rename(package)
        for source in package.rglob("*.py"):
            source.write_text(_IMPORT.sub(rf"\g<1>{PACKAGE}", source.read_text()))
        try:
            yield Before(_import(package), short)
        finally:
            for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
                del sys.modules[name]


def _git(repo: Path, *args: str) -> bytes:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False)
    if done.returncode:
        raise SystemExit(f"--before: git {' '.join(args)} failed: {done.stderr.decode().strip()}")
    return done.stdout


def _extract(repo: Path, rev: str, into: Path) -> None:
    archive = _git(repo, "archive", "--format=tar", rev, "funcnn")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def _import(package: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        PACKAGE, package / "__init__.py", submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module  # its own "from funcnn_before.x import y" finds it here
    spec.loader.exec_module(module)
    return module
