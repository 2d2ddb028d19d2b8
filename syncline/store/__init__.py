"""Stores: where records, the change log and clients live. See :mod:`.base`."""

from .base import ClientState, LogEntry, ReadTx, Store, WriteTx
from .memory import MemoryStore

__all__ = ["ClientState", "LogEntry", "MemoryStore", "ReadTx", "Store", "WriteTx"]
