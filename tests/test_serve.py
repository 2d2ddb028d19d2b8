"""``syncline serve`` runs a user's app on the database named by ``--db``, and refuses
bad arguments with messages that name them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from syncline.cli import app

ROOT = Path(__file__).resolve().parent.parent


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
            "Invalid value for '--port': Input should be less than or equal to 65535",
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
