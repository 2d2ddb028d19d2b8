"""The limits ``syncline serve`` and ``syncline demo`` give uvicorn, so that a small
request cannot cost the server much: a WebSocket message is refused at syncline's frame
limit (and permessage-deflate stops inflating there), a request head is refused past a
size and a deadline (uvicorn has neither for httptools), idle keep-alive connections
close, and past a number of connections new requests are answered 503.

uvicorn's httptools protocol has no header-size limit and no header-read timeout (its
keep-alive timer starts only after a first response): :func:`bounded_http_protocol`
adds both, counting bytes before they reach the parser, which stores a request line or
header value by repeated concatenation (seconds of event loop for 50 MB).
"""

from __future__ import annotations

import asyncio
import functools
import resource
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .protocol.frames import Limits

if TYPE_CHECKING:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_KEEP_ALIVE",
    "DEFAULT_MAX_HEADER_BYTES",
    "FD_RESERVE",
    "ServingLimits",
    "bounded_http_protocol",
    "default_concurrency",
    "frame_limit_of",
]

DEFAULT_MAX_HEADER_BYTES = 32 * 1024
"""Request line and headers together; room for large cookies, nothing like 50 MB."""
DEFAULT_HEADER_TIMEOUT = 10.0
"""Seconds from a request's first byte (or the connection's opening) to its last header."""
DEFAULT_KEEP_ALIVE = 5
"""Seconds an idle keep-alive connection stays open after a response (uvicorn's 5)."""
FD_RESERVE = 128
"""File descriptors kept back from the connection limit: the database, logs, and the
sockets that are accepted only to be answered 503."""


def default_concurrency() -> int:
    """The open-file limit (``ulimit -n``) less :data:`FD_RESERVE`: past it new requests
    are answered 503 rather than the process running out of descriptors, where accept()
    fails and real visitors wait without an answer."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft > 1 << 20:
        soft = 1 << 20
    return max(soft - FD_RESERVE, 16)


def frame_limit_of(*objects: Any) -> int:
    """The largest ``limits.max_frame_bytes`` of the SynclineServers reachable from
    ``objects`` (an ASGI app's routes, mounts and wrapped apps, or a module's globals);
    :class:`Limits`' default when there is none."""
    found = [server.limits.max_frame_bytes for server in _servers(objects)]
    return max(found) if found else Limits.max_frame_bytes


def _servers(objects: tuple[Any, ...]) -> Iterator[Any]:
    from .server.app import SynclineServer

    seen: set[int] = set()
    todo = list(objects)
    while todo and len(seen) < 10_000:
        obj = todo.pop()
        if obj is None or isinstance(obj, type) or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, SynclineServer):
            yield obj
        elif isinstance(obj, ModuleType):  # its globals only, not what they reach
            todo.extend(v for v in vars(obj).values() if isinstance(v, SynclineServer))
        else:  # an app's router, routes, mounts and wrapped apps
            endpoint = getattr(obj, "endpoint", None)
            todo.append(getattr(getattr(endpoint, "__self__", None), "server", None))
            routes = getattr(obj, "routes", None)
            todo.extend(routes if isinstance(routes, list) else [])
            todo.append(getattr(obj, "app", None))
            todo.append(getattr(obj, "router", None))


@dataclass(frozen=True)
class ServingLimits:
    """What uvicorn is told; each is an option of ``serve`` and ``demo``."""

    ws_max_size: int
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    keep_alive: int = DEFAULT_KEEP_ALIVE
    limit_concurrency: int = 0  # 0: default_concurrency()

    def uvicorn_kwargs(self) -> dict[str, Any]:
        return {
            "http": bounded_http_protocol(self.max_header_bytes, self.header_timeout),
            "ws_max_size": self.ws_max_size,
            "timeout_keep_alive": self.keep_alive,
            "limit_concurrency": self.limit_concurrency or default_concurrency(),
            # uvicorn's h11 limit, for anyone who swaps the protocol back to h11.
            "h11_max_incomplete_event_size": self.max_header_bytes,
        }

    def describe(self) -> str:
        return (
            f"limits: WebSocket messages {self.ws_max_size} bytes, request head "
            f"{self.max_header_bytes} bytes within {self.header_timeout:g} s, keep-alive "
            f"{self.keep_alive} s, {self.limit_concurrency or default_concurrency()} connections"
        )


_PROTOCOL_PREFIX = "BoundedHttpToolsProtocol_"


def __getattr__(name: str) -> Any:
    """The protocol class a pickle names (``--workers``: uvicorn sends its configuration
    to each worker process, which rebuilds the class from its name)."""
    if name.startswith(_PROTOCOL_PREFIX):
        size, micros = name.removeprefix(_PROTOCOL_PREFIX).split("_")
        return bounded_http_protocol(int(size), int(micros) / 1e6)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def bounded_http_protocol(max_header_bytes: int, header_timeout: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a request-head size limit (answered 431) and a
    head deadline (answered 408), both counted before the parser sees a byte. One class
    per pair of limits, named after them, so that it pickles."""
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

    header_timeout = round(header_timeout * 1e6) / 1e6  # what its name can carry

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        # True from the connection's opening or a request's end until its headers end.
        _in_head = True
        _head_bytes = 0
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._arm()  # also a connection that never sends a byte

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if not self._in_head:
                super().data_received(data)
                return
            self._arm()
            room = max_header_bytes - self._head_bytes
            head = data[:room] if len(data) > room else data
            self._head_bytes += len(head)
            if head:
                super().data_received(head)
            if len(head) == len(data) or self.transport.is_closing():
                return
            if self.transport.get_protocol() is not self:
                return  # upgraded to a WebSocket within the limit; uvicorn drops the rest
            if self._in_head:
                self._refuse(431, f"request line and headers exceed {max_header_bytes} bytes")
                return
            super().data_received(data[len(head) :])

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._disarm()
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_head, self._head_bytes = True, 0  # the next bytes are the next head
            super().on_message_complete()

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(header_timeout, self._head_timed_out)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if not self._in_head or self.transport.is_closing():
                return
            if self._head_bytes:  # a request under way is told why
                self._refuse(408, f"request headers not received within {header_timeout:g} s")
            else:  # an idle connection (a browser's preconnect, say) closes silently
                self.transport.close()

        def _refuse(self, status: int, message: str) -> None:
            """Answer (unless a response is under way on this connection) and close."""
            self._disarm()
            self._in_head = False
            if self.cycle is None or self.cycle.response_complete:
                body = message.encode()
                self.transport.write(
                    STATUS_LINE[status]
                    + b"content-type: text/plain; charset=utf-8\r\n"
                    + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
                    + body
                )
            self.transport.close()

    name = f"{_PROTOCOL_PREFIX}{max_header_bytes}_{round(header_timeout * 1e6)}"
    BoundedHttpToolsProtocol.__name__ = BoundedHttpToolsProtocol.__qualname__ = name
    BoundedHttpToolsProtocol.__module__ = __name__
    return BoundedHttpToolsProtocol
