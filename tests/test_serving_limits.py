"""``syncline serve`` with its defaults bounds what a connection may cost: trickled or
idle request heads are closed at the header timeout, oversized heads are refused
before they are buffered, a WebSocket message over the frame limit closes with 1009
before it is read, and with ``--compress`` a deflate bomb stops inflating there."""

from __future__ import annotations

import asyncio
import contextlib
import json
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from syncline.cli import app
from syncline.protocol.frames import CLOSE_TOO_BIG
from syncline.serving import DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_HEADER_BYTES

from .test_serve import ROOT, free_port, wait_until_up

MiB = 1 << 20
SERVE = [sys.executable, "-m", "syncline", "serve", "syncline.examples.notes.app:app"]


@contextlib.contextmanager
def served(tmp_path: Path, *options: str) -> Iterator[tuple[int, int]]:
    """``syncline serve syncline.examples.notes.app:app`` on a free port: (port, pid)."""
    port = free_port()
    db = str(tmp_path / "notes.sqlite3")
    proc = subprocess.Popen(
        [*SERVE, "--db", db, "--port", str(port), *options],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(port, proc)
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def peak_rss(pid: int) -> int:
    """The process's high-water resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/pid/status")


def responsive(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200


def test_slowloris_connections_are_closed_at_the_header_timeout(tmp_path: Path) -> None:
    """Trickled heads and a trickled second head on a keep-alive connection are answered
    408 and closed, idle sockets closed; meanwhile a page is served and a long poll that outlasts
    the header timeout is not cut."""
    with served(tmp_path) as (port, _pid), ThreadPoolExecutor(1) as pool:
        base = f"http://127.0.0.1:{port}/sync/pull"
        queries = json.dumps({"n": {"c": "notes"}})
        cursor = httpx.get(base, params={"queries": queries}, timeout=10).json()["cursor"]
        wait = DEFAULT_HEADER_TIMEOUT + 5
        params = {"queries": queries, "since": cursor, "wait": str(wait)}
        poll = pool.submit(httpx.get, base, params=params, timeout=wait + 30)
        kept_alive = socket.create_connection(("127.0.0.1", port), timeout=10)
        kept_alive.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(kept_alive).startswith(b"HTTP/1.1 200 ")
        trickling = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
        trickling.append(kept_alive)
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(50)]
        for s in trickling:
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sel = selectors.DefaultSelector()
        for s in trickling + idle:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        opened = time.monotonic()
        deadline = opened + DEFAULT_HEADER_TIMEOUT + 20
        open_ = set(trickling + idle)
        answers: list[bytes] = []
        served_meanwhile = False
        next_trickle = opened
        try:
            while open_ and time.monotonic() < deadline:
                if time.monotonic() >= next_trickle:  # one more header line a second
                    for s in open_ & set(trickling):
                        with contextlib.suppress(OSError):
                            s.send(b"X-Slow: 1\r\n")
                    next_trickle += 1
                if not served_meanwhile and time.monotonic() > opened + 2:
                    served_meanwhile = responsive(port)  # a visitor is served meanwhile
                for key, _ in sel.select(timeout=0.2):
                    s = key.fileobj
                    assert isinstance(s, socket.socket)
                    try:
                        data = s.recv(4096)
                    except OSError:
                        data = b""
                    if data:
                        answers.append(data)
                    else:
                        sel.unregister(s)
                        open_.discard(s)
            assert not open_, (
                f"{len(open_)} of {len(trickling + idle)} slow connections still open "
                f"{time.monotonic() - opened:.0f} s after opening"
            )
            assert served_meanwhile
            assert len(answers) == len(trickling)  # the idle ones are closed unanswered
            assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), answers[:3]
            assert b"request headers not received within" in answers[0]
            polled = poll.result()
            assert polled.status_code == 200  # a long poll held past the header timeout
            assert polled.elapsed.total_seconds() > DEFAULT_HEADER_TIMEOUT
            assert responsive(port)
        finally:
            for s in trickling + idle:
                s.close()


def read_response(s: socket.socket) -> bytes:
    """One whole response with a content-length, read from a blocking socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536) or b"EOF"
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(ln for ln in head.lower().split(b"\r\n") if ln.startswith(b"content-length:")).split(
            b":"
        )[1]
    )
    while len(body) < length:
        body += s.recv(65536)
    return data


def test_an_oversized_request_head_is_refused_with_431(tmp_path: Path) -> None:
    with served(tmp_path) as (port, _pid):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            # Just over the limit, then wait: the server reads it all and answers.
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * DEFAULT_MAX_HEADER_BYTES)
            answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 431 "), answer
        assert b"request line and headers exceed" in answer
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /" + b"a" * (DEFAULT_MAX_HEADER_BYTES + 1000) + b" HTTP/1.1\r\n")
            answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 431 "), answer
        # A head within the limit is still served.
        page = httpx.get(f"http://127.0.0.1:{port}/", headers={"x-fine": "a" * 8000}, timeout=10)
        assert page.status_code == 200


def test_a_50_mb_request_head_is_cut_off_and_the_server_stays_responsive(
    tmp_path: Path,
) -> None:
    with served(tmp_path) as (port, _pid):
        chunk = b"a" * MiB
        sent = 0
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
            with contextlib.suppress(OSError):  # reset or broken pipe: refused
                while sent < 50 * MiB:
                    s.sendall(chunk)
                    sent += len(chunk)
        assert sent < 50 * MiB, "the server took a 50 MB header"
        assert responsive(port)


def test_a_websocket_message_over_the_frame_limit_closes_1009_unread(tmp_path: Path) -> None:
    with served(tmp_path) as (port, pid):
        # A frame header announcing 15 MiB and a little of it: refused on the header.
        assert asyncio.run(announce_and_close_code(port, 15 * MiB)) == CLOSE_TOO_BIG
        # The whole 15 MiB sent: not buffered on the way to being refused.
        before = peak_rss(pid)
        asyncio.run(send_and_close_code(port, "x" * (15 * MiB), compression=None))
        grown = peak_rss(pid) - before
        assert grown < 4 * MiB, f"peak RSS grew {grown / MiB:.1f} MiB for a refused message"
        assert responsive(port)


def test_a_deflate_bomb_with_compress_stops_inflating_at_the_limit(tmp_path: Path) -> None:
    with served(tmp_path, "--compress") as (port, pid):
        before = peak_rss(pid)
        bomb = "0" * (15 * MiB)  # about 15 KB on the wire
        code = asyncio.run(send_and_close_code(port, bomb, compression="deflate", times=30))
        assert code == CLOSE_TOO_BIG
        grown = peak_rss(pid) - before
        assert grown < 4 * MiB, f"peak RSS grew {grown / MiB:.1f} MiB for a deflate bomb"
        assert responsive(port)


def test_past_the_connection_limit_new_requests_are_answered_503(tmp_path: Path) -> None:
    async def hold_and_get(port: int) -> tuple[int, int]:
        held = [await connect(f"ws://127.0.0.1:{port}/sync") for _ in range(20)]
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                over = (await http.get(f"http://127.0.0.1:{port}/")).status_code
            for _ in range(2):  # the limit counts the request's own connection too
                await held.pop().close()
            deadline = time.monotonic() + 10
            under = over
            while under == 503 and time.monotonic() < deadline:  # until the server sees it
                await asyncio.sleep(0.05)
                async with httpx.AsyncClient(timeout=10) as http:
                    under = (await http.get(f"http://127.0.0.1:{port}/")).status_code
            return over, under
        finally:
            for ws in held:
                await ws.close()

    with served(tmp_path, "--limit-concurrency", "20") as (port, _pid):
        assert asyncio.run(hold_and_get(port)) == (503, 200)


async def announce_and_close_code(port: int, length: int) -> int | None:
    """Send a masked text frame's header announcing ``length`` bytes, then 64 KiB of it."""
    async with connect(f"ws://127.0.0.1:{port}/sync", compression=None) as ws:
        header = bytes([0x81, 0x80 | 127]) + length.to_bytes(8, "big") + b"\0\0\0\0"
        ws.transport.write(header + b"x" * 65536)
        with contextlib.suppress(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 15)  # nothing comes before the close
        await asyncio.wait_for(ws.wait_closed(), 15)
        return ws.close_code


async def send_and_close_code(
    port: int, message: str, *, compression: str | None, times: int = 1
) -> int | None:
    """Send ``message`` up to ``times`` times, each followed by a ping whose pong says the
    server read it; the close code the server sent (None: it took them all)."""
    async with connect(
        f"ws://127.0.0.1:{port}/sync", compression=compression, max_size=None, max_queue=None
    ) as ws:
        if compression:
            extensions = ws.response.headers.get("sec-websocket-extensions", "")
            assert extensions.startswith("permessage-deflate"), extensions
        with contextlib.suppress(ConnectionClosed):
            for _ in range(times):
                await ws.send(message)
                await asyncio.wait_for(await ws.ping(), 30)
            return None
        await asyncio.wait_for(ws.wait_closed(), 30)
        return ws.close_code


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_every_limit_is_an_option_with_its_default_in_help(command: str) -> None:
    out = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
    for option, default in [
        ("--ws-max-size", "[default: 0]"),
        ("--max-header-bytes", f"[default: {DEFAULT_MAX_HEADER_BYTES}]"),
        ("--timeout-header", f"[default: {DEFAULT_HEADER_TIMEOUT}]"),
        ("--timeout-keep-alive", "[default: 5]"),
        ("--limit-concurrency", "[default: 0]"),
    ]:
        assert option in out and default in out, f"{option} {default} not in {command} --help"
    assert "1 MiB by default" in out and "ulimit -n" in out


def test_the_websocket_limit_is_the_served_apps_own_frame_limit() -> None:
    """Read from the SynclineServer the app reaches (routes, mounts, wrapping middleware)
    or its module holds; Limits' default when there is none."""
    from starlette.applications import Starlette
    from starlette.middleware.gzip import GZipMiddleware
    from starlette.routing import Mount

    from syncline import Engine
    from syncline.protocol.frames import Limits
    from syncline.server.app import SynclineServer
    from syncline.serving import frame_limit_of
    from syncline.store import store_from_url

    from .schemas import board_schema

    sync = SynclineServer(
        Engine(board_schema(), store_from_url("memory:")), limits=Limits(max_frame_bytes=3 * MiB)
    )
    mounted = GZipMiddleware(Starlette(routes=[Mount("/api", app=sync.app)]))
    assert frame_limit_of(mounted) == 3 * MiB
    assert frame_limit_of(sync.app) == 3 * MiB
    assert frame_limit_of(Starlette()) == Limits.max_frame_bytes == MiB
