"""Fan-out: the per-node log reader, and the backplane that joins nodes."""

from .backplane import (
    BACKPLANE_ENV,
    Backplane,
    MemoryBackplane,
    backplane_from_env,
    backplane_from_url,
)
from .reader import LogReader

__all__ = [
    "BACKPLANE_ENV",
    "Backplane",
    "LogReader",
    "MemoryBackplane",
    "backplane_from_env",
    "backplane_from_url",
]
