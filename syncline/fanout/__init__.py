"""Fan-out: the per-node log reader, and the backplane that joins nodes.

``backplane.py`` is the interface (and the base of the remote backends), ``memory.py``,
``redis.py`` and ``postgres.py`` the backends, ``select.py`` picks one from a URL.
"""

from .backplane import Backplane
from .memory import MemoryBackplane
from .reader import LogReader
from .select import BACKPLANE_ENV, backplane_from_env, backplane_from_url

__all__ = [
    "BACKPLANE_ENV",
    "Backplane",
    "LogReader",
    "MemoryBackplane",
    "backplane_from_env",
    "backplane_from_url",
]
