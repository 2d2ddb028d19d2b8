"""Choosing a backplane from a URL or the environment (the only module that knows
every backend; the backends import only :mod:`syncline.fanout.backplane`)."""

from __future__ import annotations

import os

from ..exceptions import BackplaneError
from .backplane import Backplane
from .memory import MemoryBackplane

__all__ = ["BACKPLANE_ENV", "backplane_from_env", "backplane_from_url"]

BACKPLANE_ENV = "SYNCLINE_BACKPLANE"
"""The environment variable ``syncline serve --backplane`` sets for the application."""


def backplane_from_url(
    url: str | None, *, database: str | None = None, channel: str = "syncline"
) -> Backplane:
    """The backplane ``syncline serve --backplane`` names.

    ``memory`` (or nothing): one node. ``redis://host:port/db`` (or ``rediss://``,
    ``unix://``): Redis pub/sub. ``postgres``: LISTEN/NOTIFY on ``database`` (the
    PostgreSQL URL the store uses); ``postgresql://...``: on that database.
    """
    text = (url or "memory").strip()
    scheme = text.partition("://")[0].lower()
    if text == "memory":
        return MemoryBackplane()
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisBackplane

        return RedisBackplane(text, channel)
    if text in ("postgres", "postgresql"):
        if not database or database.partition("://")[0] not in ("postgres", "postgresql"):
            raise BackplaneError(
                "--backplane postgres uses the store's database: give a postgresql:// --db"
            )
        text, scheme = database, "postgresql"
    if scheme in ("postgres", "postgresql"):
        from ..store import split_schema
        from .postgres import PostgresBackplane

        return PostgresBackplane(split_schema(text)[0], channel)
    raise BackplaneError(
        f"unsupported backplane {url!r}; use memory, redis://host:6379/0, postgres "
        "(the database's own LISTEN/NOTIFY) or postgresql://..."
    )


def backplane_from_env(default: str = "memory", *, channel: str = "syncline") -> Backplane:
    """The backplane named by ``$SYNCLINE_BACKPLANE`` (set by ``syncline serve
    --backplane``), or ``default``; ``postgres`` means the database in ``$SYNCLINE_DB``."""
    return backplane_from_url(
        os.environ.get(BACKPLANE_ENV) or default,
        database=os.environ.get("SYNCLINE_DB"),
        channel=channel,
    )
