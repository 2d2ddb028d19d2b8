"""``syncline bench``: syncline beside the servers a Python developer would otherwise
use, on loopback, each in its own process. See ``docs/benchmarks.md``."""

from __future__ import annotations

from .runner import run
from .scenarios import SCENARIOS

__all__ = ["SCENARIOS", "run"]
