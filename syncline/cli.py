"""The ``syncline`` command line: ``demo``, ``serve`` and ``bench``."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from typing import Annotated, Any

import typer

from .exceptions import BackplaneError, StoreError
from .fanout.select import BACKPLANE_ENV, backplane_from_url
from .serving import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEP_ALIVE,
    DEFAULT_MAX_HEADER_BYTES,
    FD_RESERVE,
    ServingLimits,
    frame_limit_of,
)
from .store import DB_ENV, store_from_url

app = typer.Typer(
    name="syncline",
    help=(
        "syncline keeps a Python server's data in sync with every client, "
        "starting from server-rendered pages."
    ),
    no_args_is_help=True,
    add_completion=False,
)

Host = Annotated[str, typer.Option(help="Interface to listen on.")]
Port = Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")]
Compress = Annotated[
    bool,
    typer.Option(
        "--compress/--no-compress",
        help="permessage-deflate on WebSockets: smaller frames, but every connection "
        "compresses each fanned-out frame again and keeps about 100 KB of zlib state.",
    ),
]

_LIMITS = "Serving limits (docs/security.md)"
WsMaxSize = Annotated[
    int,
    typer.Option(
        min=0,
        help="Largest WebSocket message in bytes, decompressed (with --compress, inflating "
        "stops there); larger ones close the connection with 1009. 0: the application's "
        "SynclineServer frame limit (Limits.max_frame_bytes, 1 MiB by default).",
        rich_help_panel=_LIMITS,
    ),
]
MaxHeaderBytes = Annotated[
    int,
    typer.Option(
        min=1024,
        help="Largest request line and headers together, in bytes; larger heads are "
        "answered 431 and the connection closed.",
        rich_help_panel=_LIMITS,
    ),
]
TimeoutHeader = Annotated[
    float,
    typer.Option(
        min=0.1,
        help="Seconds from a connection's opening (or a request's first byte) to the end "
        "of its headers; slower heads (slowloris) are answered 408 and closed, and idle "
        "connections closed.",
        rich_help_panel=_LIMITS,
    ),
]
TimeoutKeepAlive = Annotated[
    int,
    typer.Option(
        min=1,
        help="Seconds an idle keep-alive HTTP connection stays open after a response.",
        rich_help_panel=_LIMITS,
    ),
]
LimitConcurrency = Annotated[
    int,
    typer.Option(
        min=0,
        help="Open connections (HTTP and WebSocket) past which new requests are answered "
        f"503. 0: the open-file limit (ulimit -n) less {FD_RESERVE}.",
        rich_help_panel=_LIMITS,
    ),
]


def _limits(*apps: object, ws_max_size: int, **options: Any) -> ServingLimits:
    return ServingLimits(ws_max_size=ws_max_size or frame_limit_of(*apps), **options)


@app.callback()
def _root() -> None:
    """syncline keeps a Python server's data in sync with every client."""


def _check_db(db: str) -> None:
    try:
        store_from_url(db)
    except StoreError as exc:
        raise typer.BadParameter(str(exc), param_hint="--db") from None


def _check_backplane(backplane: str, db: str) -> None:
    try:
        backplane_from_url(backplane, database=db)
    except BackplaneError as exc:
        raise typer.BadParameter(str(exc), param_hint="--backplane") from None


@app.command()
def demo(
    which: Annotated[
        str,
        typer.Argument(
            metavar="[board|todomvc|tiny]",
            help="board: the collaborative board (every merge policy); todomvc: TodoMVC; "
            "tiny: the smallest live example (syncline/examples/tiny/).",
        ),
    ] = "board",
    host: Host = "127.0.0.1",
    port: Port = 8000,
    compress: Compress = False,
    db: Annotated[
        str,
        typer.Option(
            help="SQLite file (created and seeded on first run) or postgresql://…?schema=s."
        ),
    ] = "",
    backplane: Annotated[
        str, typer.Option(help="memory, redis://host:6379/0 or postgres (see serve --help).")
    ] = "memory",
    console: Annotated[
        bool, typer.Option("--console", help="Run the console simulation instead of the web demo.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed for the console simulation's choices.")] = 7,
    ws_max_size: WsMaxSize = 0,
    max_header_bytes: MaxHeaderBytes = DEFAULT_MAX_HEADER_BYTES,
    timeout_header: TimeoutHeader = DEFAULT_HEADER_TIMEOUT,
    timeout_keep_alive: TimeoutKeepAlive = DEFAULT_KEEP_ALIVE,
    limit_concurrency: LimitConcurrency = 0,
) -> None:
    """Serve a demo on an embedded SQLite file: the board (default), TodoMVC or tiny.

    With --console, show the sync core at work instead: two clients edit one card at once;
    watch the merge, the conflict and the converged result.
    """
    if console:
        from ._demo import run

        asyncio.run(run(seed))
        return
    if which not in ("board", "todomvc", "tiny"):
        raise typer.BadParameter(
            f"{which!r} is not a demo; choose board, todomvc or tiny", param_hint="DEMO"
        )
    db = db or f"syncline-{which}.sqlite3"
    _check_db(db)
    _check_backplane(backplane, db)
    os.environ[BACKPLANE_ENV] = backplane
    import uvicorn

    if which == "todomvc":
        from .demo.todomvc.app import app_for
    elif which == "tiny":
        from .examples.tiny.app import tiny_app

        app_for = tiny_app  # type: ignore[assignment]  # no sessions: no secret to take
    else:
        from .demo.app import app_for

    asgi = app_for(db)
    limits = _limits(
        asgi,
        ws_max_size=ws_max_size,
        max_header_bytes=max_header_bytes,
        header_timeout=timeout_header,
        keep_alive=timeout_keep_alive,
        limit_concurrency=limit_concurrency,
    )
    typer.echo(f"syncline demo {which} on http://{host}:{port}/  (database: {db})")
    typer.echo(limits.describe())
    uvicorn.run(
        asgi,
        host=host,
        port=port,
        log_level="warning",
        ws_per_message_deflate=compress,
        **limits.uvicorn_kwargs(),
    )


@app.command()
def serve(
    target: Annotated[
        str, typer.Argument(metavar="MODULE:APP", help="The ASGI application, e.g. myapp.main:app.")
    ],
    db: Annotated[
        str,
        typer.Option(
            help="Database: a SQLite path, postgresql://user@host/db?schema=s, or memory:."
        ),
    ],
    backplane: Annotated[
        str,
        typer.Option(
            help="How nodes sharing a PostgreSQL database hear of each other's commits: "
            "memory (one node), redis://host:6379/0, or postgres (LISTEN/NOTIFY)."
        ),
    ] = "memory",
    host: Host = "127.0.0.1",
    port: Port = 8000,
    compress: Compress = False,
    ws_max_size: WsMaxSize = 0,
    max_header_bytes: MaxHeaderBytes = DEFAULT_MAX_HEADER_BYTES,
    timeout_header: TimeoutHeader = DEFAULT_HEADER_TIMEOUT,
    timeout_keep_alive: TimeoutKeepAlive = DEFAULT_KEEP_ALIVE,
    limit_concurrency: LimitConcurrency = 0,
) -> None:
    """Run your application with uvicorn. It finds --db in $SYNCLINE_DB
    (syncline.store.store_from_env()) and --backplane in $SYNCLINE_BACKPLANE
    (syncline.fanout.backplane_from_env()); run several on one PostgreSQL database
    behind a load balancer to scale out."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise typer.BadParameter(
            f"{target!r} is not MODULE:APP (for example myapp.main:app)", param_hint="MODULE:APP"
        )
    _check_db(db)
    _check_backplane(backplane, db)
    os.environ[DB_ENV] = db
    os.environ[BACKPLANE_ENV] = backplane
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise typer.BadParameter(
            f"cannot import {module_name!r}: {exc}", param_hint="MODULE:APP"
        ) from None
    if not hasattr(module, attr):
        raise typer.BadParameter(
            f"module {module_name!r} has no attribute {attr!r}", param_hint="MODULE:APP"
        )
    import uvicorn

    limits = _limits(
        getattr(module, attr),
        module,
        ws_max_size=ws_max_size,
        max_header_bytes=max_header_bytes,
        header_timeout=timeout_header,
        keep_alive=timeout_keep_alive,
        limit_concurrency=limit_concurrency,
    )
    typer.echo(f"serving {target} on http://{host}:{port}/  (database: {db})")
    typer.echo(limits.describe())
    uvicorn.run(
        target,
        host=host,
        port=port,
        log_level="info",
        loop="uvloop",
        ws_per_message_deflate=compress,
        **limits.uvicorn_kwargs(),
    )


@app.command()
def bench(
    scenarios: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[SCENARIO]...", help="fanout, mutations, ssr (default: all of them)."
        ),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="Smaller sizes and shorter runs (about 3 minutes).")
    ] = False,
    json_path: Annotated[
        str | None, typer.Option("--json", metavar="PATH", help="Also write the results here.")
    ] = None,
    tiny: Annotated[bool, typer.Option("--tiny", hidden=True)] = False,
) -> None:
    """Benchmark syncline beside its peers on loopback (each server in its own process)
    and print a table with syncline's ratio to each peer."""
    from .bench import SCENARIOS, run

    unknown = [s for s in scenarios or [] if s not in SCENARIOS]
    if unknown:
        raise typer.BadParameter(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}",
            param_hint="SCENARIO",
        )
    from pathlib import Path

    run(
        list(scenarios or []),
        quick=quick,
        json_path=Path(json_path) if json_path else None,
        tiny=tiny,
    )


def main() -> None:
    app()
