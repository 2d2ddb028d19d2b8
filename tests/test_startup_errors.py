"""Each start-up mistake is reported in one line that names it and says what to do:
an unreachable database (its password masked), a port in use (before any database file
is created), a forgotten ``lifespan=sync.lifespan``, a forgotten ``install_jinja``."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import jinja2
import pytest
import websockets
from starlette.applications import Starlette
from websockets.exceptions import ConnectionClosed

from syncline import Engine
from syncline.exceptions import SetupError, StoreError
from syncline.protocol.frames import CLOSE_INTERNAL
from syncline.server.app import SynclineServer
from syncline.ssr import install_jinja
from syncline.store.sqlite import SQLiteStore

from .live import serve
from .schemas import board_schema
from .test_serve import ROOT, free_port

SERVE = [sys.executable, "-m", "syncline", "serve"]


def serve_fails(*args: str, env: dict[str, str] | None = None) -> list[str]:
    """Run ``syncline serve`` expecting it to exit 1; its non-empty stderr lines."""
    out = subprocess.run(
        [*SERVE, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, **(env or {})},
    )
    assert out.returncode == 1, (out.returncode, out.stderr)
    return [line for line in out.stderr.splitlines() if line.strip()]


def test_an_unreachable_postgresql_is_one_line_naming_the_url_without_its_password() -> None:
    closed = free_port()  # nothing listens there
    url = f"postgresql://postgres:s3cret@127.0.0.1:{closed}/test?schema=opscli"
    lines = serve_fails("syncline.examples.notes.app:app", "--db", url, "--port", str(free_port()))
    assert len(lines) == 1, lines
    masked = f"postgresql://postgres:***@127.0.0.1:{closed}/test?schema=opscli"
    assert f"cannot open the database {masked}: " in lines[0]
    assert "refused" in lines[0] or "Connect call failed" in lines[0]
    assert "s3cret" not in lines[0]


def unwritable_dir(tmp_path: Path) -> Path:
    """A folder where no file can be created: root ignores permissions, /proc does not."""
    if os.geteuid() == 0:
        return Path("/proc")
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def test_a_sqlite_file_in_a_readonly_folder_is_one_line_naming_it(tmp_path: Path) -> None:
    path = unwritable_dir(tmp_path) / "opscli-notes.sqlite3"
    lines = serve_fails(
        "syncline.examples.notes.app:app", "--db", str(path), "--port", str(free_port())
    )
    assert len(lines) == 1, lines
    assert f"cannot open the database {path}: unable to open database file" in lines[0]


def test_a_lifespan_that_fails_on_the_store_is_one_line_too() -> None:
    """The application's own store (not --db) cannot connect: uvicorn's lifespan error
    is the exception's line, not Starlette's traceback."""
    url = f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/test"
    out = subprocess.run(
        [*SERVE, "tests.unreachable_app:app", "--db", "memory:", "--port", str(free_port())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "UNREACHABLE_DB": url},
    )
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr
    failed = [line for line in out.stderr.splitlines() if "application startup failed" in line]
    assert len(failed) == 1, out.stderr
    assert "StoreUnavailable: cannot connect to PostgreSQL (postgresql://postgres:***@" in failed[0]
    assert "s3cret" not in out.stderr


def test_a_port_in_use_is_reported_before_the_database_file_is_created(tmp_path: Path) -> None:
    db = tmp_path / "notes.sqlite3"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        lines = serve_fails("syncline.examples.notes.app:app", "--db", str(db), "--port", str(port))
    assert len(lines) == 1, lines
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in lines[0]
    assert "choose another --port" in lines[0]
    assert not db.exists()


async def test_a_forgotten_lifespan_is_answered_with_what_to_pass(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Starlette without ``lifespan=sync.lifespan``: the store never opens. Every sync
    endpoint says so (503, and a WebSocket close with the reason), logged once."""
    sync = SynclineServer(Engine(board_schema(), SQLiteStore(tmp_path / "x.sqlite3")))
    caplog.set_level(logging.ERROR, logger="syncline.server")
    async with serve(Starlette(routes=sync.routes)) as host:
        async with httpx.AsyncClient(base_url=f"http://{host}") as client:
            for _ in range(2):
                mutate = await client.post(
                    "/sync/mutate",
                    content=b'{"client": "c1", "mut": {"id": 1, "ops": []}}',
                    headers={"content-type": "application/json"},
                )
                assert mutate.status_code == 503, mutate.text
                assert "pass lifespan=sync.lifespan to Starlette" in mutate.json()["message"]
                pull = await client.get("/sync/pull", params={"queries": QUERIES})
                assert pull.status_code == 503, pull.text
                assert "lifespan=sync.lifespan" in pull.json()["message"]
                async with websockets.connect(f"ws://{host}/sync") as ws:
                    with pytest.raises(ConnectionClosed):
                        await asyncio.wait_for(ws.recv(), 10)
                assert ws.close_code == CLOSE_INTERNAL
                assert "pass lifespan=sync.lifespan" in (ws.close_reason or "")
            # The browser modules need no store.
            assert (await client.get("/sync/client.js")).status_code == 200
    said = [r for r in caplog.records if "was not started" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]


async def test_with_the_lifespan_the_same_app_serves(tmp_path: Path) -> None:
    sync = SynclineServer(Engine(board_schema(), SQLiteStore(tmp_path / "x.sqlite3")))
    async with serve(Starlette(routes=sync.routes, lifespan=sync.lifespan)) as host:
        async with httpx.AsyncClient(base_url=f"http://{host}") as client:
            pull = await client.get("/sync/pull", params={"queries": QUERIES})
            assert pull.status_code == 200, pull.text


QUERIES = '{"q": {"c": "cards"}}'


async def test_a_store_used_before_open_says_how_to_open_it(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"never opened.*pass lifespan=sync\.lifespan"):
        async with SQLiteStore(tmp_path / "x.sqlite3").read():
            pass


def test_a_template_without_install_jinja_says_to_call_it() -> None:
    template = "<body>{{ state | syncline_state }}</body>"
    with pytest.raises(SetupError, match=r"call syncline.ssr.install_jinja\(env\)"):
        jinja2.Environment(autoescape=True).from_string(template).render(state=None)
    env = jinja2.Environment(autoescape=True)
    install_jinja(env)
    assert env.filters["syncline_state"].__name__ == "<lambda>"  # the real filter now
