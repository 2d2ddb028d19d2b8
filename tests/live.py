"""Real servers for tests: uvicorn on a free loopback port, in this process, and a raw
WebSocket client that speaks frames and keeps a replica.

In-process uvicorn keeps the engine inspectable from the test; the sockets, HTTP and
WebSocket handshakes are all real.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import uvicorn
import websockets
from starlette.types import ASGIApp
from websockets.asyncio.client import ClientConnection

from syncline import Replica, Schema


@contextlib.asynccontextmanager
async def serve(app: ASGIApp, **config: Any) -> AsyncIterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 and a free port; yield its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=3,
            **config,
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


class RawClient:
    """A WebSocket client that sends frames as given and records what comes back."""

    def __init__(self, ws: ClientConnection, schema: Schema, client_id: str) -> None:
        self.ws = ws
        self.replica = Replica(schema, client_id)
        self.client_id = client_id
        self.frames: list[dict[str, Any]] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        host: str,
        schema: Schema,
        *,
        client_id: str | None = None,
        hello: bool = True,
        auth: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[RawClient]:
        async with websockets.connect(f"ws://{host}/sync", **kwargs) as ws:
            client = cls(ws, schema, client_id or f"test-{uuid.uuid4().hex[:12]}")
            if hello:
                await client.hello(auth=auth)
            yield client

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else orjson.dumps(frame).decode())

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        frame: dict[str, Any] = orjson.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.frames.append(frame)
        return frame

    async def expect(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame, which must be of type ``kind`` (pings are answered and skipped)."""
        while True:
            frame = await self.recv(timeout)
            if frame["t"] == "ping":
                await self.send({"t": "pong", "n": frame.get("n")})
                continue
            assert frame["t"] == kind, f"expected {kind}, got {frame}"
            return frame

    async def hello(self, auth: dict[str, Any] | None = None) -> dict[str, Any]:
        frame: dict[str, Any] = {
            "t": "hello",
            "v": 1,
            "client": self.client_id,
            "schema": self.replica.schema.hash,
        }
        if auth is not None:
            frame["auth"] = auth
        await self.send(frame)
        return await self.recv()

    async def subscribe(self, queries: dict[str, Any], since: str | None = None) -> dict[str, Any]:
        """Subscribe and feed the answer to the replica."""
        frame: dict[str, Any] = {"t": "sub", "queries": queries}
        if since is not None:
            frame["since"] = since
        await self.send(frame)
        answer = await self.recv()
        self.feed(answer)
        return answer

    def feed(self, frame: dict[str, Any]) -> None:
        if frame["t"] == "snapshot":
            self.replica.load_snapshot(frame)
        elif frame["t"] == "changes":
            self.replica.apply_changes(frame)
        elif frame["t"] == "ack":
            self.replica.apply_ack(frame)

    async def pump(self, until_seq: int, timeout: float = 5.0) -> None:
        """Read frames into the replica until its cursor reaches ``until_seq``."""
        while self.replica.cursor is None or self.replica.cursor.seq < until_seq:
            frame = await self.recv(timeout)
            if frame["t"] == "ping":
                await self.send({"t": "pong"})
            self.feed(frame)

    async def mutate(self, ops: list[dict[str, Any]], mid: int, **extra: Any) -> dict[str, Any]:
        """Send a mutation and return its answer, feeding other frames to the replica."""
        await self.send({"t": "mut", "id": mid, "ops": ops, **extra})
        while True:
            frame = await self.recv()
            if (
                frame["t"] in ("ack", "reject", "error")
                and frame.get("mid", frame.get("ref")) == mid
            ):
                return frame
            self.feed(frame)


class StalledClient:
    """A WebSocket client on a bare socket that stops reading when told to: the kind of
    consumer a server must cut off. (Library clients keep draining the socket.)"""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, host: str, frames: list[dict[str, Any]]) -> StalledClient:
        address, port = host.split(":")
        reader, writer = await asyncio.open_connection(address, int(port))
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /sync HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        response = await reader.readuntil(b"\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 101"), response
        client = cls(reader, writer)
        for frame in frames:
            client.send(frame)
        await writer.drain()
        return client

    def send(self, frame: dict[str, Any]) -> None:
        data, mask = orjson.dumps(frame), os.urandom(4)
        n = len(data)
        header = bytes([0x81]) + (
            bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
        )
        self.writer.write(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    async def next_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame from the server."""
        head = await self.reader.readexactly(2)
        n = head[1] & 0x7F
        if n == 126:
            n = int.from_bytes(await self.reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await self.reader.readexactly(8), "big")
        return head[0] & 0x0F, await self.reader.readexactly(n)

    def stop_reading(self) -> None:
        self.writer.transport.pause_reading()  # type: ignore[attr-defined]

    def resume_reading(self) -> None:
        self.writer.transport.resume_reading()  # type: ignore[attr-defined]

    async def close_code(self, timeout: float = 10.0) -> tuple[int, str]:
        """Read until the close frame; return its code and reason."""
        async with asyncio.timeout(timeout):
            while True:
                opcode, payload = await self.next_frame()
                if opcode == 0x8:
                    return int.from_bytes(payload[:2], "big"), payload[2:].decode()

    def close(self) -> None:
        self.writer.close()
