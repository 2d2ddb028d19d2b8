"""Prometheus metrics of one :class:`~syncline.server.app.SynclineServer`.

``sync.metrics_app()`` turns them on and answers an ASGI app serving them (mount it at
``/metrics`` or wherever the application wants). Each server has its own registry, so
several servers in one process (tests, or two databases) keep apart. The hooks are
cheap: a counter incremented inline where the event happens, nothing allocated per
frame beyond that. What describes state rather than events (the backplane, the log's
head and floor, the outboxes) is read at scrape time by a collector from values the
server keeps anyway: no store read per scrape.

Multi-process mode (several workers behind one port): with ``PROMETHEUS_MULTIPROC_DIR``
set in the environment *before* the process starts, counters, histograms and the
connection gauges are written to that directory by every worker and a scrape of any
worker sums them (``prometheus_client.multiprocess``); the state read at scrape time is
the answering worker's (the log head and floor are the database's, the same from any
worker). docs/operations.md, "Metrics", lists every metric.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ._extras import missing_extra
from .exceptions import SynclineError
from .protocol.frames import CLOSE_SLOW, SERVER_FRAME_TYPES, AckFrame, RejectFrame

try:
    import prometheus_client as pc
    from prometheus_client import multiprocess
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "prometheus_client", "Prometheus metrics", "metrics") from None

if TYPE_CHECKING:
    from .record import LogEntry
    from .server.app import SynclineServer

__all__ = [
    "Metrics",
    "MetricsPathError",
    "frame_type",
    "serve_factory",
    "serve_with_metrics",
    "with_metrics",
]

CLIENT_TYPES = ("hello", "sub", "unsub", "mut", "ping", "pong", "bad")
"""The ``type`` label of frames in; ``bad``: one the protocol refused to decode."""

_OUT_PREFIXES = tuple(
    (t, f'{{"t":"{t}"')
    for t in ("changes", "ack", *(t for t in SERVER_FRAME_TYPES if t not in ("changes", "ack")))
)

_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_LAG = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_BYTES = tuple(float(1 << n) for n in range(8, 26, 2))  # 256 B .. 16 MiB


def frame_type(text: str) -> str:
    """The ``t`` of an encoded server frame, without decoding it (or ``other``)."""
    for kind, prefix in _OUT_PREFIXES:
        if text.startswith(prefix):
            return kind
    return "other"


def text_bytes(text: str | bytes) -> int:
    """Bytes of a frame in UTF-8, without encoding it when it is ASCII (the usual)."""
    if isinstance(text, bytes) or text.isascii():
        return len(text)
    return len(text.encode())


class Metrics:
    """The server's metrics; the hooks below are what the server's parts call."""

    def __init__(self, server: SynclineServer) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        own = pc.CollectorRegistry()
        self.server = server

        def gauge(name: str, doc: str, labels: Iterable[str] = ()) -> Any:
            return pc.Gauge(name, doc, labels, registry=own, multiprocess_mode="livesum")

        def counter(name: str, doc: str, labels: Iterable[str] = ()) -> Any:
            return pc.Counter(name, doc, labels, registry=own)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Any:
            return pc.Histogram(name, doc, registry=own, buckets=buckets)

        connections = gauge(
            "syncline_connections", "WebSocket connections open, by state", ["state"]
        )
        self.awaiting = connections.labels("awaiting_hello")
        self.live = connections.labels("live")
        self.subscriptions = gauge(
            "syncline_subscriptions", "Queries subscribed by open WebSocket connections"
        )
        self.mutations = counter(
            "syncline_mutations",
            "Mutations answered, by outcome (applied, conflict, duplicate, rejected: "
            "permanent, refused: temporary) and refusal code",
            ["outcome", "code"],
        )
        self.commit_seconds = histogram(
            "syncline_commit_duration_seconds",
            "Seconds from a write group's first write to its COMMIT's completion",
            _SECONDS,
        )
        self.group_size = histogram(
            "syncline_commit_group_size", "Writers sharing one COMMIT (group commit)", _SIZES
        )
        self.fanout_lag = histogram(
            "syncline_fanout_lag_seconds",
            "Seconds from a change's commit to this node's log reader handing it to "
            "connections (one observation per committed mutation read)",
            _LAG,
        )
        frames = counter(
            "syncline_frames", "WebSocket frames, by direction and type", ["direction", "type"]
        )
        sizes = counter(
            "syncline_frame_bytes",
            "Bytes of WebSocket frames (UTF-8 text), by direction and type",
            ["direction", "type"],
        )
        self.frames_in = {t: (frames.labels("in", t), sizes.labels("in", t)) for t in CLIENT_TYPES}
        self.frames_out = {
            t: (frames.labels("out", t), sizes.labels("out", t))
            for t in (*SERVER_FRAME_TYPES, "other")
        }
        self.slow = counter(
            "syncline_slow_consumer_disconnects",
            "Connections closed (4008) because more than max_queue_bytes waited for them",
        )
        self.closes = counter(
            "syncline_disconnects", "WebSocket connections closed, by close code", ["code"]
        )
        self.snapshot_bytes = histogram(
            "syncline_snapshot_bytes",
            "Bytes of snapshot frames sent (WebSocket subscriptions and HTTP pulls)",
            _BYTES,
        )

        def collect_state() -> Iterator[Any]:
            backplane = server.backplane
            state = GaugeMetricFamily(
                "syncline_backplane_state",
                "1 for the backplane's current state (connected, or degraded to polling)",
                labels=["state"],
            )
            for name in ("connected", "degraded"):
                state.add_metric([name], 1.0 if backplane.state == name else 0.0)
            yield state
            yield CounterMetricFamily(
                "syncline_backplane_reconnects",
                "Times the backplane's connection came back after it was lost",
                value=backplane.reconnects,
            )
            position = server.reader.position
            yield GaugeMetricFamily(
                "syncline_log_head",
                "The newest seq this node's log reader has read",
                value=position if position is not None else 0,
            )
            yield GaugeMetricFamily(
                "syncline_log_floor",
                "The retention floor: the oldest cursor seq the log can continue from",
                value=server.log_floor,
            )
            queued = [c.outbox.queued_bytes for c in server.connections]
            yield GaugeMetricFamily(
                "syncline_outbox_bytes",
                "Bytes waiting in the send queues of all connections",
                value=sum(queued),
            )
            yield GaugeMetricFamily(
                "syncline_outbox_largest_bytes",
                "Bytes waiting in the fullest send queue (max_queue_bytes closes it)",
                value=max(queued, default=0),
            )

        self.registry = own
        if self.multiprocess:
            self.registry = pc.CollectorRegistry()
            multiprocess.MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        self.registry.register(_Collector(collect_state))
        self.app: Callable[..., Any] = pc.make_asgi_app(self.registry)

    # --- hooks ---------------------------------------------------------------------------

    def frame_in(self, kind: str, data: str | bytes) -> None:
        count, total = self.frames_in.get(kind) or self.frames_in["bad"]
        count.inc()
        total.inc(text_bytes(data))

    def frame_out(self, text: str) -> None:
        count, total = self.frames_out[frame_type(text)]
        count.inc()
        total.inc(text_bytes(text))

    def mutation(self, frame: AckFrame | RejectFrame | Any) -> None:
        """Count one answered mutation from its ``ack`` or ``reject`` frame (a kept
        answer sent again, ``replay``, is a duplicate whatever it says)."""
        if isinstance(frame, AckFrame | RejectFrame) and frame.replay:
            self.mutations.labels("duplicate", "").inc()
        elif isinstance(frame, AckFrame):
            self.mutations.labels(frame.status, "").inc()
        elif isinstance(frame, RejectFrame):
            outcome = "rejected" if frame.permanent else "refused"
            self.mutations.labels(outcome, frame.code).inc()

    def snapshot_sent(self, text: str) -> None:
        self.snapshot_bytes.observe(text_bytes(text))

    def closed(self, code: int) -> None:
        self.closes.labels(str(code)).inc()
        if code == CLOSE_SLOW:
            self.slow.inc()

    def group_committed(self, size: int, seconds: float) -> None:
        self.group_size.observe(size)
        self.commit_seconds.observe(seconds)

    def fanned_out(self, entries: list[LogEntry], now: float) -> None:
        last = -1
        for e in entries:
            if e.seq != last:  # one mutation's entries share a seq
                last = e.seq
                self.fanout_lag.observe(max(0.0, now - e.time))


class _Collector:
    """A prometheus collector from a generator function (read at each scrape)."""

    def __init__(self, collect: Callable[[], Iterator[Any]]) -> None:
        self.collect = collect


class MetricsPathError(SynclineError, ValueError):
    """``--metrics-path`` cannot be served: not a path, or no single server to measure."""


def with_metrics(app: Any, path: str, *objects: Any) -> Any:
    """``app`` with the metrics of the one :class:`SynclineServer` reachable from it (or
    from ``objects``, such as its module) answered at ``path``: what
    ``syncline serve --metrics-path`` runs. Everything else goes to ``app`` unchanged."""
    from .serving import _servers

    if not path.startswith("/") or path == "/":
        raise MetricsPathError(f"metrics path {path!r} must start with / and name a path")
    servers = list({id(s): s for s in _servers((app, *objects))}.values())
    if len(servers) != 1:
        raise MetricsPathError(
            f"--metrics-path needs exactly one SynclineServer in the application; found "
            f"{len(servers)} (mount sync.metrics_app() yourself instead)"
        )
    metrics = servers[0].metrics_app()
    path = path.rstrip("/")

    async def dispatch(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].rstrip("/") == path:
            await metrics(scope, receive, send)
        else:
            await app(scope, receive, send)

    return dispatch


_TARGET_ENV, _PATH_ENV = "_SYNCLINE_SERVED_APP", "_SYNCLINE_SERVED_METRICS_PATH"


def _load(target: str, path: str) -> Any:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return with_metrics(getattr(module, attr), path, module)


def serve_with_metrics(target: str, path: str) -> str:
    """Check that ``target`` (``MODULE:APP``) can be served with its metrics at
    ``path``, and return the uvicorn factory that does it in each worker (uvicorn takes
    an import string, not an app, for ``--workers``)."""
    _load(target, path)  # refused here, once, rather than in every worker
    os.environ[_TARGET_ENV], os.environ[_PATH_ENV] = target, path
    return f"{__name__}:serve_factory"


def serve_factory() -> Any:
    """uvicorn's app factory under ``syncline serve --metrics-path`` (see
    :func:`serve_with_metrics`)."""
    return _load(os.environ[_TARGET_ENV], os.environ[_PATH_ENV])
