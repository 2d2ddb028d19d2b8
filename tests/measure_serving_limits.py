"""Figures for docs/security.md's serving limits, against a real ``syncline serve``:

    .venv/bin/python -m tests.measure_serving_limits slowloris header ws bomb lowfd

(from the repository root). For the figures before the limits, run it with the
``syncline/cli.py`` of before them (commit 8093185). Not a test: it prints figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from .test_serve import ROOT, free_port, wait_until_up
from .test_serving_limits import SERVE, MiB, peak_rss, send_and_close_code, served


def trickle(socks: list[socket.socket], until: float) -> set[socket.socket]:
    """Send each open socket a header line a second until ``until``; the ones closed."""
    closed: set[socket.socket] = set()
    while time.monotonic() < until:
        for s in socks:
            if s in closed:
                continue
            try:
                s.send(b"X-Slow: 1\r\n")
                if s.recv(4096) == b"":
                    closed.add(s)
            except BlockingIOError:
                pass
            except OSError:
                closed.add(s)
        time.sleep(1)
    return closed


def open_slow(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        s.setblocking(False)
        socks.append(s)
    return socks


def slowloris(n: int = 600) -> None:
    with tempfile.TemporaryDirectory() as d, served(Path(d)) as (port, _pid):
        socks = open_slow(port, n)
        t0 = time.monotonic()
        after_15 = n - len(trickle(socks, t0 + 15))
        after_45 = n - len(trickle(socks, t0 + 45))
        print(
            f"slowloris: {n} trickling connections; open after 15 s: {after_15}, 45 s: {after_45}"
        )
        for s in socks:
            s.close()


def lowfd(n: int = 1100) -> None:
    """The same with the server's ``ulimit -n`` at 1,024: is a visitor served?"""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        args = [*SERVE, "--db", f"{d}/n.sqlite3", "--port", str(port)]
        proc = subprocess.Popen(
            args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=limit
        )
        try:
            wait_until_up(port, proc)
            socks = open_slow(port, n)
            t0, out = time.monotonic(), []
            for mark in (3, 15):
                trickle(socks, t0 + mark)
                try:
                    status: object = httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                out.append(f"GET at {mark} s: {status}")
            print(f"ulimit -n 1024, {n} trickling connections: " + "; ".join(out))
            for s in socks:
                s.close()
        finally:
            proc.terminate()
            proc.wait(10)


def header() -> None:
    with tempfile.TemporaryDirectory() as d, served(Path(d)) as (port, _pid):
        waited: list[float] = []

        def probe() -> None:
            time.sleep(0.5)
            t = time.monotonic()
            httpx.get(f"http://127.0.0.1:{port}/", timeout=120)
            waited.append(time.monotonic() - t)

        thread = threading.Thread(target=probe)
        thread.start()
        t0, sent, answer = time.monotonic(), 0, b""
        with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
            try:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
                while sent < 50 * MiB:
                    s.sendall(b"a" * MiB)
                    sent += MiB
                s.sendall(b"\r\n\r\n")
                answer = s.recv(100)
            except OSError as exc:
                answer = repr(exc).encode()
        took = time.monotonic() - t0
        thread.join()
        print(
            f"50 MB header: {sent // MiB} MiB sent, then {answer[:40]!r} after {took:.2f} s; "
            f"a concurrent GET took {waited[0]:.2f} s"
        )


def websocket(compress: bool) -> None:
    options = ("--compress",) if compress else ()
    with tempfile.TemporaryDirectory() as d, served(Path(d), *options) as (port, pid):
        before, t0 = peak_rss(pid), time.monotonic()
        message = ("0" if compress else "x") * (15 * MiB)
        code = asyncio.run(
            send_and_close_code(
                port,
                message,
                compression="deflate" if compress else None,
                times=30 if compress else 1,
            )
        )
        what = "30 deflate bombs of 15 MiB" if compress else "one 15 MiB message"
        grown = (peak_rss(pid) - before) / MiB
        print(
            f"WebSocket {what}: close code {code}, peak RSS +{grown:.1f} MiB, "
            f"{time.monotonic() - t0:.1f} s"
        )


CASES = {
    "slowloris": slowloris,
    "lowfd": lowfd,
    "header": header,
    "ws": lambda: websocket(False),
    "bomb": lambda: websocket(True),
}

if __name__ == "__main__":
    for name in sys.argv[1:] or list(CASES):
        with contextlib.suppress(KeyboardInterrupt):
            CASES[name]()
