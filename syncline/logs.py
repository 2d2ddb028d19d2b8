"""Logging for ``syncline serve`` and ``demo``: one configuration for syncline's loggers,
uvicorn's and the application's, as text or as one JSON object per line, each line
carrying the connection, client, principal and mutation it concerns where known.

The stdlib suffices: a formatter and four :mod:`contextvars`. The endpoints set the
context (:func:`bind`) in the task that serves a connection or request, so every line
logged while it is served -- by syncline, the engine or the application's hooks --
names it, with no logger passed around. (structlog would add a dependency and a second
API beside ``logging`` that uvicorn and applications already use.)
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import itertools
import json
import logging
import logging.config
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "CONTEXT",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "JsonFormatter",
    "TextFormatter",
    "bind",
    "configure",
    "logging_config",
    "new_connection_id",
    "redact_url",
]

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
LOG_FORMATS = ("text", "json")

CONTEXT: dict[str, contextvars.ContextVar[str | None]] = {
    name: contextvars.ContextVar(f"syncline_{name}", default=None)
    for name in ("connection", "client", "principal", "mutation")
}
"""What a line is about, as JSON keys: the connection id (``ws-3``, ``http-9``), the
client id, the principal key and the mutation id."""

_ids = itertools.count(1)


def new_connection_id(kind: str) -> str:
    """A short id, unique in this process, for one WebSocket or HTTP request."""
    return f"{kind}-{next(_ids)}"


@contextlib.contextmanager
def bind(**values: object) -> Iterator[None]:
    """Set context for the lines logged inside the block (and by the tasks it starts);
    values of None are skipped. Unknown names are a bug: KeyError."""
    tokens = [
        (CONTEXT[name], CONTEXT[name].set(str(value)))
        for name, value in values.items()
        if value is not None
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def set_context(**values: object) -> None:
    """Set context until the current task (or request) ends: for values learnt part way
    through a connection (its client id after ``hello``)."""
    for name, value in values.items():
        CONTEXT[name].set(None if value is None else str(value))


def context() -> dict[str, str]:
    return {name: value for name, var in CONTEXT.items() if (value := var.get()) is not None}


def redact_url(url: str) -> str:
    """``url`` with its password (and any ``password=`` parameter) replaced by ``***``:
    safe for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or (not parts.netloc and not parts.query):
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if sep else netloc
    query = parts.query
    if "password" in query.lower():
        query = urlencode(
            [
                (k, "***" if k.lower() == "password" else v)
                for k, v in parse_qsl(query, keep_blank_values=True)
            ],
            safe="*",
        )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the
    context that is set, and the traceback as ``exc`` when there is one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("use_colors", None)  # uvicorn passes it to every formatter it knows
        super().__init__(*args, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        line: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **context(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger: message [connection=… client=…]``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("use_colors", None)
        super().__init__(
            "%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"
        )

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        found = context()
        if found:
            text += " [" + " ".join(f"{k}={v}" for k, v in found.items()) + "]"
        return text


class StartupFailure(logging.Filter):
    """Starlette hands uvicorn a failed lifespan's whole traceback as the message; when
    it ends in a syncline error (the store cannot open, say), its last line says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.error" and isinstance(record.msg, str):
            text = record.msg.rstrip()
            last = text.rpartition("\n")[2]
            if text.startswith("Traceback") and last.startswith("syncline."):
                record.msg, record.args = "application startup failed: %s", (last,)
        return True


def logging_config(level: str = "info", fmt: str = "text") -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` for ``level`` and ``fmt``, given to uvicorn as
    ``log_config`` (so each worker process applies it too): syncline's, uvicorn's and the
    application's loggers all write to stderr through one formatter."""
    if level not in LOG_LEVELS:
        raise ValueError(f"log level {level!r}: choose one of {', '.join(LOG_LEVELS)}")
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r}: choose text or json")
    formatter = f"{__name__}.{'JsonFormatter' if fmt == 'json' else 'TextFormatter'}"
    upper = level.upper()
    # uvicorn sets use_colors on the formatters it calls default and access.
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter}, "access": {"()": formatter}},
        "filters": {"startup_failure": {"()": f"{__name__}.StartupFailure"}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
                "filters": ["startup_failure"],
            },
        },
        "root": {"handlers": ["default"], "level": upper},
        "loggers": {
            # Children propagate to the root's handler; these set the levels.
            "syncline": {"level": upper},
            "uvicorn": {"level": upper},
            "uvicorn.error": {"level": upper},
            "uvicorn.access": {"level": upper},
        },
    }


def configure(level: str = "info", fmt: str = "text") -> dict[str, Any]:
    """Apply :func:`logging_config` in this process; returns it (for uvicorn)."""
    config = logging_config(level, fmt)
    logging.config.dictConfig(config)
    return config
