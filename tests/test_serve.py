"""``syncline serve`` runs a user's app on the database named by ``--db``, and refuses
bad arguments with messages that name them."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from syncline import Engine
from syncline.cli import app
from syncline.server.app import SynclineServer
from syncline.store import store_from_url

from .live import serve
from .schemas import board_schema

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_syncline_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """serve sets $SYNCLINE_DB and $SYNCLINE_BACKPLANE for the application, and reads
    every option from $SYNCLINE_*: no test may see another's."""
    for name in [n for n in os.environ if n.startswith("SYNCLINE_")] + [
        "SYNCLINE_DB",
        "SYNCLINE_BACKPLANE",
    ]:
        monkeypatch.setenv(name, "")  # recorded, so put back (or removed) afterwards
        monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "nomodule", "--db", "x.sqlite3"], "is not MODULE:APP"),
        (
            ["serve", "syncline.examples.notes.app:nothing", "--db", "memory:"],
            "has no attribute 'nothing'",
        ),
        (["serve", "no_such_module_x:app", "--db", "memory:"], "cannot import 'no_such_module_x'"),
        (
            ["serve", "syncline.examples.notes.app:app", "--db", "mysql://db/x"],
            "unsupported database URL",
        ),
        (
            ["serve", "syncline.examples.notes.app:app", "--db", "/no/such/folder/x.sqlite3"],
            "does not exist",
        ),
        (["serve", "syncline.examples.notes.app:app"], "Missing option '--db'"),
        (
            [
                "serve",
                "syncline.examples.notes.app:app",
                "--db",
                "x.sqlite3",
                "--backplane",
                "postgres",
            ],
            "--backplane postgres uses the store's database: give a postgresql:// --db",
        ),
        (
            [
                "serve",
                "syncline.examples.notes.app:app",
                "--db",
                "x.sqlite3",
                "--backplane",
                "kafka://x",
            ],
            "unsupported backplane 'kafka://x'",
        ),
        (
            ["demo", "--port", "70000"],
            "Invalid value for '--port' (env var: 'SYNCLINE_PORT'): "
            "Input should be less than or equal to 65535",
        ),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert message in " ".join(result.output.split()), result.output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_python_clients_sync_through_syncline_serve(tmp_path: Path) -> None:
    """The README's walk-through: syncline serve, then two clients syncing."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "syncline",
            "serve",
            "syncline.examples.notes.app:app",
            "--db",
            str(tmp_path / "notes.sqlite3"),
            "--port",
            str(port),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(port, server)
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "syncline.examples.notes.two_clients",
                f"ws://127.0.0.1:{port}/sync",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert "bob got it: 'Hello from Ann'" in out.stdout
        assert "both converged on: {" in out.stdout and "'likes': 2" in out.stdout
        assert "Hi! Hello from Ann, edited" in out.stdout  # both text edits kept
    finally:
        server.terminate()
        server.wait(10)


def wait_until_up(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return
        except httpx.TransportError:
            assert proc.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)


def test_serve_runs_the_app_on_the_given_database(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "notes.sqlite3"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "syncline",
            "serve",
            "syncline.examples.notes.app:app",
            "--db",
            str(db),
            "--port",
            str(port),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        assert page.status_code == 200 and 'id="syncline-state"' in page.text
        assert page.headers["cache-control"] == "private, no-store"
        assert db.exists()
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--db", "x.sqlite3", "--workers", "2"],
            "--workers 2 with --backplane memory: each worker process has its own in-memory "
            "backplane",
        ),
        (
            ["--db", "memory:", "--workers", "3", "--backplane", "redis://127.0.0.1:6379/0"],
            "--workers 3 with --db memory: gives each worker its own empty database",
        ),
        (["--db", "x.sqlite3", "--workers", "0"], "Invalid value for '--workers' (env var"),
        (["--db", "x.sqlite3", "--forwarded-allow-ips", "10.0.0.0/8,proxy"], "'proxy' is not"),
        (["--db", "x.sqlite3", "--root-path", "app/"], "--root-path 'app/': give the prefix"),
        (["--db", "x.sqlite3", "--log-level", "loud"], "Invalid value for '--log-level' (env var"),
        (["--db", "x.sqlite3", "--log-format", "xml"], "Invalid value for '--log-format' (env var"),
    ],
)
def test_serve_options_are_validated_with_messages_naming_the_problem(
    args: list[str], message: str
) -> None:
    result = CliRunner().invoke(
        app, ["serve", "syncline.examples.notes.app:app", *args], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.replace("│", " ").split()), result.output


def test_the_workers_refusal_says_what_to_use_instead() -> None:
    result = CliRunner().invoke(
        app,
        ["serve", "syncline.examples.notes.app:app", "--db", "x.sqlite3", "--workers", "2"],
        env={"COLUMNS": "300"},
    )
    text = " ".join(result.output.replace("│", " ").split())
    assert "use --backplane redis://host:6379/0, or postgres with a postgresql:// --db" in text


def serve_in_background(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "syncline", "serve", *args],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )


def test_serve_takes_its_options_from_the_environment(tmp_path: Path) -> None:
    """$SYNCLINE_DB (which serve used to ignore), $SYNCLINE_PORT, $SYNCLINE_APP, ..."""
    port = free_port()
    db = tmp_path / "from-env.sqlite3"
    env = {
        "SYNCLINE_APP": "syncline.examples.notes.app:app",
        "SYNCLINE_DB": str(db),
        "SYNCLINE_PORT": str(port),
        "SYNCLINE_HOST": "127.0.0.1",
        "SYNCLINE_ROOT_PATH": "/notes",
        "SYNCLINE_LOG_FORMAT": "json",
    }
    proc = serve_in_background([], env, tmp_path / "serve.log")
    try:
        wait_until_up(port, proc)
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200 and 'id="syncline-state"' in page.text
        assert db.exists()
    finally:
        proc.terminate()
        proc.wait(10)
    lines = [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines()]
    started = next(line for line in lines if line["message"].startswith("serving "))
    assert f"on http://127.0.0.1:{port}/notes" in started["message"]
    assert f"database {db}" in started["message"]


def test_several_workers_serve_with_a_backplane_between_them(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    args = [
        "syncline.examples.notes.app:app",
        "--db",
        str(tmp_path / "w.sqlite3"),
        "--port",
        str(port),
    ]
    args += ["--workers", "2", "--backplane", "redis://127.0.0.1:6379/0"]
    proc = serve_in_background(args, {"SYNCLINE_LOG_FORMAT": "json"}, log)
    try:
        wait_until_up(port, proc)
        deadline = time.monotonic() + 30
        while log.read_text().count("Application startup complete") < 2:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
    finally:
        proc.terminate()
        proc.wait(20)
    assert "with 2 worker(s)" in log.read_text()


def test_browser_modules_carry_validators_and_a_revalidation_gets_304(tmp_path: Path) -> None:
    async def check() -> None:
        sync = SynclineServer(Engine(board_schema(), store_from_url("memory:")))
        async with serve(sync.app) as host:
            async with httpx.AsyncClient(base_url=f"http://{host}") as client:
                first = await client.get("/sync/client.js")
                assert first.status_code == 200 and first.content
                etag, modified = first.headers["etag"], first.headers["last-modified"]
                assert etag.startswith('"') and not etag.startswith("W/")
                assert first.headers["cache-control"] == "no-cache"
                again = await client.get("/sync/client.js", headers={"if-none-match": etag})
                assert again.status_code == 304 and again.content == b""
                assert again.headers["etag"] == etag
                listed = await client.get(
                    "/sync/client.js", headers={"if-none-match": f'"other", W/{etag}'}
                )
                assert listed.status_code == 304
                by_date = await client.get(
                    "/sync/client.js", headers={"if-modified-since": modified}
                )
                assert by_date.status_code == 304
                changed = await client.get("/sync/client.js", headers={"if-none-match": '"x"'})
                assert changed.status_code == 200 and changed.content == first.content
                # If-None-Match wins over If-Modified-Since (RFC 9110)
                both = await client.get(
                    "/sync/client.js",
                    headers={"if-none-match": '"x"', "if-modified-since": modified},
                )
                assert both.status_code == 200
                other = await client.get("/sync/replica.js")
                assert other.status_code == 200 and other.headers["etag"] != etag

    asyncio.run(check())
