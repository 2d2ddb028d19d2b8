"""The Python asyncio client: a replica kept in sync over WebSocket.

:class:`Client` is the I/O layer; :class:`~syncline.protocol.client.ClientProtocol` is
the sans-I/O protocol it drives (frames in, events and frames out), usable with any
transport. Names load on first use, so importing the sans-I/O part loads no I/O.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..protocol.client import ClientEvent, ClientFailed, ClientProtocol, EventKind
    from .client import Client, EventStream, Status

__all__ = [
    "Client",
    "ClientEvent",
    "ClientFailed",
    "ClientProtocol",
    "EventKind",
    "EventStream",
    "Status",
]

_HOMES = {
    "Client": ".client",
    "EventStream": ".client",
    "Status": ".client",
    "ClientEvent": "..protocol.client",
    "ClientFailed": "..protocol.client",
    "ClientProtocol": "..protocol.client",
    "EventKind": "..protocol.client",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
