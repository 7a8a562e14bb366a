"""docs/extending.md's examples run as written, its property test included."""

import pathlib
import re

import pytest

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def test_extending_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 4
    scope: dict = {}
    exec(compile("\n".join(blocks), str(DOC), "exec"), scope)
    scope["test_rmsnorm_grads"]()
    state = scope["state"]
    assert int(state["1"]["seen"]) == 1


def test_the_rmsnorm_example_would_catch_a_wrong_rule():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    source = blocks[0].replace("dscale = (dy * x_hat)", "dscale = 1.1 * (dy * x_hat)")
    scope: dict = {}
    with pytest.raises(AssertionError, match=r"dparams\['scale'\]"):
        exec(compile(source, str(DOC), "exec"), scope)
