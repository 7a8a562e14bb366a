"""The README's Python examples run as written (shortened epochs), so the docs cannot rot."""

import contextlib
import io
import linecache
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    # the MPI script runs under mpiexec in tests/test_distributed.py
    runnable = [b for b in blocks if "torch_model" not in b and "from mpi4py" not in b]
    assert len(runnable) >= 5
    code = "\n".join(runnable).replace("epochs=100", "epochs=2").replace("range(100)", "range(2)")
    monkeypatch.chdir(tmp_path)
    # The joined blocks get a file name of their own, with their text in linecache, so that
    # inspect.getsource (hypothesis calls it on the @given example) reads these lines and
    # not README.md's lines of the same numbers.
    filename = f"<python blocks of {README.name}>"
    monkeypatch.setitem(linecache.cache, filename,
                        (len(code), None, code.splitlines(keepends=True), filename))
    scope: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, filename, "exec"), scope)
        property_tests = [f for name, f in scope.items() if name.startswith("test_") and callable(f)]
        for test in property_tests:  # the README's @given examples, run as hypothesis runs them
            test()
    assert property_tests, "the README shows a hypothesis property test"
    assert (tmp_path / "sine.ckpt").exists()
