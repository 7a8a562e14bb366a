"""File-system helpers shared by the modules that write files atomically."""

from __future__ import annotations

import os


def fsync_directory(directory: str | os.PathLike) -> None:
    """Make a rename inside ``directory`` durable (best effort: POSIX only, and not every
    filesystem lets a folder be opened)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
