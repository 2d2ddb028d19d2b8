"""Signed, server-issued session cookies for the demos: each visitor's principal.

The cookie holds a session id that only the server makes (``secrets``), signed with
``itsdangerous`` under a secret, and time-stamped: a value the visitor or another page
chose, altered, or older than ``max_age`` is not honoured, and a fresh id replaces it
(never the presented value). The id changes only when a session is created: the demos
have no login, so the principal never changes within a session (an application with a
login issues a new session at login: see docs/security.md, "Sessions in the examples").

The secret comes from ``$SYNCLINE_SECRET``; without it one is generated at start, so
sessions (and a TodoMVC visitor's list) last until the server restarts. Over HTTPS
(the request's scheme, which uvicorn takes from ``X-Forwarded-Proto`` only when the
proxy is in ``forwarded_allow_ips``) the cookie is ``Secure`` and named with the
``__Host-`` prefix, which a page served over plain HTTP, on any port, cannot set.
"""

from __future__ import annotations

import os
import secrets

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import HTTPConnection
from starlette.responses import Response

__all__ = ["SECRET_ENV", "Sessions"]

SECRET_ENV = "SYNCLINE_SECRET"
_ID_BYTES = 18  # 24 URL-safe characters, 144 random bits


class Sessions:
    """Read and issue one signed session cookie named ``name``."""

    def __init__(self, name: str, *, secret: str | None = None, max_age: int = 30 * 86400) -> None:
        secret = secret or os.environ.get(SECRET_ENV) or secrets.token_urlsafe(32)
        self.name = name
        self.max_age = max_age
        self._signer = URLSafeTimedSerializer(secret, salt=f"syncline.demo.session.{name}")

    def cookie_name(self, conn: HTTPConnection) -> str:
        """``__Host-<name>`` over HTTPS (Secure, host-only, path /), else ``<name>``."""
        return f"__Host-{self.name}" if _secure(conn) else self.name

    def read(self, conn: HTTPConnection) -> str | None:
        """The session id of a valid cookie this server issued, or None."""
        return self.verify(conn.cookies.get(self.cookie_name(conn), ""))

    def verify(self, value: str) -> str | None:
        """The session id a cookie value carries, if this server signed it and it is
        younger than ``max_age``; else None."""
        if not value:
            return None
        try:
            sid = self._signer.loads(value, max_age=self.max_age)
        except BadSignature:  # forged, altered, expired or signed under another secret
            return None
        return sid if isinstance(sid, str) else None

    def begin(self, conn: HTTPConnection) -> str:
        """The visitor's session id: the valid one presented, or a new one."""
        return self.read(conn) or secrets.token_urlsafe(_ID_BYTES)

    def sign(self, sid: str) -> str:
        """The cookie value for ``sid`` (for a client that is not a browser: the bench)."""
        return self._signer.dumps(sid)

    def issue(self, conn: HTTPConnection, response: Response, sid: str) -> None:
        """Set the signed cookie for ``sid`` (re-signed, so it lasts ``max_age`` from
        this visit). HttpOnly: no script reads it; SameSite=Lax: a visitor following a
        link from elsewhere keeps their session (the Origin check guards writes)."""
        response.set_cookie(
            self.cookie_name(conn),
            self.sign(sid),
            max_age=self.max_age,
            path="/",
            secure=_secure(conn),
            httponly=True,
            samesite="lax",
        )


def _secure(conn: HTTPConnection) -> bool:
    return conn.url.scheme in ("https", "wss")
