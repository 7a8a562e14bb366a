"""Forks checkpoint writers for tests/test_reliability_kill.py to SIGKILL.

    python checkpoint_writer.py PATH LEAVES SIZE

Imports funcnn once, then for every ``go`` line on stdin forks a writer process and
reports on stdout:

    pid <pid>            the writer's pid, for the test to kill
    start <g>            (from the writer) the generation it found in PATH
    saving <g>           (from the writer) fn.save of generation g begins
    saved <g>            (from the writer) fn.save of generation g returned
    exit <pid> <status>  the writer is gone; status as from os.waitpid

A writer loads PATH, then saves generations g+1, g+2, ... to PATH until killed.
Generation g is ``tree(g)``: ``{"gen": g, "leaves": {...}}`` whose LEAVES leaves of SIZE
float64 are all ``g % 2``, so any mix of two generations is visible. ``quit`` ends.
"""

from __future__ import annotations

import os
import sys

import numpy as np

import funcnn as fn


def tree(generation: int, leaves: int, size: int) -> dict:
    value = float(generation % 2)
    return {
        "gen": np.array(generation, np.int64),
        "leaves": {str(i): np.full(size, value) for i in range(leaves)},
    }


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())  # one write: lines from writer and spawner never mix


def writer(path: str, leaves: int, size: int) -> None:
    trees = [tree(0, leaves, size), tree(1, leaves, size)]
    generation = int(fn.load(path)["gen"])
    say(f"start {generation}")
    while True:
        generation += 1
        snapshot = {**trees[generation % 2], "gen": np.array(generation, np.int64)}
        say(f"saving {generation}")
        fn.save(path, snapshot)
        say(f"saved {generation}")


def main() -> None:
    path, leaves, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for command in sys.stdin:
        if command.strip() == "quit":
            return
        pid = os.fork()
        if pid == 0:
            try:
                writer(path, leaves, size)
            finally:
                os._exit(3)  # only reached if the writer failed
        say(f"pid {pid}")
        _, status = os.waitpid(pid, 0)
        say(f"exit {pid} {status}")


if __name__ == "__main__":
    main()
