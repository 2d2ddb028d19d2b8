"""A PostgreSQL cluster a test owns: ``initdb`` into a temporary directory, its own
loopback port, TCP only, ``fsync`` and ``synchronous_commit`` on. The test may stop,
restart or SIGKILL it (the shared server on 5432 is never touched).

    def test_x(pg_cluster: PgCluster) -> None:
        store = PostgresStore(pg_cluster.dsn, schema="s")
        ...
        pg_cluster.crash()   # SIGKILL the postmaster and every backend: no checkpoint
        pg_cluster.start()   # crash recovery replays the WAL

The binaries come from ``$SYNCLINE_TEST_PG_BIN`` or the newest
``/usr/lib/postgresql/*/bin``. PostgreSQL refuses to run as root, so as root every
command runs as the ``postgres`` user (``runuser``). Under CI=true a cluster that
cannot be made fails the test; elsewhere the test skips.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from .servers import free_port

__all__ = ["PgCluster", "pg_binaries", "pg_cluster"]

USER = "postgres"


def pg_binaries() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, if any."""
    given = os.environ.get("SYNCLINE_TEST_PG_BIN")
    if given:
        return Path(given)
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    return Path(found[-1]).parent if found else None


def cluster_unavailable(message: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


class PgCluster:
    """One owned cluster (see the module docs); ``dsn`` names its ``postgres`` database."""

    def __init__(self, binaries: Path, folder: Path) -> None:
        self.bin = binaries
        self.folder = folder
        self.data = folder / "data"
        self.log_path = folder / "server.log"
        self.port = free_port()
        self.dsn = f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"
        self.process: subprocess.Popen[bytes] | None = None

    def _as_owner(self) -> dict[str, str]:
        return {"user": USER, "group": USER} if os.geteuid() == 0 else {}

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.folder, USER, USER)
        done = subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=self.folder,
            **self._as_owner(),  # type: ignore[call-overload]
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stdout}{done.stderr}")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nport = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                "unix_socket_directories = ''\n"
                "fsync = on\n"
                "synchronous_commit = on\n"
                "full_page_writes = on\n"
                "shared_buffers = 16MB\n"
                "max_connections = 60\n"
            )

    def start(self, timeout: float = 30) -> None:
        """Start (after a crash: recover) and return once it accepts connections.

        The postmaster is this process's child, so that it is reaped when killed (a
        container's init may leave it a zombie, which PostgreSQL takes for a running
        postmaster)."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("the cluster is already running")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.data)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
                **self._as_owner(),  # type: ignore[call-overload]
            )
        deadline = time.monotonic() + timeout
        while not self.accepts():
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"PostgreSQL exited at start:\n{self.log()}")
            if time.monotonic() > deadline:
                self.crash()
                raise RuntimeError(f"PostgreSQL did not start in {timeout}s:\n{self.log()}")
            time.sleep(0.05)

    def accepts(self) -> bool:
        """Does it answer a query (not only accept a socket: recovery refuses those)?"""
        done = subprocess.run(
            [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            timeout=10,
            check=False,
        )
        return done.returncode == 0

    def stop(self) -> None:
        """A clean, fast shutdown: sessions are ended, a checkpoint is written."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def crash(self) -> None:
        """SIGKILL the postmaster, then every process it had started: no shutdown, no
        checkpoint; what was not in the WAL is gone. Returns once all have exited."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        children = _children(process.pid)
        process.kill()
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        process.wait(20)
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in children):
            if time.monotonic() > deadline:
                raise TimeoutError("PostgreSQL processes outlived SIGKILL")
            time.sleep(0.02)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self.crash()
        if not os.environ.get("SYNCLINE_TEST_KEEP_PG"):  # kept: to read its server.log
            shutil.rmtree(self.folder, ignore_errors=True)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"  # a zombie has exited


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    """A running cluster of the test's own, removed afterwards (see the module docs)."""
    binaries = pg_binaries()
    if binaries is None or not (binaries / "initdb").exists():
        cluster_unavailable("no PostgreSQL binaries (set SYNCLINE_TEST_PG_BIN)")
    # Not under pytest's tmp_path: its parents are private to the user running pytest.
    cluster = PgCluster(binaries, Path(tempfile.mkdtemp(prefix="syncline-pgcluster-")))
    try:
        try:
            cluster.init()
            cluster.start()
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
            cluster_unavailable(f"cannot start an owned PostgreSQL cluster: {exc}")
        yield cluster
    finally:
        cluster.remove()
