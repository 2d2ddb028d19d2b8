"""The HTTP endpoints, for clients without WebSocket: ``POST /sync/mutate``, the long
poll ``GET /sync/pull``, and the browser client's modules ``GET /sync/<name>.js``.

A mutation posted here is decoded by the same rules as a ``mut`` frame
(:meth:`~syncline.protocol.server.ServerProtocol.receive_mutate_body`) and answered
with the same ``ack``/``reject`` frames; refusals of the request itself are ``error``
frames with an HTTP status (``docs/protocol.md``, "HTTP").

Long polls wait for the head this process last heard of (:meth:`HttpEndpoints.advanced`,
called once per reader step that moved it, whichever node committed).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import math
import re
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ..cost import ByteBucket, ReadBudget
from ..cursor import Cursor
from ..exceptions import ClientIdTaken, CursorError, QueryError, ReadLimitExceeded
from ..logs import new_connection_id, set_context
from ..model import Principal
from ..protocol.frames import (
    ServerFrame,
    changes_frame,
    encode,
    error_frame,
    snapshot_frame,
)
from ..protocol.server import ProtocolError, ServerProtocol
from ..query import Query
from ..textcheck import name_problem

if TYPE_CHECKING:
    from .app import SynclineServer

__all__ = ["HttpEndpoints"]

_MODULE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")


class HttpError(Exception):
    """A refused request: its HTTP status, and the ``error`` frame's code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code

    def response(self) -> Response:
        return _json(error_frame(self.code, str(self)), status=self.status)


class HttpEndpoints:
    def __init__(self, server: SynclineServer) -> None:
        self.server = server
        self.engine = server.engine
        self.head = 0  # the newest commit this process heard of (long polls wait for it)
        self._head_changed = asyncio.Condition()
        self._polls: dict[str, int] = {}  # long polls waiting, per principal
        self._pull_bytes: dict[str, ByteBucket] = {}  # snapshot bytes, per principal
        self._tasks: set[asyncio.Task[None]] = set()

    # --- the head, for long polls -------------------------------------------------------

    def advanced(self, head: int) -> None:
        """The node's log reader moved to ``head``: wake the long polls."""
        self.head = max(self.head, head)
        if not self._polls:  # no long poll waits (each one counts in _polls while it does)
            return
        task = asyncio.get_running_loop().create_task(self._notify_pullers())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify_pullers(self) -> None:
        async with self._head_changed:
            self._head_changed.notify_all()

    # --- POST /sync/mutate --------------------------------------------------------------

    async def _principal(self, request: Request) -> Principal:
        principal = await self.server.authenticate_as(request, None)
        if principal is None:
            self.server.log_refusal(request, "unauthorized", "authentication failed (HTTP 401)")
            raise HttpError(401, "unauthorized", "authentication failed")
        return principal

    async def mutate(self, request: Request) -> Response:
        """``POST /sync/mutate``: ``{"client": id, "mut": {id, ops, base, mode}}``."""
        try:
            if not self.server.origin_allowed(request):
                raise HttpError(403, "origin", "origin not allowed")
            if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
                # A cross-site form cannot send this type without a CORS preflight.
                raise HttpError(415, "content_type", "send the mutation as application/json")
            await self.server.start()
            principal = await self._principal(request)  # before reading any body
            key = self.engine.principal_key(principal)
            set_context(connection=new_connection_id("http"), principal=key)
            body = await self._read_body(request)
            posted = ServerProtocol(self.server.limits).receive_mutate_body(body)
            set_context(client=posted.client_id, mutation=posted.mutate.mutation.get("id"))
            if posted.acked and posted.mutate.refusal is None:
                # HTTP clients say which answers they hold here, as hello.acked does.
                last = await self.engine.client_last(principal, posted.client_id)
                await self.server.confirm_acks(posted.client_id, min(posted.acked, last))
            mutate = posted.mutate
            frame = await self.server.apply(
                principal, posted.client_id, mutate.mutation, mutate.refused()
            )
            return _json(frame)
        except HttpError as exc:
            return exc.response()
        except ClientIdTaken as exc:  # checking acked found the id is another's
            return _json(error_frame(exc.code, str(exc)), status=403)
        except ProtocolError as exc:
            return _json(exc.frame(), status=400 if exc.code != "client_id_taken" else 403)

    async def _read_body(self, request: Request) -> bytes:
        """The request body, refused with 413 as soon as it passes the frame limit."""
        limit = self.server.limits.max_frame_bytes
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise HttpError(413, "too_large", f"body exceeds {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HttpError(413, "too_large", f"body exceeds {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    # --- GET /sync/pull -----------------------------------------------------------------

    async def pull(self, request: Request) -> Response:
        """``GET /sync/pull?queries=<json>&since=<cursor>&wait=<s>``: a long poll."""
        try:
            await self.server.start()
            principal = await self._principal(request)
            params = request.query_params
            queries = self._queries(params.get("queries", ""))
            wait = _wait_seconds(params.get("wait"), self.server.pull_timeout)
            since_token = params.get("since")
            key = self.engine.principal_key(principal)
            set_context(connection=new_connection_id("http"), principal=key)
            if since_token is None:
                return await self._budgeted(
                    key, lambda budget: self._snapshot(principal, queries, budget)
                )
            since = Cursor.parse(since_token)
            most = self.server.max_polls_per_principal
            if self._polls.get(key, 0) >= most:
                raise HttpError(429, "rate", f"at most {most} pulls at once per user")
            self._polls[key] = self._polls.get(key, 0) + 1
            try:
                return await self._budgeted(
                    key, lambda budget: self._long_poll(principal, since, queries, wait, budget)
                )
            finally:
                self._polls[key] -= 1
                if not self._polls[key]:
                    del self._polls[key]
        except HttpError as exc:
            return exc.response()
        except (QueryError, CursorError) as exc:
            return _json(error_frame(exc.code, str(exc)), status=400)
        except ReadLimitExceeded as exc:
            return _json(error_frame(exc.code, str(exc), ref=exc.ref), status=413)

    async def _budgeted(
        self, key: str, answer: Callable[[ReadBudget], Awaitable[bytes]]
    ) -> Response:
        """One pull's answer within the limits: ``max_snapshot_bytes`` and
        ``max_scan_rows`` per pull, ``snapshot_bytes_per_minute`` per principal."""
        limits = self.server.limits
        now = time.monotonic()
        bucket = self._pull_bytes.get(key)
        if bucket is None:
            if len(self._pull_bytes) >= 10_000:  # forget principals whose bucket refilled
                self._pull_bytes = {k: b for k, b in self._pull_bytes.items() if not b.full(now)}
            bucket = self._pull_bytes[key] = ByteBucket(limits.snapshot_bytes_per_minute, now)
        budget = ReadBudget(
            self.server.max_snapshot_bytes, limits.max_scan_rows, bucket.available(now)
        )
        try:
            body = await answer(budget)
        finally:
            bucket.spend(budget.spent, time.monotonic())
        most = self.server.max_snapshot_bytes
        if len(body) > most + (1 << 16):  # a changes answer (a snapshot was counted)
            raise ReadLimitExceeded(
                f"the answer would exceed {most} bytes "
                "(max_snapshot_bytes per snapshot or pull); pull without since for a snapshot, "
                "or pull fewer queries"
            )
        return Response(
            body, media_type="application/json", headers={"Cache-Control": "private, no-store"}
        )

    async def _snapshot(
        self,
        principal: Principal,
        queries: dict[str, Query],
        budget: ReadBudget,
        reset: str | None = None,
    ) -> bytes:
        snap = await self.engine.snapshot(principal, queries, budget=budget)
        body = encode(snapshot_frame(snap, reset=reset))
        if self.server.metrics is not None:
            self.server.metrics.snapshot_bytes.observe(len(body))  # bytes already
        return body

    def _queries(self, raw: str) -> dict[str, Query]:
        try:
            obj = msgspec.json.decode(raw)
        except (msgspec.DecodeError, RecursionError):
            raise HttpError(
                400, "bad_frame", "queries must be a JSON object of {id: query}"
            ) from None
        if not isinstance(obj, dict) or not obj or len(obj) > self.server.limits.max_subscriptions:
            raise HttpError(
                400, "bad_frame", "queries must be a non-empty JSON object of {id: query}"
            )
        for qid in obj:
            if (problem := name_problem(qid)) is not None:
                raise HttpError(400, "bad_frame", f"query id {problem}")
        return {qid: Query.parse(q, self.engine.schema) for qid, q in obj.items()}

    async def _long_poll(
        self,
        principal: Principal,
        since: Cursor,
        queries: dict[str, Query],
        wait: float,
        budget: ReadBudget,
    ) -> bytes:
        deadline = time.monotonic() + wait
        while True:
            if self.head > since.seq or time.monotonic() >= deadline:
                try:
                    changes = await self.engine.changes_since(
                        principal, since, queries, budget=budget
                    )
                except CursorError as exc:
                    if exc.code == "cursor_ahead":
                        raise
                    return await self._snapshot(principal, queries, budget, reset=exc.code)
                if changes.cursor.seq > since.seq or time.monotonic() >= deadline:
                    return encode(changes_frame(changes))
                self.head = max(self.head, changes.cursor.seq)
            async with self._head_changed:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        await self._head_changed.wait()

    # --- GET /sync/<module>.js ----------------------------------------------------------

    async def client_module(self, request: Request) -> Response:
        """``GET /sync/client.js`` and its sibling modules: the browser client.

        Revalidated on every load (``no-cache``), so a deploy never mixes old and new
        modules; a strong ``ETag`` (the content's hash) and ``Last-Modified`` let a
        reload get ``304 Not Modified`` for each module instead of its bytes."""
        module = request.path_params["module"]
        if not _MODULE_NAME.fullmatch(module):
            return _not_found(f"no browser module named {module!r}")
        found = _static_module(module)
        if found is None:
            return _not_found(f"no browser module named {module!r}")
        source, etag, modified = found
        headers = {"Cache-Control": "no-cache", "ETag": etag}
        if modified is not None:
            headers["Last-Modified"] = email.utils.formatdate(modified, usegmt=True)
        if _not_modified(request, etag, modified):
            return Response(status_code=304, headers=headers)
        return Response(source, media_type="text/javascript", headers=headers)


def _static_module(module: str) -> tuple[bytes, str, float | None] | None:
    """A browser module's bytes, strong ETag and modification time (None inside a zip)."""
    path = resources.files("syncline").joinpath(f"static/{module}.js")
    try:
        source = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    etag = '"' + hashlib.sha256(source).hexdigest()[:32] + '"'
    try:
        modified: float | None = int(Path(str(path)).stat().st_mtime)
    except OSError:
        modified = None
    return source, etag, modified


def _not_modified(request: Request, etag: str, modified: float | None) -> bool:
    """RFC 9110's conditional GET: If-None-Match wins (weak comparison); else
    If-Modified-Since, to the second."""
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return "*" in tags or etag in tags
    since = request.headers.get("if-modified-since")
    if since is None or modified is None:
        return False
    try:
        when = email.utils.parsedate_to_datetime(since).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    return modified <= when


def _wait_seconds(raw: str | None, limit: float) -> float:
    """The ``wait`` parameter of a pull: finite seconds from 0 to ``limit``."""
    if raw is None:
        return limit
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or not 0 <= value <= limit:
        raise HttpError(400, "bad_frame", f"wait must be a number of seconds from 0 to {limit:g}")
    return value


def _not_found(message: str) -> Response:
    return _json(error_frame("not_found", message), status=404)


def _json(frame: ServerFrame, *, status: int = 200) -> Response:
    return Response(encode(frame), status_code=status, media_type="application/json")
