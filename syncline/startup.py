"""What ``syncline serve`` and ``demo`` check before uvicorn starts, so that each mistake
an operator makes is one line naming it, not a traceback: the port is free (checked
before any database file is created), the database opens, ``--workers`` has a
backplane that reaches every worker, and the proxy options are well formed."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from .exceptions import SetupError, StoreError
from .logs import redact_url
from .store import store_from_url

__all__ = [
    "check_forwarded_ips",
    "check_port",
    "check_root_path",
    "check_workers",
    "open_database",
]


def check_port(host: str, port: int) -> None:
    """Bind ``host:port`` as uvicorn will (SO_REUSEADDR) and let go: a
    :class:`SetupError` if another process listens there or the host is not ours."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        hint = (
            "another process listens there; stop it or choose another --port"
            if exc.errno == 98  # EADDRINUSE
            else "check --host"
        )
        raise SetupError(f"cannot listen on {host}:{port}: {reason}; {hint}") from None


def open_database(url: str) -> None:
    """Open (creating and migrating it, as the application would) and close the store
    ``url`` names; a :class:`SetupError` naming the URL, password masked, and the cause."""
    store = store_from_url(url)

    async def probe() -> None:
        await store.open()
        await store.close()

    try:
        asyncio.run(probe())
    except StoreError as exc:
        where = redact_url(url)
        # The driver's own words (the store's message would name the database again).
        cause = str(exc.__cause__ or exc).replace(url, where)
        raise SetupError(f"cannot open the database {where}: {cause}") from None


def check_workers(workers: int, db: str, backplane: str) -> None:
    """Several worker processes share nothing in memory: each must reach the same
    database, and hear of the others' commits through a backplane between processes."""
    if workers <= 1:
        return
    if db.strip() in ("memory:", ":memory:"):
        raise SetupError(
            f"--workers {workers} with --db memory: gives each worker its own empty "
            "database; use a SQLite file or postgresql://… and --backplane redis://… or postgres"
        )
    if backplane.strip() == "memory":
        raise SetupError(
            f"--workers {workers} with --backplane memory: each worker process has its own "
            "in-memory backplane, so a client of one worker would hear of another's commits "
            "only by polling; use --backplane redis://host:6379/0, or postgres with a "
            "postgresql:// --db"
        )


def check_forwarded_ips(value: str | None) -> None:
    """``--forwarded-allow-ips``: ``*`` or comma-separated addresses and networks."""
    if value is None:
        return
    items = [item.strip() for item in value.split(",")]
    for item in items:
        if item == "*":
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise SetupError(
                f"--forwarded-allow-ips: {item!r} is not an IP address or network; give "
                "comma-separated addresses (127.0.0.1,10.0.0.0/8) or *"
            ) from None


def check_root_path(value: str) -> None:
    """``--root-path``: empty, or a path such as ``/app`` (leading slash, no trailing)."""
    if value and (not value.startswith("/") or value.endswith("/") or "?" in value):
        raise SetupError(
            f"--root-path {value!r}: give the prefix the proxy strips, such as /app "
            "(a leading slash, no trailing slash, no query)"
        )
