"""What one small request costs the server: RSS, CPU seconds and bytes sent, for each
amplification case of issue 13 (``docs/security.md``, "What one request may cost").

Each case starts ``bench/cost_app.py`` under uvicorn in a subprocess, seeds it, resets
the process's peak RSS, sends the request and reads the process's CPU time and peak RSS
from ``/proc`` (Linux). Run it on this checkout, or on another one (the code before a
fix) with ``--syncline-root``::

    .venv/bin/python bench/request_cost.py                          # this checkout
    .venv/bin/python bench/request_cost.py --syncline-root ../main  # another one
    .venv/bin/python bench/request_cost.py --case sub_100_ids --json out.json

tests/test_cost.py runs the same cases and asserts generous bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TICK = os.sysconf("SC_CLK_TCK")


class CostServer:
    """``cost_app`` in a uvicorn subprocess, on a fresh SQLite file."""

    def __init__(
        self, case: str, directory: Path, *, syncline_root: Path = ROOT, queue: int | None = None
    ) -> None:
        self.case = case
        self.db = directory / f"{case}-{uuid.uuid4().hex[:8]}.sqlite3"
        self.syncline_root = syncline_root
        self.queue = queue
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.db.with_suffix(".log")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        env = {
            **os.environ,
            "COST_CASE": self.case,
            "COST_DB": str(self.db),
            "PYTHONPATH": os.pathsep.join([str(self.syncline_root), str(BENCH)]),
        }
        if self.queue is not None:
            env["COST_QUEUE"] = str(self.queue)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "uvicorn", "cost_app:app", "--host", "127.0.0.1"),
                    *("--port", str(self.port), "--log-level", "warning", "--lifespan", "on"),
                ],
                cwd=BENCH,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:  # uvicorn listens once the lifespan (the seeding) is done
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{self.log.read_text()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"the server did not listen in {timeout}s") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def __enter__(self) -> CostServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what the process costs ----------------------------------------------------------

    def reset_peak(self) -> None:
        """Set the peak RSS (VmHWM) to the current RSS (Linux: clear_refs 5)."""
        assert self.process is not None
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def stats(self) -> dict[str, float]:
        """RSS and peak RSS (MB), CPU seconds (user + system) of the server so far."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text().splitlines()
        kb = {line.split(":")[0]: int(line.split()[1]) for line in status if "kB" in line}
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICK
        return {"rss_mb": kb["VmRSS"] / 1024, "peak_mb": kb["VmHWM"] / 1024, "cpu_s": cpu}


# --- the requests --------------------------------------------------------------------


async def _hello(ws: Any, schema_hash: str, user: str) -> dict[str, Any]:
    hello = {"t": "hello", "v": 1, "client": f"cost-{uuid.uuid4().hex[:12]}"}
    await ws.send(orjson.dumps({**hello, "schema": schema_hash, "auth": {"user": user}}).decode())
    return dict(orjson.loads(await ws.recv()))


async def _answer(ws: Any, timeout: float = 100.0) -> tuple[dict[str, Any], int]:
    """The first snapshot, changes or error frame, and its size in bytes."""
    async with asyncio.timeout(timeout):
        while True:
            text = await ws.recv()
            frame = orjson.loads(text)
            if frame["t"] in ("snapshot", "changes", "error"):
                return frame, len(text)


async def schema_hash(server: CostServer) -> str:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"http://{server.host}/hash")).text


async def sub(
    server: CostServer, queries: dict[str, Any], user: str = "attacker"
) -> dict[str, Any]:
    """One ``sub`` frame; what came back."""
    digest = await schema_hash(server)
    async with websockets.connect(f"ws://{server.host}/sync", max_size=None) as ws:
        await _hello(ws, digest, user)
        frame = orjson.dumps({"t": "sub", "queries": queries}).decode()
        await ws.send(frame)
        answer, size = await _answer(ws)
    return {
        "sent_bytes": len(frame),
        "answer": answer["t"] if answer["t"] != "error" else f"error {answer['code']}",
        "answer_bytes": size,
        "records": sum(len(r) for r in answer.get("records", {}).values()),
        "message": answer.get("message", ""),
    }


async def pulls(server: CostServer, queries: dict[str, Any], times: int) -> dict[str, Any]:
    """``times`` concurrent ``GET /sync/pull`` without since (snapshots)."""
    params = {"queries": orjson.dumps(queries).decode()}
    async with httpx.AsyncClient(timeout=120) as http:
        answers = await asyncio.gather(
            *(
                http.get(f"http://{server.host}/sync/pull", params=params, headers={"x-user": "a"})
                for _ in range(times)
            )
        )
    return {
        "sent_bytes": sum(len(str(a.request.url)) for a in answers),
        "answer": sorted({a.status_code for a in answers}),
        "answer_bytes": sum(len(a.content) for a in answers),
    }


async def connections(server: CostServer, count: int) -> dict[str, Any]:
    """``count`` connections of one principal, each saying hello: how many are welcomed
    and still open, and how the others were closed."""
    digest = await schema_hash(server)
    sockets = []
    closes: dict[str, int] = {}
    welcomed = 0
    try:
        for _ in range(count):
            ws = await websockets.connect(f"ws://{server.host}/sync")
            sockets.append(ws)
            answer = await _hello(ws, digest, "one-user")
            if answer["t"] == "welcome":
                welcomed += 1
                continue
            with_reason = f"{answer.get('code')}"
            try:
                async with asyncio.timeout(10):
                    await ws.recv()
            except websockets.ConnectionClosed as closed:
                rcvd = closed.rcvd
                with_reason += f" / close {rcvd.code if rcvd else None}"
            closes[with_reason] = closes.get(with_reason, 0) + 1
        await asyncio.sleep(0.2)
        still_open = sum(1 for ws in sockets if ws.state.name == "OPEN")
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return {"opened": count, "welcomed": welcomed, "still_open": still_open, "refused": closes}


# --- the cases -----------------------------------------------------------------------

ALL_DOCS = {"c": "docs"}


def limit_one_queries(count: int) -> dict[str, Any]:
    """``count`` distinct ``limit 1`` queries that each match every todo (none of the
    attacker's), so that reading them once each cannot share work."""
    return {
        f"q{i}": {"c": "todos", "where": {"order": {"gte": -1 - i}}, "limit": 1}
        for i in range(count)
    }


Case = tuple[str, dict[str, Any], Callable[[CostServer], Awaitable[dict[str, Any]]]]
CASES: dict[str, Case] = {
    "sub_100_ids": (
        "big",
        {},
        lambda s: sub(s, {f"q{i}": ALL_DOCS for i in range(100)}),
    ),
    "pull_100_ids_x3": (
        "big",
        {},
        lambda s: pulls(s, {f"q{i}": ALL_DOCS for i in range(100)}, 3),
    ),
    "limit1_x100_callable_rule": ("ruled", {}, lambda s: sub(s, limit_one_queries(100))),
    "limit1_x100_read_filter": ("filtered", {}, lambda s: sub(s, limit_one_queries(100))),
    "oversize_frame_queue_64k": (
        "big",
        {"queue": 64 << 10},
        lambda s: sub(s, {"q": {"c": "docs", "limit": 10}}),  # about 100 KB
    ),
    "connections_x70_one_user": ("big", {}, lambda s: connections(s, 70)),
}


async def run_case(name: str, directory: Path, syncline_root: Path = ROOT) -> dict[str, Any]:
    """One case on a fresh server: what the request got, and what it cost the server."""
    case, options, request = CASES[name]
    with CostServer(case, directory, syncline_root=syncline_root, **options) as server:
        await schema_hash(server)  # warm: imports and the first request are not the case's
        server.reset_peak()
        before = server.stats()
        started = time.monotonic()
        result = await request(server)
        elapsed = time.monotonic() - started
        after = server.stats()
    return {
        "case": name,
        **result,
        "rss_before_mb": round(before["rss_mb"], 1),
        "peak_mb": round(after["peak_mb"], 1),
        "peak_growth_mb": round(after["peak_mb"] - before["rss_mb"], 1),
        "cpu_s": round(after["cpu_s"] - before["cpu_s"], 2),
        "wall_s": round(elapsed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--syncline-root", type=Path, default=ROOT)
    parser.add_argument("--case", action="append", choices=sorted(CASES))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="request-cost-") as tmp:
        for name in args.case or list(CASES):
            row = asyncio.run(run_case(name, Path(tmp), args.syncline_root.resolve()))
            row.pop("message", None)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
