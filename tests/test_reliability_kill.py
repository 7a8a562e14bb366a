"""SIGKILL a checkpoint writer at random moments: the file is always the old or the new one.

A helper process (tests/helpers/checkpoint_writer.py) imports funcnn once and forks one
writer per round; the writer saves generation after generation (1 MiB trees whose leaves
are all 0 or all 1 by generation parity) to one path, and is SIGKILLed after a random
delay. After every kill the file must load, hold exactly the last generation the writer
reported saved or the one it was saving, and match that generation bit for bit, never
a mix. The test also counts the kills that landed mid-write (a temporary file left
behind) and checks that the next save cleans such leftovers.

tests/test_checkpoint.py has the same check with a fresh interpreter per kill (6 kills
of a 64 MiB save); forking makes 100 kills affordable here.
"""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers.checkpoint_writer import tree  # the writer's own definition of a generation
from helpers.reliability import report

import funcnn as fn

HELPER = pathlib.Path(__file__).resolve().parent / "helpers" / "checkpoint_writer.py"
REPO = pathlib.Path(__file__).resolve().parents[1]
KILLS = 100
LEAVES, SIZE = 8, 1 << 14  # 8 x 16384 float64 = 1 MiB per generation


def temp_files(folder: pathlib.Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if ".tmp-" in name)


def read_round(spawner, pid: int) -> tuple[list[str], int]:
    """The writer's lines up to its exit, and its wait status."""
    lines = []
    while True:
        line = spawner.stdout.readline()
        assert line, "the helper died"
        words = line.split()
        if words[0] == "exit" and int(words[1]) == pid:
            return lines, int(words[2])
        lines.append(line.strip())


@pytest.mark.skipif(os.name != "posix" or not hasattr(os, "fork"), reason="SIGKILL and fork")
def test_sigkill_at_random_moments_leaves_the_old_or_the_new_checkpoint(tmp_path):
    path = tmp_path / "ckpt"
    fn.save(path, tree(0, LEAVES, SIZE))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(tmp_path / "stderr", "w+") as stderr:
        spawner = subprocess.Popen(
            [sys.executable, str(HELPER), str(path), str(LEAVES), str(SIZE)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1,
            env=env,
        )
        rng = random.Random(20240611)
        counts = {"kills": 0, "mid_write": 0, "inside_save": 0, "new_file": 0, "old_file": 0,
                  "saves_completed": 0}
        try:
            for _ in range(KILLS):
                spawner.stdin.write("go\n")
                spawner.stdin.flush()
                pid = int(spawner.stdout.readline().split()[1])
                first = spawner.stdout.readline().split()
                assert first[0] == "start", (first, stderr.seek(0) or stderr.read())
                start = int(first[1])
                time.sleep(rng.uniform(0.0, 0.08))
                os.kill(pid, signal.SIGKILL)
                lines, status = read_round(spawner, pid)
                assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
                    status, stderr.seek(0) or stderr.read())
                counts["kills"] += 1

                saved = [int(line.split()[1]) for line in lines if line.startswith("saved")]
                saving = [int(line.split()[1]) for line in lines if line.startswith("saving")]
                old = max(saved, default=start)
                in_save = bool(saving) and max(saving) > old  # killed between "saving" and "saved"
                counts["saves_completed"] += len(saved)
                counts["inside_save"] += in_save
                leftovers = temp_files(tmp_path)
                assert len(leftovers) <= 1, leftovers  # earlier dead writers' temps were cleaned
                counts["mid_write"] += bool(leftovers)

                loaded = fn.load(path)
                generation = int(loaded["gen"])
                expected = (old, old + 1) if in_save else (old,)
                assert generation in expected, (generation, old, lines)
                assert fn.tree.equal(loaded, tree(generation, LEAVES, SIZE)), \
                    "a mix of two checkpoints"
                counts["new_file" if generation == old + 1 else "old_file"] += 1
            spawner.stdin.write("quit\n")
            spawner.stdin.flush()
            assert spawner.wait(timeout=30) == 0
        finally:
            if spawner.poll() is None:
                spawner.kill()
                spawner.wait()
            spawner.stdin.close()
            spawner.stdout.close()

    report("kill", **counts)
    print(counts)
    assert counts["kills"] >= 50
    assert counts["mid_write"] >= KILLS // 4, counts  # the kills really hit writes
    assert counts["saves_completed"] >= KILLS // 4  # and the writers really made progress
    fn.save(path, tree(0, LEAVES, SIZE))  # the next save removes the last dead writer's temp
    assert sorted(os.listdir(tmp_path)) == ["ckpt", "stderr"]
    np.testing.assert_array_equal(fn.load(path)["gen"], 0)
