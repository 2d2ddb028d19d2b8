"""The ``syncline`` command line: ``demo`` and ``serve``."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from .exceptions import BackplaneError, StoreError
from .fanout.backplane import BACKPLANE_ENV, backplane_from_url
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
DEMO_DB = Path("syncline-demo.sqlite3")


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
    host: Host = "127.0.0.1",
    port: Port = 8000,
    db: Annotated[
        str,
        typer.Option(
            help="SQLite file (created and seeded on first run) or postgresql://…?schema=s."
        ),
    ] = str(DEMO_DB),
    backplane: Annotated[
        str, typer.Option(help="memory, redis://host:6379/0 or postgres (see serve --help).")
    ] = "memory",
    console: Annotated[
        bool, typer.Option("--console", help="Run the console simulation instead of the web demo.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed for the console simulation's choices.")] = 7,
) -> None:
    """Serve the demo: a server-rendered page with its embedded sync state.

    With --console, show the sync core at work instead: two clients edit one card at once;
    watch the merge, the conflict and the converged result.
    """
    if console:
        from ._demo import run

        asyncio.run(run(seed))
        return
    _check_db(db)
    _check_backplane(backplane, db)
    os.environ[BACKPLANE_ENV] = backplane
    import uvicorn

    from .demo.app import app_for

    typer.echo(f"syncline demo on http://{host}:{port}/  (database: {db})")
    uvicorn.run(app_for(db), host=host, port=port, log_level="warning")


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

    typer.echo(f"serving {target} on http://{host}:{port}/  (database: {db})")
    uvicorn.run(target, host=host, port=port, log_level="info", loop="uvloop", http="httptools")


def main() -> None:
    app()
