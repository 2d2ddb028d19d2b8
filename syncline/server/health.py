"""``GET /sync/health`` (liveness) and ``GET /sync/ready`` (readiness), for load
balancers and Kubernetes probes.

Liveness says only that the process serves requests: it reads nothing, so a database
outage never makes an orchestrator restart a healthy process. Readiness says whether
this node can do its work now, check by check: the store answers a read within
``ready_timeout``; the log reader is within ``max_reader_lag`` seconds of the head; the
backplane is ``connected`` or ``degraded`` (other nodes' commits arrive through the poll
of the log, about a second late -- still ready, and said). 200 when ready, 503 when not.

Probes send no Origin and a Host such as ``10.0.0.5:8000``: these two routes skip the
Origin and Host checks (they change nothing and say nothing a client could not learn),
and their answers name a failed check's condition, not the database's error text, which
goes to the log (once per change of readiness).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ..exceptions import SetupError, StoreError

if TYPE_CHECKING:
    from .app import SynclineServer

__all__ = ["HealthEndpoints"]

log = logging.getLogger("syncline.server")


class HealthEndpoints:
    def __init__(self, server: SynclineServer) -> None:
        self.server = server
        self._failing: frozenset[str] = frozenset()  # the checks that failed last time
        self._starting: asyncio.Task[None] | None = None

    async def health(self, request: Request) -> Response:
        """Liveness: the process serves (no read, no check)."""
        return _json({"status": "ok"}, 200)

    async def ready(self, request: Request) -> Response:
        """Readiness: each check, and 200 only when all pass."""
        checks: dict[str, dict[str, Any]] = {}
        head, problems = await self._store(checks)
        checks["reader"] = await self._reader(head, problems)
        checks["backplane"] = self._backplane()
        failing = frozenset(name for name, c in checks.items() if not c["ok"])
        self._log_change(failing, problems)
        if failing:
            status = "not_ready"
        elif checks["backplane"]["state"] == "degraded":
            status = "degraded"
        else:
            status = "ready"
        return _json({"status": status, "checks": checks}, 503 if failing else 200)

    async def _store(self, checks: dict[str, dict[str, Any]]) -> tuple[int | None, list[str]]:
        server = self.server
        timeout = server.ready_timeout
        problems: list[str] = []
        begun = time.monotonic()
        head: int | None = None
        try:
            async with asyncio.timeout(timeout):
                if not server.started:
                    await asyncio.shield(self._start())
                head = (await server.engine.head()).seq
        except TimeoutError:
            checks["store"] = {"ok": False, "error": "timeout", "timeout_seconds": timeout}
            problems.append(f"the store did not answer a read within {timeout:g}s")
        except StoreError as exc:
            checks["store"] = {"ok": False, "error": exc.condition or "store_error"}
            problems.append(f"the store failed a read: {exc}")
        except SetupError as exc:  # the application forgot lifespan=sync.lifespan
            checks["store"] = {"ok": False, "error": "setup"}
            problems.append(str(exc))
        else:
            checks["store"] = {"ok": True, "seconds": round(time.monotonic() - begun, 6)}
        return head, problems

    def _start(self) -> asyncio.Task[None]:
        """Start a server nothing used yet, as a request would (a load balancer sends no
        traffic before the node is ready): in a task of its own, which a probe that
        times out leaves running rather than cancelling half way."""
        if self._starting is None or self._starting.done():
            self._starting = asyncio.ensure_future(self.server.start())
            self._starting.add_done_callback(_retrieved)
        return self._starting

    async def _reader(self, head: int | None, problems: list[str]) -> dict[str, Any]:
        server = self.server
        position = server.reader.position
        most = server.max_reader_lag
        out: dict[str, Any] = {"position": position, "head": head, "max_lag_seconds": most}
        if head is None:  # the store did not answer: the reader cannot be judged
            out.update(ok=False, error="store")
            return out
        if position is None or not server.started:
            out.update(ok=False, error="not_started")
            problems.append("the log reader has not started")
            return out
        lag = 0.0
        if position < head:
            lag = await self._lag(position)
        out.update(ok=lag <= most, lag_seconds=round(lag, 3))
        if lag > most:
            problems.append(f"the log reader is {lag:.1f}s behind the head (max {most:g}s)")
        return out

    async def _lag(self, position: int) -> float:
        """Seconds since the oldest commit the reader has not read was made."""
        try:
            async with asyncio.timeout(self.server.ready_timeout):
                async with self.server.engine.store.read() as tx:
                    entries = await tx.log(position, position + 1)
        except (TimeoutError, StoreError):
            return float("inf")
        return max(0.0, time.time() - entries[0].time) if entries else 0.0

    def _backplane(self) -> dict[str, Any]:
        backplane = self.server.backplane
        return {
            "ok": True,  # degraded still serves: other nodes' commits come by the poll
            "state": backplane.state,
            "kind": type(backplane).__name__,
            "reconnects": backplane.reconnects,
        }

    def _log_change(self, failing: frozenset[str], problems: list[str]) -> None:
        """One line when readiness is lost or changes why, one when it comes back."""
        if failing == self._failing:
            return
        if failing:
            log.warning(
                "not ready (%s): %s",
                ", ".join(sorted(failing)),
                "; ".join(problems),
                extra={"checks": sorted(failing)},
            )
        else:
            log.warning("ready again")
        self._failing = failing


def _retrieved(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # a failed start is reported by the probe that awaited it


def _json(body: dict[str, Any], status: int) -> Response:
    return Response(
        msgspec.json.encode(body),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
