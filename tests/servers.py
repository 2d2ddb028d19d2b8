"""A real syncline server for tests: uvicorn in a subprocess, on a SQLite file.

    with ServerProcess(tmp_path / "db.sqlite3") as server:
        client = Client(server.ws_url, BOARD)
        ...
        server.kill()      # SIGKILL: no shutdown, no flush
        server.start()     # the same file, the same port

``start`` returns once the port accepts connections (uvicorn binds it after the app's
startup, so the store is open by then). From async code, run the blocking calls in a
thread: ``await asyncio.to_thread(server.start)``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from websockets.asyncio.client import ClientConnection

from syncline.client import Client

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(
        self,
        db_path: str | os.PathLike[str],
        *,
        app: str = "tests.server_app:app",
        port: int | None = None,
        env: dict[str, str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.db_path = os.fspath(db_path)
        self.app = app
        self.port = port or free_port()
        self.env = env or {}
        self.log_path = Path(log_path or f"{self.db_path}.server.log")
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/sync"

    def start(self, timeout: float = 20.0) -> None:
        if self.process is not None:
            raise RuntimeError("the server is already running")
        env = {
            **os.environ,
            "SYNCLINE_TEST_DB": self.db_path,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            **self.env,
        }
        self._log = open(self.log_path, "ab")  # noqa: SIM115 -- closed in _reap
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                self.app,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--lifespan",
                "on",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                self._reap()
                raise RuntimeError(f"the server exited at start:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.kill()
                    message = f"the server did not listen in {timeout}s:\n{self.log()}"
                    raise TimeoutError(message) from None
                time.sleep(0.05)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (SIGKILL by default: no shutdown at all) and wait for the exit."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self._reap()

    def stop(self) -> None:
        """A graceful stop (SIGTERM: uvicorn runs the app's shutdown)."""
        self.kill(signal.SIGTERM)

    def _reap(self) -> None:
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()


class Recorder(Client):
    """A client that keeps every frame it sends and receives, and can stop reading or
    drop its connection: faults injected on a real socket."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("backoff", (0.05, 0.5))
        super().__init__(*args, **kwargs)
        self.received: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.socket: ClientConnection | None = None

    def _receive(self, message: str | bytes) -> None:
        self.received.append(json.loads(message))
        super()._receive(message)

    async def _send(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        self.socket = ws
        self.sent.append(frame)
        await super()._send(ws, frame)

    def pause(self) -> None:
        """Stop reading: whatever the server sends now stays unread in the socket."""
        assert self.socket is not None
        self.socket.transport.pause_reading()

    def resume(self) -> None:
        assert self.socket is not None
        self.socket.transport.resume_reading()

    def drop(self) -> None:
        """Lose the connection at once, unread frames and all."""
        assert self.socket is not None
        self.socket.transport.abort()
