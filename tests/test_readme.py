"""The README's Python examples run as written (shortened epochs), so the docs cannot rot."""

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    text = README.read_text(encoding="utf-8")
    # the MPI script runs under mpiexec in tests/test_distributed.py
    blocks = [m for m in re.finditer(r"```python\n(.*?)```", text, re.DOTALL)
              if "torch_model" not in m.group(1) and "from mpi4py" not in m.group(1)]
    assert len(blocks) >= 5
    # Each block keeps its README line numbers (other lines blank), so a traceback, and
    # inspect.getsource (hypothesis calls it), find the right lines of README.md.
    lines = ["\n"] * (text.count("\n") + 1)
    for block in blocks:
        first = text.count("\n", 0, block.start(1))
        for i, line in enumerate(block.group(1).splitlines(keepends=True)):
            lines[first + i] = line
    code = re.sub(r"\bepochs=\d+", "epochs=2", "".join(lines)).replace("range(100)", "range(2)")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, str(README), "exec"), scope)
        property_tests = [f for name, f in scope.items()
                          if name.startswith("test_") and callable(f)]
        for test in property_tests:  # the README's @given examples, run as hypothesis runs them
            test()
    assert property_tests, "the README shows a hypothesis property test"
    assert (tmp_path / "sine.ckpt").exists()
