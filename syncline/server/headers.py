"""Security headers on every HTTP response: an ASGI middleware, and the defaults the
sync endpoints send too.

``X-Content-Type-Options: nosniff`` keeps a browser from running a JSON answer or a
module as something else; ``Content-Security-Policy: frame-ancestors 'self'`` keeps
other sites from framing the pages (clickjacking). Neither restricts the page's own
scripts. A header the application already set on a response is left as it is, so a
route can send its own policy; pass other headers (or ``{}``) to change the defaults::

    app = Starlette(routes=..., middleware=[Middleware(SecurityHeaders, headers={...})])
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DEFAULT_SECURITY_HEADERS", "SecurityHeaders", "add_missing"]

DEFAULT_SECURITY_HEADERS: Mapping[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "frame-ancestors 'self'",
}


def add_missing(headers: MutableHeaders, extra: Mapping[str, str]) -> None:
    """Add each of ``extra`` that ``headers`` does not have yet."""
    for name, value in extra.items():
        if name not in headers:
            headers[name] = value


class SecurityHeaders:
    """Adds ``headers`` (default :data:`DEFAULT_SECURITY_HEADERS`) to each HTTP response
    that lacks them. WebSocket handshakes pass untouched."""

    def __init__(self, app: ASGIApp, headers: Mapping[str, str] | None = None) -> None:
        self.app = app
        self.headers = dict(DEFAULT_SECURITY_HEADERS if headers is None else headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.headers:
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                add_missing(MutableHeaders(scope=message), self.headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)
