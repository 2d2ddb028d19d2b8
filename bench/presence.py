"""Presence fan-out: updates delivered per second to the members of one room, and the
server's CPU per update (``docs/protocol.md``, Presence).

The server is uvicorn in a subprocess (an in-memory store: presence writes nothing),
so its CPU time is read from ``/proc`` apart from this process's, which plays the
clients: ``--members`` raw WebSockets join ``board:demo`` and one of them sends
``--updates`` updates. Two rows:

* ``burst``: the server's per-connection rate bound lifted (``Limits.presence_per_
  second`` = 1e6), so every update is passed on: what the fan-out itself costs;
* ``coalesced``: the default bound (20 a second) with the publisher moving 60 times a
  second for 5 s: what a cursor costs as shipped.

    .venv/bin/python bench/presence.py                  # both rows, 100 members
    .venv/bin/python bench/presence.py --members 50 --updates 500 --json out.json
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
from pathlib import Path
from typing import Any

import orjson
import websockets

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TICK = os.sysconf("SC_CLK_TCK")
APP = """
import os
from starlette.applications import Starlette
from syncline import Engine
from syncline.protocol.frames import Limits
from syncline.server.app import SynclineServer
from syncline.store.memory import MemoryStore
from tests.schemas import BOARD

rate = float(os.environ["PRESENCE_RATE"])
sync = SynclineServer(
    Engine(BOARD, MemoryStore()),
    limits=Limits(presence_per_second=rate),
    max_connections_per_principal=1000,
    presence_user=lambda p: {"name": str(p)},
)
app = Starlette(routes=sync.routes, lifespan=sync.lifespan)
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def start_server(rate: float, folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    (folder / "presence_bench_app.py").write_text(APP)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {
        **os.environ,
        "PRESENCE_RATE": str(rate),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(folder)]),
    }
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "presence_bench_app:app", "--port", str(port)),
            *("--log-level", "warning", "--lifespan", "on"),
        ],
        cwd=folder,
        env=env,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, port
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("the bench server did not start") from None
            time.sleep(0.05)


async def member(port: int, schema: str, i: int) -> Any:
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/sync", max_size=None)
    hello = {"t": "hello", "v": 1, "client": f"presence-bench-{i:04d}", "schema": schema}
    await ws.send(orjson.dumps(hello).decode())
    assert orjson.loads(await ws.recv())["t"] == "welcome"
    await ws.send(orjson.dumps({"t": "join", "room": "board:demo", "state": {"i": i}}).decode())
    while orjson.loads(await ws.recv())["t"] != "room":
        pass
    return ws


async def run(rate: float, members: int, updates: int, per_second: float | None) -> dict[str, Any]:
    from tests.schemas import BOARD

    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(rate, Path(tmp))
        try:
            socks = [await member(port, BOARD.hash, i) for i in range(members)]
            publisher, watchers = socks[0], socks[1:]
            await asyncio.sleep(0.5)  # the joins' diffs go by
            for ws in watchers:  # drain them
                while True:
                    try:
                        await asyncio.wait_for(ws.recv(), 0.01)
                    except TimeoutError:
                        break
            last = {"x": updates}
            received = [0] * len(watchers)

            async def watch(k: int, ws: Any) -> None:
                while True:
                    frame = orjson.loads(await ws.recv())
                    if frame["t"] == "presence_diff":
                        received[k] += len(frame.get("updates", []))
                        if any(m["state"] == last for m in frame.get("updates", [])):
                            return

            cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
            tasks = [asyncio.create_task(watch(k, ws)) for k, ws in enumerate(watchers)]
            for x in range(1, updates + 1):
                frame = {"t": "presence", "room": "board:demo", "state": {"x": x}}
                await publisher.send(orjson.dumps(frame).decode())
                if per_second is not None:
                    await asyncio.sleep(1 / per_second)
            await asyncio.wait_for(asyncio.gather(*tasks), 120)
            elapsed, cpu = time.perf_counter() - t0, cpu_seconds(proc.pid) - cpu0
            for ws in socks:
                await ws.close()
        finally:
            proc.kill()
            proc.wait(10)
    delivered = sum(received)
    passed_on = delivered / len(watchers)
    return {
        "members": members,
        "updates_sent": updates,
        "updates_passed_on": round(passed_on, 1),
        "delivered": delivered,
        "seconds": round(elapsed, 3),
        "deliveries_per_second": round(delivered / elapsed),
        "server_cpu_s": round(cpu, 3),
        "server_cpu_us_per_update_passed_on": round(cpu / passed_on * 1e6, 1),
        "server_cpu_us_per_delivery": round(cpu / delivered * 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=100)
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    rows = {
        "burst": asyncio.run(run(1e6, args.members, args.updates, None)),
        "coalesced": asyncio.run(run(20.0, args.members, 300, 60.0)),
    }
    for name, row in rows.items():
        print(name, json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
