"""``syncline bench``: syncline beside the servers a Python developer would otherwise
use, on loopback, each in its own process. See ``docs/benchmarks.md``."""

from __future__ import annotations

from .._extras import require

# The harness and its peers load most of these late, in their own processes: check all
# of them here, so that a missing one is named before a run starts, not in its middle.
require(
    "syncline bench",
    "bench",
    *("psutil", "websockets", "rich", "uvicorn", "uvloop", "socketio", "asyncpg", "jinja2"),
)

from .runner import run  # noqa: E402
from .scenarios import SCENARIOS  # noqa: E402

__all__ = ["SCENARIOS", "run"]
