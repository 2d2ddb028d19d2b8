"""Shared helpers: ports, processes, memory, percentiles and the machine description."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import platform
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
CTX = multiprocessing.get_context("spawn")


@dataclass
class Result:
    """One row of the report: a system measured in a scenario with some parameters."""

    scenario: str
    system: str
    params: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "system": self.system,
            "params": self.params,
            "metrics": self.metrics,
        }


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: BaseProcess, timeout: float = 30.0) -> None:
    """Wait until something listens on ``port`` (or the process died, or time ran out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.is_alive():
            raise RuntimeError(f"server process exited with {proc.exitcode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} within {timeout:g} s")


def stop(proc: BaseProcess, timeout: float = 5.0) -> None:
    """Terminate a process we started, then kill it if it does not go."""
    if proc.is_alive():
        proc.terminate()
        proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join(timeout)


def raise_fd_limit(want: int = 65536) -> None:
    """Raise this process's open-file limit as far as the hard limit allows."""
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        if soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM on Linux; current RSS elsewhere), in MB."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return rss_mb(pid)


def rss_mb(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / (1 << 20)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def fsync_ms(directory: Path, count: int = 50) -> float:
    """The median time of a small write and fsync in ``directory``: what one durable
    COMMIT costs at least on this disk."""
    path = directory / "fsync-probe"
    times = []
    with open(path, "wb") as f:
        for _ in range(count):
            began = time.perf_counter()
            f.write(b"x" * 512)
            f.flush()
            os.fsync(f.fileno())
            times.append((time.perf_counter() - began) * 1000)
    path.unlink()
    return percentile(times, 0.5)


def machine() -> dict[str, Any]:
    import psutil

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / (1 << 30), 1),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "loopback_only": True,
        "generators_share_cores_with_server": os.cpu_count(),
    }


@contextlib.contextmanager
def spawned(target: Any, *args: Any) -> Iterator[BaseProcess]:
    """Run ``target(*args)`` in a fresh (spawned) process; stop it on the way out."""
    proc = CTX.Process(target=target, args=args, daemon=True)
    proc.start()
    try:
        yield proc
    finally:
        stop(proc)
