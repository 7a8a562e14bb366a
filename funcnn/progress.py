"""Training progress on a terminal or in a log, without third-party dependencies.

- ``"bar"``: a live bar redrawn in place (at most 10 times a second), for terminals;
- ``"lines"``: one line per epoch, for logs and CI (no redraws fill the file);
- ``"silent"``: nothing;
- ``"auto"`` (default): ``"bar"`` when the stream is a terminal, else ``"lines"``.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

MODES = ("auto", "bar", "lines", "silent")


class Progress:
    """Reports batches and epochs of one training run to ``stream`` (stdout by default)."""

    def __init__(self, mode: str = "auto", stream: TextIO | None = None, epochs: int = 0):
        if mode not in MODES:
            raise ValueError(f"progress must be one of {MODES}, got {mode!r}")
        self.stream = sys.stdout if stream is None else stream
        if mode == "auto":
            isatty = getattr(self.stream, "isatty", None)
            mode = "bar" if isatty is not None and isatty() else "lines"
        self.mode = mode
        self.epochs = epochs
        self._last_draw = 0.0
        self._mid_line = False

    def batch(self, epoch: int, done: int, total: int, loss: float) -> None:
        """Called after every batch; redraws the bar at most every 0.1 s."""
        if self.mode != "bar":
            return
        now = time.monotonic()
        if now - self._last_draw < 0.1 and done < total:
            return
        self._last_draw = now
        width = 24
        filled = width * done // max(total, 1)
        bar = "#" * filled + "." * (width - filled)
        self._write(f"\r{self._epoch_label(epoch)} [{bar}] {done}/{total} loss {loss:.4g}", end="")
        self._mid_line = True

    def epoch(self, epoch: int, train_loss: float, val_loss: float | None, seconds: float,
              note: str = "") -> None:
        """Called after every epoch: one summary line.

        On a terminal a line stays only for every ``epochs // 50``-th epoch (and the
        last); the others are overwritten by the next bar, so long runs stay readable.
        """
        if self.mode == "silent":
            return
        val = f"  val {val_loss:.6g}" if val_loss is not None else ""
        line = f"{self._epoch_label(epoch)}  train {train_loss:.6g}{val}  {seconds:.2f}s{note}"
        if self._mid_line:
            line = f"\r{line}\x1b[K"  # overwrite the bar, clear what is left of it
        stride = max(1, self.epochs // 50)
        if self.mode == "bar" and (epoch + 1) % stride and epoch + 1 != self.epochs:
            self._write(line, end="")
            self._mid_line = True
        else:
            self._write(line)

    def message(self, text: str) -> None:
        """A line that is shown in every mode but silent."""
        if self.mode != "silent":
            self._write(("\n" if self._mid_line else "") + text)

    def _epoch_label(self, epoch: int) -> str:
        digits = len(str(self.epochs))
        return f"epoch {epoch + 1:>{digits}}/{self.epochs}"

    def _write(self, text: str, end: str = "\n") -> None:
        self.stream.write(text + end)
        self.stream.flush()
        self._mid_line = False
