"""The inspector: what a developer opens when a tab "doesn't update".

Opt-in: ``SynclineServer(engine, inspect=guard)`` mounts ``{path}/inspect`` (a page),
``{path}/inspect/summary`` (the JSON it polls each second) and the page's script and
style; without ``inspect`` none of them exist (404). ``guard(request)`` is the
application's own check (its authentication, its notion of an operator), may be async,
and answers each request:

* ``False`` or ``None``: refused with 403 and nothing else (not even whether there is
  anything to see);
* ``True``: everything but record data: field names of changes, no values;
* ``"values"``: the changes' and conflicts' values too.

Any other answer is a bug in the guard: refused (403) and logged. Every list in the
summary is bounded (:attr:`Inspector.max_rows`, :attr:`Inspector.max_events`) and every
string clipped (:data:`CLIP`), so the answer stays small whatever the load.
"""

from __future__ import annotations

import inspect as _inspect
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..exceptions import StoreError
from ..model import Principal
from ..protocol.frames import AckFrame, RejectFrame

if TYPE_CHECKING:
    from .app import SynclineServer

__all__ = ["CLIP", "VALUES", "InspectGuard", "Inspector"]

log = logging.getLogger("syncline.server")

VALUES = "values"
"""What a guard returns to let a request see record values, not only field names."""

InspectGuard = Callable[[Request], "bool | str | Awaitable[bool | str | None] | None"]
"""``(request) -> True | "values" | False``, maybe async: who may inspect, and how much."""

CLIP = 200
"""Characters kept of any one string (keys, ids, messages, values) in a summary."""

Access = Literal["names", "values"]
Endpoint = Callable[[Request], Awaitable[Response]]

_ASSETS = {"inspect.js": "text/javascript", "inspect.css": "text/css"}
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class Inspector:
    """The inspector of one :class:`~syncline.server.app.SynclineServer`: its routes,
    the ring buffer of recent conflicts and rejects, and the summary."""

    max_rows = 200
    """Connections, queries and changes listed at most (the totals are still counted)."""
    max_changes = 50
    """The last changes of the log listed."""
    max_events = 100
    """Recent conflicts and rejects kept (a ring buffer: the oldest go first)."""
    max_queries_per_connection = 20
    """Subscriptions listed per connection (its count is given whole)."""

    def __init__(self, server: SynclineServer, guard: InspectGuard) -> None:
        if not callable(guard):
            raise TypeError(f"inspect must be a callable (request) -> bool, not {guard!r}")
        self.server = server
        self.guard = guard
        self.events: deque[dict[str, Any]] = deque(maxlen=self.max_events)
        self.counts: Counter[str] = Counter()
        """Mutations answered since start, by outcome: applied, conflict, duplicate,
        rejected."""

    def routes(self, path: str, wrap: Callable[[Endpoint], Endpoint]) -> list[Route]:
        """The inspector's routes, each endpoint ``wrap``ped (the server's Host check:
        a guard that trusts loopback must not be reachable through a rebound name)."""
        return [
            Route(f"{path}/inspect", wrap(self.page), methods=["GET"]),
            Route(f"{path}/inspect/summary", wrap(self.summary_endpoint), methods=["GET"]),
            Route(f"{path}/inspect/{{asset}}", wrap(self.asset), methods=["GET"]),
        ]

    # --- fed from SynclineServer.apply ---------------------------------------------------

    def observe(
        self,
        principal: Principal,
        client_id: str,
        mutation: Mapping[str, Any],
        answer: AckFrame | RejectFrame,
    ) -> None:
        """Count an answer; keep it in the ring buffer if it is a conflict or a reject."""
        if isinstance(answer, RejectFrame):
            self.counts["rejected"] += 1
            event: dict[str, Any] = {
                "kind": "reject",
                "code": answer.code,
                "permanent": answer.permanent,
                "message": _clip(answer.message),
                "collection": _clip(answer.collection),
                "id": _clip(answer.id),
                "field": _clip(answer.field),
            }
        else:
            self.counts[answer.status] += 1
            if answer.status != "conflict":
                return
            conflicts = [c for r in answer.results for c in r.conflicts]
            event = {
                "kind": "conflict",
                "conflicts": [
                    {
                        "collection": _clip(c.c),
                        "id": _clip(c.id),
                        "field": _clip(c.field),
                        "theirs_v": c.theirs_v,
                        "values": {
                            "base": _preview(c.base),
                            "mine": _preview(c.mine),
                            "theirs": _preview(c.theirs),
                        },
                    }
                    for c in conflicts[: self.max_queries_per_connection]
                ],
            }
        try:
            key = self.server.engine.principal_key(principal)
        except Exception:  # the application's function: never fail a mutation for it
            key = "?"
        event.update(
            time=time.time(),
            principal=_clip(key),
            client_id=_clip(client_id),
            mid=answer.mid,
        )
        self.events.append(event)

    # --- endpoints -----------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        if await self.access(request) is None:
            return _refused()
        html = _resource("inspect.html")
        return Response(html, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    async def asset(self, request: Request) -> Response:
        if await self.access(request) is None:
            return _refused()
        name = request.path_params["asset"]
        if name not in _ASSETS:
            body = {"t": "error", "code": "not_found", "message": f"no inspector file {name!r}"}
            return Response(orjson.dumps(body), 404, media_type="application/json")
        return Response(_resource(name), media_type=_ASSETS[name], headers=_PAGE_HEADERS)

    async def summary_endpoint(self, request: Request) -> Response:
        access = await self.access(request)
        if access is None:
            return _refused()
        body = orjson.dumps(await self.summary(access))
        return Response(body, media_type="application/json", headers=_PAGE_HEADERS)

    async def access(self, request: Request) -> Access | None:
        """What the guard lets ``request`` see; None: nothing (refused)."""
        try:
            answer = self.guard(request)
            if _inspect.isawaitable(answer):
                answer = await answer
        except Exception:
            log.exception("the inspect guard failed; refusing the request")
            return None
        if answer is True:
            return "names"
        if answer == VALUES:
            return "values"
        if answer is not None and answer is not False:
            log.error(
                "the inspect guard returned %r; return True, False or %r: refusing",
                answer,
                VALUES,
            )
        return None

    # --- the summary -----------------------------------------------------------------------

    async def summary(self, access: Access = "names") -> dict[str, Any]:
        """What the page shows, as JSON-ready data, bounded in size."""
        server, rows = self.server, self.max_rows
        conns = list(server.connections)
        per_query: Counter[str] = Counter()
        shown: list[dict[str, Any]] = []
        for conn in conns:
            keys = {qid: q.key for qid, q in list(conn.queries.items())}
            per_query.update(set(keys.values()))
            if len(shown) < rows:
                listed = list(keys.items())[: self.max_queries_per_connection]
                shown.append(
                    {
                        "principal": _clip(conn.principal_key),
                        "client_id": _clip(conn.client_id),
                        "cursor": conn.cursor,
                        "outbox": len(conn.outbox),
                        "subscriptions": len(keys),
                        "queries": {_clip(q): _clip(k) for q, k in listed},
                        "closing": conn.close_reason is not None,
                    }
                )
        reader = server.reader
        return {
            "t": "inspect",
            "time": time.time(),
            "access": access,
            "log": await self._log(access),
            "reader": {
                "position": reader.position,
                "joined": len(reader.connections),
                "steps": reader.steps,
                "step_seconds": round(getattr(reader, "step_seconds", 0.0), 6),
                "evaluated": getattr(reader, "evaluated", None),
            },
            "backplane": {
                "kind": type(server.backplane).__name__,
                "state": getattr(server.backplane, "state", None),
            },
            "mutations": dict(self.counts),
            "connections": {"total": len(conns), "shown": shown},
            "queries": {
                "total": len(per_query),
                "shown": [
                    {"key": _clip(k), "connections": n} for k, n in per_query.most_common(rows)
                ],
            },
            "events": [_event(e, access) for e in list(self.events)[-rows:][::-1]],
        }

    async def _log(self, access: Access) -> dict[str, Any]:
        """The head, floor and the last :attr:`max_changes` changes (newest first)."""
        rows = min(self.max_changes, self.max_rows)
        try:
            async with self.server.engine.store.read() as tx:
                head, floor, epoch = await tx.head(), await tx.floor(), await tx.epoch()
                entries = await tx.log(max(floor, head - rows), head)
        except StoreError as exc:
            return {"error": _clip(str(exc))}
        changes = []
        for e in entries[-rows:][::-1]:
            change: dict[str, Any] = {
                "seq": e.seq,
                "collection": _clip(e.collection),
                "id": _clip(e.id),
                "kind": e.kind,
                "client_id": _clip(e.client_id),
                "mid": e.mutation_id,
                "time": e.time,
                "fields": [_clip(f) for f in list(e.patch)[:rows]],
            }
            if access == "values":
                change["values"] = {_clip(f): _preview(v) for f, v in list(e.patch.items())[:rows]}
            changes.append(change)
        return {"epoch": epoch, "head": head, "floor": floor, "changes": changes}


def _event(event: dict[str, Any], access: Access) -> dict[str, Any]:
    """A conflict's values only for a request that may see values."""
    if access == "values" or "conflicts" not in event:
        return event
    return {
        **event,
        "conflicts": [{k: v for k, v in c.items() if k != "values"} for c in event["conflicts"]],
    }


def _refused() -> Response:
    body = {"t": "error", "code": "forbidden", "message": "not allowed to inspect this server"}
    return Response(orjson.dumps(body), 403, media_type="application/json", headers=_PAGE_HEADERS)


def _resource(name: str) -> str:
    return resources.files("syncline.server").joinpath(f"inspect_static/{name}").read_text()


def _clip(value: str | None) -> str | None:
    if value is None or len(value) <= CLIP:
        return value
    return value[: CLIP - 1] + "…"


def _preview(value: Any) -> str:
    """A value as clipped JSON text (a long text or a large list stays small)."""
    text = orjson.dumps(value, default=str).decode()
    return _clip(text) or ""
