"""The wire contract, sans I/O: frames, the server's and the client's state machines.

Nothing here performs I/O or imports an event loop: the server (:mod:`syncline.server`)
and the Python client (:mod:`syncline.client`) move bytes; these modules decide what
the bytes mean. ``docs/protocol.md`` is the contract they implement.
"""

from .server import (
    PROTOCOL_VERSION,
    Hello,
    Limits,
    Mutate,
    Ping,
    Pong,
    ProtocolError,
    ServerProtocol,
    State,
    Subscribe,
    Unsubscribe,
    decode_client_frame,
)

__all__ = [
    "PROTOCOL_VERSION",
    "Hello",
    "Limits",
    "Mutate",
    "Ping",
    "Pong",
    "ProtocolError",
    "ServerProtocol",
    "State",
    "Subscribe",
    "Unsubscribe",
    "decode_client_frame",
]
