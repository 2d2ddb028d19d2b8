"""Who may talk to the sync endpoints from a browser: the Origin and Host checks.

An origin is compared as (scheme, host, port) with default ports filled in, so
``https://app.example`` and ``https://app.example:443`` are one origin and
``http://app.example`` is another. Without an allow list the server is same-origin:
the Origin must be the request's own scheme and ``Host``. The request's scheme is the
one uvicorn reports, which it takes from ``X-Forwarded-Proto`` only for proxies in
``forwarded_allow_ips``; ``Host`` is the header as received (a proxy must pass it on).

DNS rebinding (an attacker's name re-pointed at this server, so that ``Host`` and
``Origin`` both carry it) is refused by the Host check: with ``allowed_hosts`` given,
``Host`` must name one of them; without it, a request that reached a loopback address
must name a loopback host (``localhost``, ``*.localhost``, an IP literal), which covers
the servers rebinding attacks aim at (a developer's machine) with no configuration.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

from ..exceptions import SynclineError

__all__ = ["OriginConfigError", "OriginPolicy", "parse_origin"]

Origin = tuple[str, str, int]
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


class OriginConfigError(SynclineError, ValueError):
    """``allowed_origins`` or ``allowed_hosts`` names something that is not one."""


def parse_origin(value: str) -> Origin | None:
    """``scheme://host[:port]`` as (scheme, lowercased host, port), or None if it is
    not one (``null``, a path, a user, an unknown scheme, a bad port)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if (
        scheme not in _DEFAULT_PORTS
        or not host
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        return None
    return scheme, host, port if port is not None else _DEFAULT_PORTS[scheme]


def _host_of(value: str) -> str | None:
    """The host name of a ``Host`` header (port dropped, lowercased), or None."""
    origin = parse_origin(f"http://{value}")
    return origin[1] if origin is not None else None


def _is_loopback_name(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True  # an IP literal: no name for an attacker to re-point


def _is_loopback_address(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


class OriginPolicy:
    """``allowed(conn)``: whether a request may use the sync endpoints (see module)."""

    def __init__(
        self, allowed_origins: Iterable[str] | None, allowed_hosts: Iterable[str] | None
    ) -> None:
        self.any_origin = False
        self.origins: set[Origin] | None = None
        if allowed_origins is not None:
            self.origins = set()
            for entry in allowed_origins:
                if entry == "*":
                    self.any_origin = True
                    continue
                origin = parse_origin(entry)
                if origin is None:
                    raise OriginConfigError(
                        f"allowed_origins: {entry!r} is not an origin (scheme://host[:port])"
                    )
                self.origins.add(origin)
        self.hosts: set[str] | None = None
        if allowed_hosts is not None:
            self.hosts = set()
            for entry in allowed_hosts:
                host = _host_of(entry)
                if host is None:
                    raise OriginConfigError(f"allowed_hosts: {entry!r} is not a host name")
                self.hosts.add(host)

    def refusal(self, conn: HTTPConnection) -> str | None:
        """Why ``conn`` is refused, or None if it is allowed."""
        host_header = conn.headers.get("host", "")
        if not self.host_allowed(conn, host_header):
            return f"host {host_header!r} not allowed (see allowed_hosts)"
        raw = conn.headers.get("origin")
        if raw is None:
            return None  # not a browser: nothing cross-site to defend against
        origin = parse_origin(raw)
        if self.origins is not None:
            if self.any_origin or origin in self.origins:
                return None
            return f"origin {raw!r} not allowed (see allowed_origins)"
        own = parse_origin(f"{_SCHEMES.get(conn.url.scheme, conn.url.scheme)}://{host_header}")
        if origin is None or origin != own:
            return f"origin {raw!r} is not this server's own origin"
        return None

    def host_allowed(self, conn: HTTPConnection, host_header: str) -> bool:
        host = _host_of(host_header)
        if self.hosts is not None:
            return host is not None and host in self.hosts
        if not host_header:
            return True  # no name to re-point (and no browser: browsers always send Host)
        server = conn.scope.get("server")
        if server and _is_loopback_address(str(server[0])):
            return host is not None and _is_loopback_name(host)
        return True
