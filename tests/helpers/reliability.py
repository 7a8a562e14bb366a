"""Counts behind docs/reliability.md: what the reliability tests tried.

Set ``FUNCNN_RELIABILITY_REPORT=/some/file.jsonl`` and run
``python -m pytest tests/test_reliability_*.py``; every counting test appends one JSON
line. Without the variable nothing is written.
"""

from __future__ import annotations

import json
import os


def report(test: str, **counts) -> None:
    """Append ``{"test": test, **counts}`` to the report file, if one is set."""
    path = os.environ.get("FUNCNN_RELIABILITY_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"test": test, **counts}) + "\n")
