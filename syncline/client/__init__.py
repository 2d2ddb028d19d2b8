"""The Python asyncio client: a replica kept in sync over WebSocket.

:class:`Client` is the I/O layer; :class:`ClientProtocol` is the sans-I/O protocol it
drives (frames in, events and frames out), usable with any transport.
"""

from .client import Client, EventStream, Status
from .protocol import ClientEvent, ClientFailed, ClientProtocol, EventKind

__all__ = [
    "Client",
    "ClientEvent",
    "ClientFailed",
    "ClientProtocol",
    "EventKind",
    "EventStream",
    "Status",
]
