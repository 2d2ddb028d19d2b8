"""The ``syncline`` command line: ``demo``, ``serve``, ``bench``, ``inspect`` and ``backup``.

Every option can also come from an environment variable (``SYNCLINE_`` and the option's
name: ``SYNCLINE_DB``, ``SYNCLINE_PORT``, ...), shown in ``--help``."""

from __future__ import annotations

import asyncio
import enum
import importlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

from ._extras import missing_extra, require

try:
    import typer
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "typer", "The syncline command", "standard") from None

from .exceptions import BackplaneError, SetupError, StoreError
from .fanout.select import BACKPLANE_ENV, backplane_from_url
from .logs import configure, redact_url
from .serving import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEP_ALIVE,
    DEFAULT_MAX_HEADER_BYTES,
    FD_RESERVE,
    ServingLimits,
    frame_limit_of,
)
from .startup import (
    check_forwarded_ips,
    check_port,
    check_root_path,
    check_workers,
    open_database,
)
from .store import DB_ENV, store_from_url

require("The syncline command", "standard", "uvicorn")  # imported late: --help stays quick

log = logging.getLogger("syncline.cli")

app = typer.Typer(
    name="syncline",
    help=(
        "syncline keeps a Python server's data in sync with every client, "
        "starting from server-rendered pages."
    ),
    no_args_is_help=True,
    add_completion=False,
)


def _env(name: str) -> str:
    return f"SYNCLINE_{name}"


Host = Annotated[str, typer.Option(envvar=_env("HOST"), help="Interface to listen on.")]
Port = Annotated[
    int, typer.Option(min=1, max=65535, envvar=_env("PORT"), help="Port to listen on.")
]
Compress = Annotated[
    bool,
    typer.Option(
        "--compress/--no-compress",
        envvar=_env("COMPRESS"),
        help="permessage-deflate on WebSockets: smaller frames, but every connection "
        "compresses each fanned-out frame again and keeps about 100 KB of zlib state.",
    ),
]

_LIMITS = "Serving limits (docs/security.md)"
WsMaxSize = Annotated[
    int,
    typer.Option(
        envvar=_env("WS_MAX_SIZE"),
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
        envvar=_env("MAX_HEADER_BYTES"),
        min=1024,
        help="Largest request line and headers together, in bytes; larger heads are "
        "answered 431 and the connection closed.",
        rich_help_panel=_LIMITS,
    ),
]
TimeoutHeader = Annotated[
    float,
    typer.Option(
        envvar=_env("TIMEOUT_HEADER"),
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
        envvar=_env("TIMEOUT_KEEP_ALIVE"),
        min=1,
        help="Seconds an idle keep-alive HTTP connection stays open after a response.",
        rich_help_panel=_LIMITS,
    ),
]
LimitConcurrency = Annotated[
    int,
    typer.Option(
        envvar=_env("LIMIT_CONCURRENCY"),
        min=0,
        help="Open connections (HTTP and WebSocket) past which new requests are answered "
        f"503. 0: the open-file limit (ulimit -n) less {FD_RESERVE}.",
        rich_help_panel=_LIMITS,
    ),
]


_LOGS = "Logs"


class Level(enum.StrEnum):
    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"


class Format(enum.StrEnum):
    text = "text"
    json = "json"


LogLevel = Annotated[
    Level,
    typer.Option(
        envvar=_env("LOG_LEVEL"),
        case_sensitive=False,
        help="Least severe level logged, for syncline's, uvicorn's and the application's "
        "loggers alike.",
        rich_help_panel=_LOGS,
    ),
]
LogFormat = Annotated[
    Format,
    typer.Option(
        envvar=_env("LOG_FORMAT"),
        case_sensitive=False,
        help="text, or json: one object per line with time, level, logger, message and the "
        "connection, client, principal and mutation it concerns where known.",
        rich_help_panel=_LOGS,
    ),
]


def _limits(*apps: object, ws_max_size: int, **options: Any) -> ServingLimits:
    return ServingLimits(ws_max_size=ws_max_size or frame_limit_of(*apps), **options)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"syncline {version('syncline')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("syncline (not installed: no version)")
        raise typer.Exit()


@app.callback()
def _root(
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print syncline's version and exit.",
        ),
    ] = False,
) -> None:
    """syncline keeps a Python server's data in sync with every client."""


def _fail(message: str) -> NoReturn:
    """One line on stderr, exit status 1: a start-up error, not a usage error."""
    log.error("%s", message)
    raise typer.Exit(1)


def _checked(check: Callable[[], None]) -> None:
    try:
        check()
    except SetupError as exc:
        _fail(str(exc))


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


def _run_options(
    *,
    db: str,
    backplane: str,
    host: str,
    port: int,
    log_level: str,
    log_format: str,
    workers: int = 1,
    forwarded_allow_ips: str | None = None,
    root_path: str = "",
) -> dict[str, Any]:
    """Check what ``serve`` and ``demo`` share, in the order that leaves nothing behind
    on a mistake: arguments, then logging, then the port (before any database file is
    created). Returns uvicorn's log_config."""
    _check_db(db)
    _check_backplane(backplane, db)
    checks: list[tuple[Callable[[], None], str]] = [
        (lambda: check_workers(workers, db, backplane), "--workers"),
        (lambda: check_forwarded_ips(forwarded_allow_ips), "--forwarded-allow-ips"),
        (lambda: check_root_path(root_path), "--root-path"),
    ]
    for check, hint in checks:
        try:
            check()
        except SetupError as exc:
            raise typer.BadParameter(str(exc), param_hint=hint) from None
    log_config = configure(log_level, log_format)
    _checked(lambda: check_port(host, port))
    return log_config


@app.command()
def demo(
    which: Annotated[
        str,
        typer.Argument(
            metavar="[board|todomvc|tiny]",
            envvar=_env("DEMO"),
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
            envvar=DB_ENV,
            help="SQLite file (created and seeded on first run) or postgresql://…?schema=s.",
        ),
    ] = "",
    backplane: Annotated[
        str,
        typer.Option(
            envvar=BACKPLANE_ENV,
            help="memory, redis://host:6379/0 or postgres (see serve --help).",
        ),
    ] = "memory",
    console: Annotated[
        bool,
        typer.Option(
            "--console",
            envvar=_env("DEMO_CONSOLE"),
            help="Run the console simulation instead of the web demo.",
        ),
    ] = False,
    seed: Annotated[
        int,
        typer.Option(envvar=_env("DEMO_SEED"), help="Seed for the console simulation's choices."),
    ] = 7,
    ws_max_size: WsMaxSize = 0,
    max_header_bytes: MaxHeaderBytes = DEFAULT_MAX_HEADER_BYTES,
    timeout_header: TimeoutHeader = DEFAULT_HEADER_TIMEOUT,
    timeout_keep_alive: TimeoutKeepAlive = DEFAULT_KEEP_ALIVE,
    limit_concurrency: LimitConcurrency = 0,
    log_level: LogLevel = Level.warning,
    log_format: LogFormat = Format.text,
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
    log_config = _run_options(
        db=db,
        backplane=backplane,
        host=host,
        port=port,
        log_level=log_level.value,
        log_format=log_format.value,
    )
    os.environ[BACKPLANE_ENV] = backplane
    _checked(lambda: open_database(db))
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
    typer.echo(f"syncline demo {which} on http://{host}:{port}/  (database: {redact_url(db)})")
    typer.echo(limits.describe())
    uvicorn.run(
        asgi,
        host=host,
        port=port,
        log_config=log_config,
        log_level=log_level.value,
        ws_per_message_deflate=compress,
        **limits.uvicorn_kwargs(),
    )


_PROXY = "Behind a proxy (docs/operations.md)"


@app.command()
def serve(
    target: Annotated[
        str,
        typer.Argument(
            metavar="MODULE:APP",
            envvar=_env("APP"),
            help="The ASGI application, e.g. myapp.main:app.",
        ),
    ],
    db: Annotated[
        str,
        typer.Option(
            envvar=DB_ENV,
            help="Database: a SQLite path, postgresql://user@host/db?schema=s, or memory:.",
        ),
    ],
    backplane: Annotated[
        str,
        typer.Option(
            envvar=BACKPLANE_ENV,
            help="How nodes sharing a PostgreSQL database hear of each other's commits: "
            "memory (one node), redis://host:6379/0, or postgres (LISTEN/NOTIFY).",
        ),
    ] = "memory",
    host: Host = "127.0.0.1",
    port: Port = 8000,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            envvar=_env("WORKERS"),
            help="Worker processes, each serving its share of the connections. More than 1 "
            "needs a backplane between processes (redis://… or postgres): an in-memory "
            "one would tell each worker only of its own commits.",
        ),
    ] = 1,
    compress: Compress = False,
    proxy_headers: Annotated[
        bool,
        typer.Option(
            "--proxy-headers/--no-proxy-headers",
            envvar=_env("PROXY_HEADERS"),
            help="Take the client's address and scheme from X-Forwarded-For and "
            "X-Forwarded-Proto, when the peer is in --forwarded-allow-ips.",
            rich_help_panel=_PROXY,
        ),
    ] = True,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            envvar=_env("FORWARDED_ALLOW_IPS"),
            help="Comma-separated addresses or networks of the proxies whose X-Forwarded-* "
            "headers are trusted, or *; unset: uvicorn's default, "
            "$FORWARDED_ALLOW_IPS or 127.0.0.1,::1.",
            rich_help_panel=_PROXY,
        ),
    ] = None,
    root_path: Annotated[
        str,
        typer.Option(
            envvar=_env("ROOT_PATH"),
            help="The path prefix the proxy strips (such as /app), for URLs the application "
            "builds.",
            rich_help_panel=_PROXY,
        ),
    ] = "",
    ws_max_size: WsMaxSize = 0,
    max_header_bytes: MaxHeaderBytes = DEFAULT_MAX_HEADER_BYTES,
    timeout_header: TimeoutHeader = DEFAULT_HEADER_TIMEOUT,
    timeout_keep_alive: TimeoutKeepAlive = DEFAULT_KEEP_ALIVE,
    limit_concurrency: LimitConcurrency = 0,
    log_level: LogLevel = Level.info,
    log_format: LogFormat = Format.text,
    metrics_path: Annotated[
        str | None,
        typer.Option(
            envvar=_env("METRICS_PATH"),
            help="Also answer Prometheus metrics of the application's SynclineServer at "
            "this path, e.g. /metrics (needs pip install 'syncline[metrics]').",
        ),
    ] = None,
) -> None:
    """Run your application with uvicorn. The application finds --db in $SYNCLINE_DB
    (syncline.store.store_from_env()) and --backplane in $SYNCLINE_BACKPLANE
    (syncline.fanout.backplane_from_env()); run several on one PostgreSQL database
    behind a load balancer to scale out."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise typer.BadParameter(
            f"{target!r} is not MODULE:APP (for example myapp.main:app)", param_hint="MODULE:APP"
        )
    log_config = _run_options(
        db=db,
        backplane=backplane,
        host=host,
        port=port,
        log_level=log_level.value,
        log_format=log_format.value,
        workers=workers,
        forwarded_allow_ips=forwarded_allow_ips,
        root_path=root_path,
    )
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
    _checked(lambda: open_database(db))
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
    served, factory = target, False
    if metrics_path is not None:
        from .exceptions import MissingExtra

        try:
            from .metrics import serve_with_metrics

            served, factory = serve_with_metrics(target, metrics_path), True
        except (MissingExtra, ValueError) as exc:  # MetricsPathError is a ValueError
            raise typer.BadParameter(str(exc), param_hint="--metrics-path") from None
    log.info(
        "serving %s on http://%s:%d%s with %d worker(s); database %s, backplane %s; "
        "logs %s at %s; proxy headers %s from %s",
        target,
        host,
        port,
        root_path or "/",
        workers,
        redact_url(db),
        redact_url(backplane),
        log_format.value,
        log_level.value,
        "on" if proxy_headers else "off",
        forwarded_allow_ips or os.environ.get("FORWARDED_ALLOW_IPS") or "127.0.0.1,::1",
    )
    log.info("%s", limits.describe())
    extra: dict[str, Any] = {}
    if forwarded_allow_ips is not None:
        extra["forwarded_allow_ips"] = forwarded_allow_ips
    uvicorn.run(
        served,
        factory=factory,
        host=host,
        port=port,
        workers=workers,
        log_config=log_config,
        log_level=log_level.value,
        loop="uvloop",
        ws_per_message_deflate=compress,
        proxy_headers=proxy_headers,
        root_path=root_path,
        **extra,
        **limits.uvicorn_kwargs(),
    )


@app.command()
def bench(
    scenarios: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[SCENARIO]...",
            help="fanout, mutations, ssr, resume, connections, matching, multinode "
            "(default: all of them).",
        ),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="Smaller sizes and shorter runs (about 3 minutes).")
    ] = False,
    json_path: Annotated[
        str | None, typer.Option("--json", metavar="PATH", help="Also write the results here.")
    ] = None,
    postgres_url: Annotated[
        str | None,
        typer.Option(
            envvar="SYNCLINE_BENCH_POSTGRES",
            metavar="URL",
            help="A PostgreSQL database (postgresql://user@host/db) for mutations' "
            "PostgreSQL rows and the multinode scenario; each run makes its own schema "
            "there and drops it. Unset: no PostgreSQL rows.",
        ),
    ] = None,
    charts: Annotated[
        str | None,
        typer.Option(
            "--charts", metavar="DIR", help="Also draw SVG charts of the results into DIR."
        ),
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

    if postgres_url is not None:
        from .bench.scenarios import postgres_problem
        from .store import split_schema

        if not postgres_url.startswith(("postgresql://", "postgres://")):
            raise typer.BadParameter(
                f"{redact_url(postgres_url)!r} is not a postgresql:// URL",
                param_hint="--postgres-url",
            )
        postgres_url = split_schema(postgres_url)[0]  # each run makes its own schema
        problem = postgres_problem(postgres_url)
        if problem is not None:
            _fail(f"cannot connect to --postgres-url {redact_url(postgres_url)}: {problem}")
    run(
        list(scenarios or []),
        quick=quick,
        json_path=Path(json_path) if json_path else None,
        tiny=tiny,
        postgres_url=postgres_url,
        charts_dir=Path(charts) if charts else None,
    )


@app.command()
def inspect(
    url: Annotated[
        str,
        typer.Argument(
            metavar="URL",
            help="The server (http://host:8000), its sync path (…/sync) or its inspector "
            "page (…/sync/inspect).",
        ),
    ],
    header: Annotated[
        list[str] | None,
        typer.Option(
            "--header",
            "-H",
            metavar="'NAME: VALUE'",
            help="A request header the server's inspect guard checks, such as "
            "'Cookie: session=…' or 'Authorization: Bearer …'; repeatable.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON instead of tables.")
    ] = False,
) -> None:
    """Print what the server's inspector shows (SynclineServer(inspect=...)): connections,
    subscriptions, fan-out per query, recent conflicts and rejects, the last changes."""
    import json

    from rich.console import Console

    from .server.inspect_report import InspectFetchError, fetch_summary, render_summary

    headers: dict[str, str] = {}
    for item in header or []:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise typer.BadParameter(f"{item!r} is not 'NAME: VALUE'", param_hint="--header")
        headers[name.strip()] = value.strip()
    try:
        summary = fetch_summary(url, headers)
    except InspectFetchError as exc:
        typer.echo(f"syncline inspect: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    console = Console()
    for part in render_summary(summary):
        console.print(part)


@app.command()
def backup(
    db: Annotated[str, typer.Argument(metavar="DB", help="The SQLite database file.")],
    dest: Annotated[str, typer.Argument(metavar="DEST", help="The backup file to create.")],
) -> None:
    """Copy a SQLite database, while it serves, with SQLite's online backup API: the copy
    holds every mutation acknowledged before it began. For PostgreSQL use pg_dump."""
    from .backup import BackupError, backup_sqlite

    try:
        result = backup_sqlite(db, dest)
    except BackupError as exc:
        typer.echo(f"syncline backup: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"backed up {db} to {dest}: head {result.head}, epoch {result.epoch}, "
        f"schema version {result.schema_version}, {result.size} bytes"
    )


def main() -> None:
    app()
