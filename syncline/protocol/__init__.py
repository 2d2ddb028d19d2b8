"""The wire contract, sans I/O: frames, the server's and the client's state machines.

Nothing here performs I/O or imports an event loop: the server (:mod:`syncline.server`)
and the Python client (:mod:`syncline.client`) move bytes; these modules decide what
the bytes mean. :mod:`.frames` defines every frame and their codec, :mod:`.server` the
server's state machine; ``docs/protocol.md`` is the contract they implement.
"""

from .frames import (
    PROTOCOL_VERSION,
    ClientFrame,
    Limits,
    ProtocolError,
    ServerFrame,
    decode_client_frame,
    decode_server_frame,
    encode,
)
from .server import (
    Hello,
    Mutate,
    Ping,
    Pong,
    ProtocolMisuse,
    ServerProtocol,
    State,
    Subscribe,
    Unsubscribe,
)

__all__ = [
    "PROTOCOL_VERSION",
    "ClientFrame",
    "Hello",
    "Limits",
    "Mutate",
    "Ping",
    "Pong",
    "ProtocolError",
    "ProtocolMisuse",
    "ServerFrame",
    "ServerProtocol",
    "State",
    "Subscribe",
    "Unsubscribe",
    "decode_client_frame",
    "decode_server_frame",
    "encode",
]
