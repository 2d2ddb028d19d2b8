"""The Python asyncio client: a replica kept in sync over WebSocket.

:class:`Client` is the I/O layer; :class:`~syncline.protocol.client.ClientProtocol` is
the sans-I/O protocol it drives (frames in, events and frames out), usable with any
transport. Names load on first use, so importing the sans-I/O part loads no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names as _lazy_names

if TYPE_CHECKING:
    from ..protocol.client import ClientEvent, ClientFailed, ClientProtocol, EventKind
    from .client import Client, EventStream, Status
    from .room import Room

__all__ = [
    "Client",
    "ClientEvent",
    "ClientFailed",
    "ClientProtocol",
    "EventKind",
    "EventStream",
    "Room",
    "Status",
]

_HOMES = {
    "Client": ".client",
    "EventStream": ".client",
    "Status": ".client",
    "Room": ".room",
    "ClientEvent": "..protocol.client",
    "ClientFailed": "..protocol.client",
    "ClientProtocol": "..protocol.client",
    "EventKind": "..protocol.client",
}


__getattr__, __dir__ = _lazy_names(__name__, globals(), _HOMES)
