"""The pure core loads no I/O: importing it in a fresh interpreter pulls in no event
loop, socket library, database driver or web framework (STYLE: pure core, thin I/O)."""

import subprocess
import sys

import pytest

PURE_MODULES = [
    "syncline",
    "syncline.model",
    "syncline.ops",
    "syncline.merge",
    "syncline.replica",
    "syncline.textmerge",
    "syncline.textcheck",
    "syncline.query",
    "syncline.record",
    "syncline.results",
    "syncline.cursor",
    "syncline.changes",
    "syncline.presence",
    "syncline.exceptions",
    "syncline.protocol",
    "syncline.protocol.server",
    "syncline.protocol.client",
    "syncline.protocol.frames",
    "syncline.protocol.pacing",
]

IO_MODULES = ["asyncio", "websockets", "sqlite3", "asyncpg", "redis", "starlette", "uvicorn"]


@pytest.mark.parametrize("module", PURE_MODULES)
def test_importing_a_pure_module_loads_no_io(module: str) -> None:
    probe = f"import sys, {module}\nprint(' '.join(m for m in {IO_MODULES!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [], f"importing {module} loaded {', '.join(out)}"


def test_the_probe_would_notice_io() -> None:
    """The check itself can fail: the I/O layer does load asyncio."""
    probe = "import sys, syncline.server.app; print('asyncio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
