"""Load generators, each run in its own (spawned) process: fan-out subscribers, fan-out
writers and durable-mutation writers. Every loop is bounded in count and in time."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from .common import HOST, raise_fd_limit

TS = re.compile(r"ts:(\d+)")
CONNECT_TIMEOUT = 15.0
BOARD = "demo"
LIST = "launch"


def _url(system: str, port: int) -> str:
    if system == "syncline":
        return f"ws://{HOST}:{port}/sync"
    if system == "python-socketio":
        return f"ws://{HOST}:{port}/socket.io/?EIO=4&transport=websocket"
    if system == "starlette-naive":
        return f"ws://{HOST}:{port}/ws"
    return f"ws://{HOST}:{port}/"


async def _recv(ws: ClientConnection, timeout: float = CONNECT_TIMEOUT) -> str:
    message = await asyncio.wait_for(ws.recv(), timeout)
    return message if isinstance(message, str) else message.decode()


async def _open(system: str, port: int, client_id: str) -> ClientConnection:
    """Connect and do the system's handshake (not subscribing)."""
    ws = await asyncio.wait_for(
        connect(
            _url(system, port), compression=None, max_size=None, max_queue=None, ping_interval=None
        ),
        CONNECT_TIMEOUT,
    )
    if system == "syncline":
        from ..demo.app import SCHEMA

        hello = {"t": "hello", "v": 1, "client": client_id, "schema": SCHEMA.hash, "acked": 0}
        await ws.send(orjson.dumps(hello).decode())
        welcome = await _recv(ws)
        if '"welcome"' not in welcome:
            raise RuntimeError(f"syncline refused the hello: {welcome[:200]}")
    elif system == "python-socketio":
        opened = await _recv(ws)
        if not opened.startswith("0"):
            raise RuntimeError(f"engine.io did not open: {opened[:200]}")
        await ws.send("40")
        joined = await _recv(ws)
        if not joined.startswith("40"):
            raise RuntimeError(f"socket.io did not connect: {joined[:200]}")
    return ws


def _nonmatching(count: int, tag: str) -> dict[str, Any]:
    """``count`` queries no change of the bench touches (lists that never get a card)."""
    return {
        f"n{j}": {"c": "cards", "where": {"board_id": BOARD, "list_id": f"none-{tag}-{j}"}}
        for j in range(count)
    }


async def _subscribe(
    system: str, ws: ClientConnection, nonmatching: int = 0, tag: str = ""
) -> None:
    if system == "syncline":
        queries = (
            _nonmatching(nonmatching, tag)
            if nonmatching
            else {"q": {"c": "cards", "where": {"board_id": BOARD}}}
        )
        sub = {"t": "sub", "queries": queries}
        await ws.send(orjson.dumps(sub).decode())
        while '"snapshot"' not in (await _recv(ws))[:40]:
            pass
    elif system == "python-socketio":
        await ws.send('420["sub"]')
        while not (await _recv(ws)).startswith("430"):
            pass
    else:
        await ws.send("sub")
        while await _recv(ws) != "subbed":
            pass


_PENDING: set[asyncio.Task[None]] = set()
_RUN = uuid.uuid4().hex[:8]  # this process's prefix for the record ids it creates
_REFUSALS: list[str] = []  # the first few refusals a generator saw, to report


def _answer_ping(system: str, ws: ClientConnection, message: str) -> bool:
    """Answer a server heartbeat; True when ``message`` was one."""
    if system == "syncline" and message.startswith('{"t":"ping"'):
        answer = '{"t":"pong"}'
    elif system == "python-socketio" and message == "2":
        answer = "3"
    else:
        return False
    task = asyncio.ensure_future(ws.send(answer))
    _PENDING.add(task)
    task.add_done_callback(_PENDING.discard)
    return True


# --- fan-out subscribers ------------------------------------------------------------------


@dataclass
class _Tally:
    latencies: list[float]
    flood: int = 0
    last_ns: int = 0
    dropped: int = 0


async def _subscribers(
    system: str,
    port: int,
    count: int,
    flood_start: Any,
    stop: Any,
    queue: Any,
    tag: int,
    nonmatching: int = 0,
) -> None:
    tally = _Tally(latencies=[])
    conns: list[ClientConnection] = []
    failures = 0
    sem = asyncio.Semaphore(50)

    async def one(i: int) -> None:
        nonlocal failures
        async with sem:
            try:
                client = f"sub-{tag}-{i}-{uuid.uuid4().hex[:8]}"
                ws = await _open(system, port, client)
                await _subscribe(system, ws, nonmatching, client)
                conns.append(ws)
            except Exception:
                failures += 1

    await asyncio.gather(*(one(i) for i in range(count)))
    queue.put(("ready", tag, len(conns), failures))

    async def read(ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                now = time.time_ns()
                message = raw if isinstance(raw, str) else raw.decode()
                if _answer_ping(system, ws, message):
                    continue
                start = flood_start.value
                for match in TS.finditer(message):
                    sent = int(match.group(1))
                    if sent / 1e9 >= start:
                        tally.flood += 1
                    else:
                        tally.latencies.append((now - sent) / 1e6)
                tally.last_ns = now
        except Exception:
            tally.dropped += 1
        else:  # the server closed the connection (a slow consumer is cut off)
            if not stop.is_set():
                tally.dropped += 1

    readers = [asyncio.create_task(read(ws)) for ws in conns]
    cpu_start = time.process_time()
    hard_stop = time.monotonic() + 600
    while not stop.is_set() and time.monotonic() < hard_stop:
        await asyncio.sleep(0.05)
    # Drain: until nothing arrived for 1 s, at most 20 s.
    drain_until = time.monotonic() + 20
    while time.monotonic() < drain_until and time.time_ns() - tally.last_ns < 1e9:
        await asyncio.sleep(0.05)
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    queue.put(
        (
            "done",
            tag,
            {
                "latencies": tally.latencies,
                "flood": tally.flood,
                "last_ns": tally.last_ns,
                "dropped": tally.dropped,
                "cpu_s": time.process_time() - cpu_start,
            },
        )
    )
    for ws in conns:
        ws.transport.abort()


def run_subscribers(
    system: str,
    port: int,
    count: int,
    flood_start: Any,
    stop: Any,
    queue: Any,
    tag: int,
    nonmatching: int = 0,
) -> None:
    """Process target: hold ``count`` subscribers and report what they received (each
    with ``nonmatching`` queries no change touches, when not 0, instead of the board)."""
    raise_fd_limit()
    import uvloop

    uvloop.run(_subscribers(system, port, count, flood_start, stop, queue, tag, nonmatching))


# --- fan-out writers ----------------------------------------------------------------------


def _publish(system: str, wid: int, n: int, marker: str = "ts") -> str:
    """A small change whose title carries the send time (``ts:<ns>``); subscribers
    compare it with their clock on receipt. Warm-up changes say ``warm:`` instead."""
    ts = f"{marker}:{time.time_ns()}"
    if system == "syncline":
        op = {
            "op": "insert",
            "c": "cards",
            "id": f"w{_RUN}-{wid}-{n}",
            "fields": {"board_id": BOARD, "list_id": LIST, "title": ts},
        }
        return orjson.dumps({"t": "mut", "id": n, "ops": [op]}).decode()
    if system == "python-socketio":
        return f'42{n}["pub",{{"title":"{ts}"}}]'
    return f'{{"title":"{ts}","n":{n}}}'


def _is_ack(system: str, message: str) -> bool | None:
    """True for an ack, False for a refusal, None for anything else."""
    if system == "syncline":
        head = message[:16]
        if '"ack"' in head:
            return True
        return False if '"reject"' in head or '"error"' in head else None
    if system == "python-socketio":
        return True if message.startswith("43") else None
    return True if message == "a" else None


async def _writers(
    system: str, port: int, mode: str, rate: float, duration: float, conns: int, window: int
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    sockets = [await _open(system, port, f"writer-{run}-{w}") for w in range(conns)]
    acked = refused = sent = 0
    inflight = [asyncio.Semaphore(window) for _ in sockets]

    async def read(w: int, ws: ClientConnection) -> None:
        nonlocal acked, refused
        with contextlib.suppress(Exception):
            async for raw in ws:
                message = raw if isinstance(raw, str) else raw.decode()
                if _answer_ping(system, ws, message):
                    continue
                answer = _is_ack(system, message)
                if answer is None:
                    continue
                if answer:
                    acked += 1
                else:
                    refused += 1
                    if len(_REFUSALS) < 3:
                        _REFUSALS.append(message[:300])
                inflight[w].release()

    readers = [asyncio.create_task(read(w, ws)) for w, ws in enumerate(sockets)]
    start = time.time()
    deadline = time.monotonic() + duration

    async def flood(w: int, ws: ClientConnection) -> None:
        nonlocal sent
        n = 0
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    inflight[w].acquire(), max(0.01, deadline - time.monotonic())
                )
                n += 1
                sent += 1
                await ws.send(_publish(system, w, n))

    if mode == "rate":
        ws = sockets[0]
        warm = int(rate * 0.5)  # half a second of warm-up, not measured
        total = warm + int(rate * duration)
        for n in range(1, total + 1):
            delay = start + (n - 1) / rate - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send(_publish(system, 0, n, "warm" if n <= warm else "ts"))
            sent += 1
    else:
        await asyncio.gather(*(flood(w, ws) for w, ws in enumerate(sockets)))
    end = time.time()
    settle = time.monotonic() + 10
    while acked + refused < sent and time.monotonic() < settle:
        await asyncio.sleep(0.02)
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    for ws in sockets:
        ws.transport.abort()
    return {
        "sent": sent,
        "acked": acked,
        "refused": refused,
        "start": start,
        "end": end,
        "refusals": _REFUSALS,
    }


def run_writers(
    system: str,
    port: int,
    mode: str,
    rate: float,
    duration: float,
    conns: int,
    window: int,
    queue: Any,
) -> None:
    """Process target: publish at ``rate`` per second (mode "rate", one connection) or as
    fast as acks come back with ``window`` in flight on each of ``conns`` connections
    (mode "flood"), for ``duration`` seconds; report counts."""
    raise_fd_limit()
    import uvloop

    queue.put(uvloop.run(_writers(system, port, mode, rate, duration, conns, window)))


# --- durable mutations --------------------------------------------------------------------


class _Http:
    """A minimal HTTP/1.1 keep-alive client: POST and read the answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def post(self, path: str, body: bytes) -> int:
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await self.reader.readexactly(length)
        return status


async def _mutators(system: str, port: int, writers: int, duration: float) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    counts = [0] * writers
    errors = 0
    deadline = 0.0

    async def syncline_writer(w: int) -> None:
        nonlocal errors
        ws = await _open("syncline", port, f"mut-{run}-{w}")
        card = f"m{run}{w}"
        insert = {
            "op": "insert",
            "c": "cards",
            "id": card,
            "fields": {"board_id": BOARD, "list_id": LIST},
        }
        incr = {"op": "incr", "c": "cards", "id": card, "field": "votes", "by": 1}
        mid = 1
        await ws.send(orjson.dumps({"t": "mut", "id": mid, "ops": [insert]}).decode())
        await _until_ack(ws)
        try:
            while time.monotonic() < deadline:
                mid += 1
                await ws.send(orjson.dumps({"t": "mut", "id": mid, "ops": [incr]}).decode())
                if await _until_ack(ws):
                    counts[w] += 1
                else:
                    errors += 1
        finally:
            ws.transport.abort()

    async def http_writer(w: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, port), CONNECT_TIMEOUT
        )
        client = _Http(reader, writer)
        try:
            while time.monotonic() < deadline:
                body = orjson.dumps({"card": f"m{w}", "op": "incr", "field": "votes", "by": 1})
                status = await asyncio.wait_for(client.post("/changes", body), 30)
                if status == 200:
                    counts[w] += 1
                else:
                    errors += 1
        finally:
            writer.close()

    worker = syncline_writer if system == "syncline" else http_writer
    deadline = time.monotonic() + duration
    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(writers)))
    elapsed = time.perf_counter() - start
    return {"acked": sum(counts), "errors": errors, "elapsed": elapsed, "refusals": _REFUSALS}


async def _until_ack(ws: ClientConnection) -> bool:
    while True:
        message = await _recv(ws, 30)
        if _answer_ping("syncline", ws, message):
            continue
        answer = _is_ack("syncline", message)
        if answer is False and len(_REFUSALS) < 3:
            _REFUSALS.append(message[:300])
        if answer is not None:
            return answer


def run_mutators(system: str, port: int, writers: int, duration: float, queue: Any) -> None:
    """Process target: ``writers`` concurrent writers, each sending one change and waiting
    for its acknowledgement before the next, for ``duration`` seconds."""
    raise_fd_limit()
    import uvloop

    queue.put(uvloop.run(_mutators(system, port, writers, duration)))


# --- resume ---------------------------------------------------------------------------------

RESUME_QUERY = {"c": "cards", "where": {"list_id": "product"}}


async def _resume(port: int, changes: int) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    sub = orjson.dumps({"t": "sub", "queries": {"q": RESUME_QUERY}}).decode()
    # 1. The client that goes offline: subscribe, keep the cursor, leave.
    offline_id = f"resume-{run}"
    ws = await _open("syncline", port, offline_id)
    await ws.send(sub)
    snapshot = orjson.loads(await _recv(ws))
    while snapshot.get("t") != "snapshot":
        snapshot = orjson.loads(await _recv(ws))
    cursor = snapshot["cursor"]
    await ws.close()
    # 2. A live client on the same query measures the relevant changes' encoded size.
    live = await _open("syncline", port, f"live-{run}")
    await live.send(sub)
    relevant = {"items": 0, "bytes": 0}

    async def watch() -> None:
        with contextlib.suppress(Exception):
            async for raw in live:
                frame = orjson.loads(raw)
                if frame.get("t") == "changes":
                    for items in frame["q"].values():
                        relevant["items"] += len(items)
                        relevant["bytes"] += sum(len(orjson.dumps(i)) for i in items)

    watcher = asyncio.create_task(watch())
    # 3. Commit the changes, 1 in 100 inside the query, many in flight.
    head = 0
    writers = 8
    deadline = time.monotonic() + 300

    async def write(w: int) -> None:
        nonlocal head
        conn = await _open("syncline", port, f"rw-{run}-{w}")
        window = asyncio.Semaphore(32)
        mine = list(range(w, changes, writers))

        async def acks() -> None:
            nonlocal head
            got = 0
            while got < len(mine) and time.monotonic() < deadline:
                frame = orjson.loads(await _recv(conn, 60))
                if frame.get("t") in ("ack", "reject"):
                    got += 1
                    head = max(head, frame.get("seq") or 0)
                    window.release()

        reader = asyncio.create_task(acks())
        for mid, i in enumerate(mine, 1):
            await window.acquire()
            fields = {
                "board_id": BOARD,
                "list_id": "product" if i % 100 == 0 else "engineering",
                "title": f"change {i}",
            }
            op = {"op": "insert", "c": "cards", "id": f"r{run}-{i}", "fields": fields}
            await conn.send(orjson.dumps({"t": "mut", "id": mid, "ops": [op]}).decode())
        await reader
        conn.transport.abort()

    await asyncio.gather(*(write(w) for w in range(writers)))
    wanted = changes // 100 + (1 if changes % 100 else 0)
    settle = time.monotonic() + 20
    while relevant["items"] < wanted and time.monotonic() < settle:
        await asyncio.sleep(0.02)
    watcher.cancel()
    live.transport.abort()
    # 4. The offline client comes back: bytes and time until it has caught up to head.
    began = time.perf_counter()
    received = 0
    ws = await asyncio.wait_for(
        connect(_url("syncline", port), compression=None, max_size=None, ping_interval=None),
        CONNECT_TIMEOUT,
    )
    from ..demo.app import SCHEMA

    hello = {"t": "hello", "v": 1, "client": offline_id, "schema": SCHEMA.hash, "acked": 0}
    await ws.send(orjson.dumps(hello).decode())
    resumed = orjson.dumps({"t": "sub", "queries": {"q": RESUME_QUERY}, "since": cursor}).decode()
    await ws.send(resumed)
    items = 0
    while True:
        raw = await _recv(ws, 60)
        received += len(raw.encode())
        frame = orjson.loads(raw)
        if frame.get("t") == "changes":
            items += sum(len(i) for i in frame["q"].values())
            if int(str(frame["to"]).rsplit(".", 1)[-1]) >= head:
                break
        elif frame.get("t") in ("snapshot", "error"):
            raise RuntimeError(f"resume answered {raw[:200]}")
    elapsed = (time.perf_counter() - began) * 1000
    ws.transport.abort()
    return {
        "bytes": received,
        "relevant_bytes": relevant["bytes"],
        "bytes_ratio": received / max(1, relevant["bytes"]),
        "time_to_live_ms": elapsed,
        "changes": changes,
        "relevant_changes": relevant["items"],
        "resumed_items": items,
    }


def run_resume(port: int, changes: int, queue: Any) -> None:
    """Process target: the ``resume`` scenario's client side."""
    import uvloop

    queue.put(uvloop.run(_resume(port, changes)))
