"""The README's Python examples run as written, in order, so the docs cannot drift."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_blocks_run(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace: dict[str, object] = {"__name__": "readme"}
    code = compile("\n".join(blocks), str(README), "exec", dont_inherit=True)
    exec(code, namespace)
    assert "bob-tab conflict" in capsys.readouterr().out


def test_readme_sketches_compile_and_import_what_exists() -> None:
    """``py`` blocks are sketches (they need a running server): they must still parse,
    and every name they import must exist."""
    sketches = re.findall(r"```py\n(.*?)```", README.read_text(), flags=re.S)
    assert sketches
    for sketch in sketches:
        compile(
            sketch, str(README), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
        )
        imports = "\n".join(line for line in sketch.splitlines() if line.startswith("from "))
        exec(compile(imports, str(README), "exec", dont_inherit=True), {})
