"""``syncline serve --log-format json``: one JSON object per line, from syncline's,
uvicorn's and the application's loggers alike, each naming the connection, client,
principal and mutation it concerns; passwords never reach a log line."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncline.client import Client
from syncline.logs import JsonFormatter, TextFormatter, bind, logging_config, redact_url

from .logging_app import schema
from .test_serve import free_port, serve_in_background, wait_until_up


@contextmanager
def serving(
    tmp_path: Path, app: str, *options: str, env: dict[str, str] | None = None
) -> Iterator[tuple[int, Path]]:
    """``syncline serve app`` on a free port, its output to a file: (port, log path)."""
    port = free_port()
    log_path = tmp_path / "serve.log"
    proc = serve_in_background([app, "--port", str(port), *options], env or {}, log_path)
    try:
        wait_until_up(port, proc)
        yield port, log_path
    finally:
        proc.terminate()
        proc.wait(10)


def json_lines(path: Path) -> list[dict[str, Any]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line parses, or this fails


def test_json_log_lines_name_the_client_and_mutation_of_a_websocket_client(
    tmp_path: Path,
) -> None:
    db = tmp_path / "notes.sqlite3"
    with serving(tmp_path, "tests.logging_app:app", "--db", str(db), "--log-format", "json") as (
        port,
        log_path,
    ):

        async def write_a_note() -> str:
            async with Client(f"ws://127.0.0.1:{port}/sync", schema) as client:
                client.insert("notes", "n1", text="hello")
                await client.wait_synced(timeout=20)
                return client.client_id

        client_id = asyncio.run(write_a_note())
        deadline = time.monotonic() + 20
        while True:
            lines = json_lines(log_path)
            ruled = [line for line in lines if line["logger"] == "tests.logging_app"]
            if ruled or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys(), line
    assert ruled, "the application's INFO line is missing"
    assert ruled[0]["client"] == client_id
    assert ruled[0]["mutation"] == "1"
    assert ruled[0]["principal"] == "anonymous"
    assert ruled[0]["connection"].startswith("ws-")
    assert ruled[0]["level"] == "info"
    loggers = {line["logger"] for line in lines}
    # syncline's own INFO lines show, and uvicorn's go through the same formatter.
    assert {"syncline.cli", "syncline.server", "uvicorn.error", "uvicorn.access"} <= loggers
    started = [line for line in lines if line["message"].startswith("sync node started")]
    assert started and f"SQLiteStore {db}" in started[0]["message"], started
    serving_line = next(line for line in lines if line["message"].startswith("serving "))
    assert str(db) in serving_line["message"] and "backplane memory" in serving_line["message"]


def test_log_level_and_format_come_from_the_environment(tmp_path: Path) -> None:
    env = {"SYNCLINE_LOG_FORMAT": "json", "SYNCLINE_LOG_LEVEL": "warning"}
    with serving(
        tmp_path, "tests.logging_app:app", "--db", str(tmp_path / "n.sqlite3"), env=env
    ) as (port, log_path):
        httpx.get(f"http://127.0.0.1:{port}/sync/client.js", timeout=5)
    lines = json_lines(log_path)  # JSON: the format came from the environment
    assert all(line["level"] in ("warning", "error", "critical") for line in lines), lines


def test_the_startup_line_masks_the_database_password() -> None:
    assert redact_url("postgresql://app:s3cret@db:5432/x?schema=s") == (
        "postgresql://app:***@db:5432/x?schema=s"
    )
    assert redact_url("postgresql://db/x?user=app&password=s3cret") == (
        "postgresql://db/x?user=app&password=***"
    )
    assert redact_url("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"
    assert redact_url("postgresql://app@db/x") == "postgresql://app@db/x"
    assert redact_url("notes.sqlite3") == "notes.sqlite3"


def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("syncline.server", level, __file__, 1, message, (), None)


def test_the_formatters_carry_the_context_bound_around_a_line() -> None:
    with bind(connection="ws-7", client="c1", principal="ann", mutation=3):
        line = json.loads(JsonFormatter().format(record("applied")))
        text = TextFormatter().format(record("applied"))
    assert line["client"] == "c1" and line["mutation"] == "3" and line["connection"] == "ws-7"
    assert line["principal"] == "ann" and line["message"] == "applied"
    assert text.endswith("applied [connection=ws-7 client=c1 principal=ann mutation=3]")
    outside = json.loads(JsonFormatter().format(record("later")))
    assert "client" not in outside and "mutation" not in outside  # the block reset them


def test_a_traceback_is_one_json_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(rec)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exc"]


def test_logging_config_refuses_unknown_levels_and_formats() -> None:
    with pytest.raises(ValueError, match="log level 'loud'"):
        logging_config("loud")
    with pytest.raises(ValueError, match="log format 'xml'"):
        logging_config("info", "xml")


@pytest.mark.parametrize(
    ("options", "client"),
    [
        (["--forwarded-allow-ips", "127.0.0.1"], "203.0.113.7"),
        (["--forwarded-allow-ips", "10.0.0.0/8"], "127.0.0.1"),  # not a trusted proxy
        (["--no-proxy-headers", "--forwarded-allow-ips", "*"], "127.0.0.1"),
    ],
)
def test_proxy_options_decide_whose_address_the_access_log_shows(
    tmp_path: Path, options: list[str], client: str
) -> None:
    db = str(tmp_path / "n.sqlite3")
    args = ["--db", db, "--log-format", "json", *options]
    with serving(tmp_path, "tests.logging_app:app", *args) as (port, log_path):
        httpx.get(
            f"http://127.0.0.1:{port}/sync/client.js",
            headers={"x-forwarded-for": "203.0.113.7"},
            timeout=5,
        )
        deadline = time.monotonic() + 20
        while True:
            access = [
                line["message"]
                for line in json_lines(log_path)
                if line["logger"] == "uvicorn.access" and "client.js" in line["message"]
            ]
            if access or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert access, "no access log line"
    assert access[-1].startswith(f"{client}:"), access
