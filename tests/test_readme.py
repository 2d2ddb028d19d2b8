"""The README's Python examples run as written, in order, so the docs cannot drift."""

from __future__ import annotations

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
