"""The scenarios: each starts its servers and load generators, measures, and stops them.

One module for all of them (over 600 lines) because each scenario is one flat
function of the same shape (start peers, warm up, measure, stop) read side by side
when comparing how systems were measured; splitting them would scatter that.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import queue as queue_mod
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .clients import run_mutators, run_resume, run_subscribers, run_writers
from .common import CTX, Result, free_port, peak_rss_mb, percentile, spawned, stop, wait_port
from .servers import DEMO_SECRET, FANOUT_PEERS, run_server

POSTGRES_ENV = "SYNCLINE_BENCH_POSTGRES"
"""The PostgreSQL database of ``mutations``' PostgreSQL rows (``--postgres-url``): each
run makes its own schema there and drops it. Unset: no PostgreSQL rows."""

Report = Callable[[str], None]


@dataclass
class Plan:
    """Sizes and durations of a run (``--quick`` or full)."""

    subscribers: tuple[int, ...]
    latency_seconds: float
    flood_seconds: float
    writers: tuple[int, ...]
    mutation_seconds: float
    ssr_sizes: tuple[int, ...]
    ssr_repeats: int
    subscriber_processes: int = 2
    flood_connections: int = 8
    flood_window: int = 16
    rate: float = 100.0
    resume_changes: int = 10_000
    connections: tuple[int, ...] = (1_000, 10_000)
    idle_seconds: float = 3.0
    hydrate_timeout: float = 120.0
    hydrate_max: int = 10_000
    matching_connections: int = 300
    postgres_url: str | None = None
    """``--postgres-url``: where ``mutations`` and ``multinode`` measure PostgreSQL."""


QUICK = Plan((100, 500), 3.0, 3.0, (1, 10, 50), 2.0, (100, 1_000, 10_000), 5)
FULL = Plan((100, 1_000), 10.0, 10.0, (1, 10, 50), 8.0, (100, 1_000, 10_000), 20)


def _get(q: Any, timeout: float) -> Any:
    try:
        return q.get(timeout=timeout)
    except queue_mod.Empty:
        raise TimeoutError(f"a load generator did not answer within {timeout:g} s") from None


def _run_generator(target: Any, args: tuple[Any, ...], timeout: float) -> Any:
    """Run a load generator in its own process and return what it reports; give up when
    it dies without reporting or ``timeout`` seconds pass."""
    q = CTX.Queue()
    deadline = time.monotonic() + timeout
    with spawned(target, *args, q) as proc:
        while time.monotonic() < deadline:
            try:
                return q.get(timeout=0.25)
            except queue_mod.Empty:
                if not proc.is_alive():
                    with contextlib.suppress(queue_mod.Empty):
                        return q.get(timeout=0.5)
                    raise RuntimeError(
                        f"{target.__name__} exited with code {proc.exitcode} without a result"
                    ) from None
        raise TimeoutError(f"{target.__name__} did not finish within {timeout:g} s")


# --- fanout ---------------------------------------------------------------------------------


def _systems(scenario: str, report: Report) -> list[str]:
    """syncline and the peers that can run here."""
    import importlib.util

    systems = ["syncline", *FANOUT_PEERS]
    if importlib.util.find_spec("socketio") is None:
        report(f"{scenario}: python-socketio is not installed; its rows are skipped")
        systems.remove("python-socketio")
    return systems


def fanout(plan: Plan, workdir: Path, report: Report) -> list[Result]:
    results = []
    systems = _systems("fanout", report)
    for n in plan.subscribers:
        for system in systems:
            report(f"fanout: {system}, {n} subscribers")
            results.append(_fanout_one(plan, workdir, system, n))
    return results


def _fanout_one(plan: Plan, workdir: Path, system: str, n: int) -> Result:
    port = free_port()
    db = str(workdir / f"fanout-{n}-{secrets.token_hex(3)}.sqlite3")
    params: dict[str, Any] = {
        "subscribers": n,
        "rate_per_s": plan.rate,
        "latency_seconds": plan.latency_seconds,
        "flood_seconds": plan.flood_seconds,
        "writer_connections": plan.flood_connections,
        "in_flight_per_connection": plan.flood_window,
        "generator_processes": plan.subscriber_processes + 1,
        "store": "sqlite (synchronous=FULL)" if system == "syncline" else "none",
    }
    with spawned(run_server, system, port, db) as server:
        wait_port(port, server)
        with _Subscribers(plan, system, port, n, connect_timeout=120) as subs:
            connected, failed = subs.connected, subs.failed
            time.sleep(0.5)
            cpu_start, wall_start = _cpu_s(server.pid or 0), time.monotonic()
            rate = _run_generator(
                run_writers,
                (system, port, "rate", plan.rate, plan.latency_seconds, 1, 1),
                plan.latency_seconds + 30,
            )
            time.sleep(1.0)
            subs.flood_start.value = time.time()
            flood = _run_generator(
                run_writers,
                (
                    system,
                    port,
                    "flood",
                    0.0,
                    plan.flood_seconds,
                    plan.flood_connections,
                    plan.flood_window,
                ),
                plan.flood_seconds + 30,
            )
            reports = subs.finish()
            wall = time.monotonic() - wall_start
            server_cpu = _cpu_s(server.pid or 0) - cpu_start
            rss = peak_rss_mb(server.pid or 0)
    latencies = [x for r in reports for x in r["latencies"]]
    delivered = sum(r["flood"] for r in reports)
    last = max((r["last_ns"] for r in reports), default=0) / 1e9
    span = max(last - flood["start"], flood["end"] - flood["start"], 1e-9)
    metrics = {
        **_latency_metrics(plan, latencies, rate, connected),
        "delivered_per_s": delivered / span,
        "published_per_s": flood["acked"] / max(flood["end"] - flood["start"], 1e-9),
        "flood_delivered_ratio": delivered / max(1, flood["acked"] * connected),
        "rss_mb": rss,
        "server_cpu_pct": 100 * server_cpu / wall,
        "subscribers_cpu_pct": 100 * sum(r["cpu_s"] for r in reports) / wall,
        "connected": connected,
        "connect_failures": failed,
        "dropped_connections": sum(r["dropped"] for r in reports),
        "refused": flood["refused"] + rate["refused"],
    }
    refusals = rate["refusals"] + flood["refusals"]
    if refusals:
        params["first_refusal"] = refusals[0]
    return Result("fanout", system, params, metrics)


def _latency_metrics(
    plan: Plan, latencies: list[float], rate: dict[str, Any], connected: int
) -> dict[str, float]:
    """Commit-to-delivery percentiles of the 100/s phase, and the shares that arrived."""
    return {
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies, default=float("nan")),
        "latency_acked_ratio": rate["acked"] / max(1, rate["sent"]),
        "latency_delivered_ratio": len(latencies)
        / max(1, int(plan.rate * plan.latency_seconds) * connected),
    }


class _Subscribers:
    """``n`` subscribers of ``system``, spread over the plan's subscriber processes:
    connected on entering (``connected``, ``failed``), stopped on leaving. Setting
    ``flood_start`` tells them when the throughput phase began."""

    def __init__(
        self,
        plan: Plan,
        system: str,
        port: int,
        n: int,
        connect_timeout: float,
        nonmatching: int = 0,
        tag: int = 0,
    ):
        self.flood_start = CTX.Value("d", math.inf)
        self._stop = CTX.Event()
        self._q = CTX.Queue()
        procs = plan.subscriber_processes
        shares = [n // procs + (i < n % procs) for i in range(procs)]
        self._procs = [
            CTX.Process(
                target=run_subscribers,
                args=(
                    system,
                    port,
                    share,
                    self.flood_start,
                    self._stop,
                    self._q,
                    tag + i,
                    nonmatching,
                ),
                daemon=True,
            )
            for i, share in enumerate(shares)
        ]
        self._connect_timeout = connect_timeout
        self.connected = self.failed = 0

    def __enter__(self) -> _Subscribers:
        for proc in self._procs:
            proc.start()
        try:
            for _ in self._procs:
                _, _, ok, bad = _get(self._q, self._connect_timeout)
                self.connected += ok
                self.failed += bad
        except BaseException:
            self.__exit__()
            raise
        return self

    def finish(self) -> list[dict[str, Any]]:
        """Stop them; each process's report."""
        self._stop.set()
        return [_get(self._q, 60)[2] for _ in self._procs]

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            stop(proc)


def _cpu_s(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


# --- mutations ------------------------------------------------------------------------------


def postgres_problem(url: str) -> str | None:
    """Why ``url`` cannot be used (a connection's error), or None when it answers."""

    async def probe() -> str | None:
        import asyncpg

        try:
            conn = await asyncpg.connect(url, timeout=5)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        await conn.close()
        return None

    return asyncio.run(probe())


def _drop_pg_schema(url: str, schema: str) -> None:
    async def drop() -> None:
        import asyncpg

        conn = await asyncpg.connect(url, timeout=5)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    with contextlib.suppress(Exception):
        asyncio.run(drop())


def mutations(plan: Plan, workdir: Path, report: Report) -> list[Result]:
    systems: list[tuple[str, str]] = [("syncline", "sqlite"), ("starlette-sqlite-naive", "sqlite")]
    if plan.postgres_url:
        systems[1:1] = [("syncline", "postgresql"), ("starlette-postgres-naive", "postgresql")]
    else:
        report(f"mutations: no PostgreSQL rows (give --postgres-url or ${POSTGRES_ENV})")
    results = []
    for writers in plan.writers:
        for system, store in systems:
            report(f"mutations: {system} on {store}, {writers} writers")
            results.append(_mutations_one(plan, workdir, system, store, writers))
    return results


def _mutations_one(plan: Plan, workdir: Path, system: str, store: str, writers: int) -> Result:
    port = free_port()
    schema = ""
    if store == "postgresql":
        assert plan.postgres_url is not None
        schema = f"syncline_bench_perf_{secrets.token_hex(4)}"
        sep = "&" if "?" in plan.postgres_url else "?"
        db = f"{plan.postgres_url}{sep}schema={schema}"
    else:
        db = str(workdir / f"mut-{system}-{writers}-{secrets.token_hex(3)}.sqlite3")
    try:
        with spawned(run_server, system, port, db) as server:
            wait_port(port, server)
            out = _run_generator(
                run_mutators,
                (system, port, writers, plan.mutation_seconds),
                plan.mutation_seconds + 60,
            )
            rss = peak_rss_mb(server.pid or 0)
    finally:
        if schema and plan.postgres_url:
            _drop_pg_schema(plan.postgres_url, schema)
    params = {
        "writers": writers,
        "store": f"{store} (synchronous=FULL)"
        if store == "sqlite"
        else "postgresql (synchronous_commit=on)",
        "seconds": plan.mutation_seconds,
        "transport": "websocket" if system == "syncline" else "http/1.1 keep-alive",
        "generator_processes": 1,
    }
    if out["refusals"]:
        params["first_refusal"] = out["refusals"][0]
    metrics = {
        "mutations_per_s": out["acked"] / max(out["elapsed"], 1e-9),
        "errors": out["errors"],
        "rss_mb": rss,
    }
    name = system if store == "sqlite" or system != "syncline" else "syncline-postgres"
    return Result("mutations", name, params, metrics)


# --- ssr ------------------------------------------------------------------------------------


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CHROMIUM_ENV = "SYNCLINE_BENCH_CHROMIUM"


def chromium() -> str | None:
    """The Chromium to drive with Playwright: $SYNCLINE_BENCH_CHROMIUM, the system's, or
    None (hydration is then skipped)."""
    import os
    import shutil

    try:
        import playwright  # noqa: F401
    except ImportError:
        return None
    for candidate in (os.environ.get(CHROMIUM_ENV), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


def ssr(plan: Plan, workdir: Path, report: Report) -> list[Result]:
    results = []
    browser = chromium()
    for page, size in ((page, size) for page in SSR_PAGES for size in plan.ssr_sizes):
        report(f"ssr: render {page} with {size} records")
        db = str(workdir / f"ssr-{page}-{size}-{secrets.token_hex(3)}.sqlite3")
        metrics = _run_generator(_ssr_worker, (db, page, size, plan.ssr_repeats), 300)
        params: dict[str, Any] = {
            "page": page,
            "records": size,
            "repeats": plan.ssr_repeats,
            "store": "sqlite",
        }
        if browser is not None and size > plan.hydrate_max:
            params["hydration"] = f"skipped: more than {plan.hydrate_max} records in this plan"
        elif browser is not None:
            report(f"ssr: hydrate {size} records in Chromium")
            port = free_port()
            repeats = 1 if size >= 10_000 else max(2, plan.ssr_repeats // 2)
            with spawned(run_server, f"syncline-{page}", port, db) as server:
                wait_port(port, server)
                hydration = _run_generator(
                    _hydrate_worker,
                    (browser, port, page, repeats, plan.hydrate_timeout, size < 10_000),
                    (repeats + 1) * (plan.hydrate_timeout + 30),
                )
            if "error" in hydration:
                params["hydration"] = hydration["error"]
            else:
                metrics.update(hydration)
            params["browser"] = browser
            params["hydrate_repeats"] = repeats
        else:
            params["hydration"] = "skipped: no Playwright or no Chromium"
        results.append(Result("ssr", f"syncline ({page})", params, metrics))
        if page == "todomvc":
            results.extend(_ssr_naive(plan, workdir, report, size, browser))
    return results


def _ssr_naive(
    plan: Plan, workdir: Path, report: Report, size: int, browser: str | None
) -> list[Result]:
    """``ssr-naive`` (Starlette + Jinja2 + sqlite3, the same markup and rows) and
    ``hydrate-naive`` (its page's script: ``JSON.parse`` the rows and render them)."""
    report(f"ssr: render ssr-naive with {size} records")
    db = str(workdir / f"ssr-naive-{size}-{secrets.token_hex(3)}.sqlite3")
    metrics = _run_generator(_ssr_naive_worker, (db, size, plan.ssr_repeats), 300)
    params: dict[str, Any] = {"page": "todomvc", "records": size, "repeats": plan.ssr_repeats}
    store = {"store": "sqlite3, one column per field"}
    out = [Result("ssr", "ssr-naive", {**params, **store}, metrics)]
    if browser is None or size > plan.hydrate_max:
        return out
    report(f"ssr: hydrate-naive {size} records in Chromium")
    port = free_port()
    repeats = 1 if size >= 10_000 else max(2, plan.ssr_repeats // 2)
    with spawned(run_server, "ssr-naive", port, db) as server:
        wait_port(port, server)
        hydration = _run_generator(
            _hydrate_worker,
            (browser, port, "naive", repeats, plan.hydrate_timeout, size < 10_000),
            (repeats + 1) * (plan.hydrate_timeout + 30),
        )
    if "error" in hydration:
        params["hydration"] = hydration["error"]
        hydration = {}
    params.update(browser=browser, hydrate_repeats=repeats)
    out.append(Result("ssr", "hydrate-naive", params, hydration))
    return out


def _ssr_naive_worker(db: str, size: int, repeats: int, q: Any) -> None:
    """Process target: seed the naive table, then time GET / through its ASGI app."""
    from .naive import seed_naive_todos, ssr_naive_app

    rows = [{"id": f"ssr-{i:06d}", **_todo(i).fields} for i in range(size)]
    seed_naive_todos(db, rows)

    async def measure() -> dict[str, float]:
        app = ssr_naive_app(db, TODOMVC_SESSION)
        render: list[float] = []
        size_bytes = 0
        for _ in range(repeats + 1):
            began = time.perf_counter()
            body = await _get_page(app, [])
            render.append((time.perf_counter() - began) * 1000)
            size_bytes = len(body)
        render = render[1:]  # the first also compiles the template
        return {
            "render_ms": percentile(render, 0.5),
            "render_min_ms": min(render),
            "bytes": size_bytes,
        }

    q.put(asyncio.run(measure()))


# Runs in the page before its scripts: note DOMContentLoaded and the moment the sync
# status says "live" (the client connected, subscribed and caught up).
_HYDRATE_PROBE = """
document.addEventListener("DOMContentLoaded", () => {
  window.__slDcl = performance.now();
  const root = document.documentElement;  // TodoMVC: <html data-sync-state="live">
  const el = document.getElementById("sync-status");  // the board's status pill
  const check = () => {
    const live = root.dataset.syncState === "live" || (el && el.dataset.state === "live");
    if (live && window.__slLive === undefined) window.__slLive = performance.now();
  };
  check();
  new MutationObserver(check).observe(root, { attributes: true });
  if (el) new MutationObserver(check).observe(el, { attributes: true });
});
"""


def _hydrate_worker(
    browser: str, port: int, page: str, repeats: int, timeout: float, warm_up: bool, q: Any
) -> None:
    """Process target: load the page ``repeats`` times (after one warm-up load, if asked)
    in Chromium; report DOMContentLoaded-to-live and response-end-to-live times, or an
    error when the page did not go live within ``timeout`` seconds."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    try:
        cookies = []
        if page == "todomvc":
            from ..demo.todomvc.app import COOKIE

            cookies = [
                {"name": COOKIE, "value": _todomvc_cookie(), "url": f"http://127.0.0.1:{port}"}
            ]
        q.put(_hydrate(browser, port, repeats, timeout, warm_up, sync_playwright, cookies))
    except PlaywrightError as exc:
        q.put({"error": f"not live within {timeout:g} s ({str(exc).splitlines()[0][:120]})"})


def _hydrate(
    browser: str,
    port: int,
    repeats: int,
    timeout: float,
    warm_up: bool,
    sync_playwright: Any,
    cookies: list[dict[str, str]],
) -> dict[str, float]:
    hydrate: list[float] = []
    from_response: list[float] = []
    with sync_playwright() as pw:
        chrome = pw.chromium.launch(executable_path=browser, args=CHROMIUM_ARGS)
        try:
            for i in range(repeats + 1):
                context = chrome.new_context()
                context.add_cookies(cookies)
                page = context.new_page()
                page.add_init_script(_HYDRATE_PROBE)
                page.goto(
                    f"http://127.0.0.1:{port}/", wait_until="domcontentloaded", timeout=120_000
                )
                page.wait_for_function("window.__slLive !== undefined", timeout=120_000)
                live, dcl, response_end = page.evaluate(
                    "[window.__slLive, window.__slDcl,"
                    " performance.getEntriesByType('navigation')[0].responseEnd]"
                )
                context.close()
                if i >= int(warm_up):
                    hydrate.append(live - dcl)
                    from_response.append(live - response_end)
        finally:
            chrome.close()
    return {
        "hydrate_ms": percentile(hydrate, 0.5),
        "response_to_live_ms": percentile(from_response, 0.5),
    }


SSR_PAGES = ("todomvc", "board")
"""``todomvc``: a lean real app (one ``<li>`` per todo), close to syncline's own cost;
``board``: the demo board, whose rich cards (about 2 KB of markup each) cost more."""

TODOMVC_SESSION = "b" * 32


def _todomvc_cookie() -> str:
    """The signed session cookie of :data:`TODOMVC_SESSION` (under :data:`DEMO_SECRET`)."""
    from ..demo.sessions import Sessions
    from ..demo.todomvc.app import COOKIE

    return Sessions(COOKIE, secret=DEMO_SECRET).sign(TODOMVC_SESSION)


def _ssr_worker(db: str, page: str, size: int, repeats: int, q: Any) -> None:
    """Process target: seed ``size`` records for ``page``, then time GET / through the
    ASGI app, and the snapshot read and the embedding on their own."""
    q.put(asyncio.run(_ssr(db, page, size, repeats)))


async def _ssr(db: str, page: str, size: int, repeats: int) -> dict[str, float]:
    from ..ssr import read_page
    from ..store import store_from_url

    if page == "todomvc":
        from ..demo.todomvc.app import COOKIE, create_app, todos_query

        principal: str = TODOMVC_SESSION
        queries = {"todos": todos_query(principal)}
        headers = [(b"cookie", f"{COOKIE}={_todomvc_cookie()}".encode())]
    else:
        from ..demo.app import DEFAULT_BOARD, PRINCIPAL, board_queries, create_app

        principal, queries, headers = PRINCIPAL, board_queries(DEFAULT_BOARD), []
    app = create_app(store_from_url(db), secret=DEMO_SECRET)
    async with app.router.lifespan_context(app):
        engine = app.state.engine
        for start in range(0, size, 2_000):
            chunk = range(start, min(size, start + 2_000))
            async with engine.transaction(principal) as tx:
                tx.apply(*(_todo(i) if page == "todomvc" else _card(i) for i in chunk))
        render: list[float] = []
        read: list[float] = []
        embed: list[float] = []
        size_bytes = 0
        for _ in range(repeats + 1):
            began = time.perf_counter()
            body = await _get_page(app, headers)
            render.append((time.perf_counter() - began) * 1000)
            size_bytes = len(body)
            began = time.perf_counter()
            state = await read_page(engine, principal, queries)
            read.append((time.perf_counter() - began) * 1000)
            began = time.perf_counter()
            state.script_tag()
            embed.append((time.perf_counter() - began) * 1000)
    # The first of each also compiles templates and warms caches.
    render, read, embed = render[1:], read[1:], embed[1:]
    return {
        "render_ms": percentile(render, 0.5),
        "render_min_ms": min(render),
        "read_ms": percentile(read, 0.5),
        "embed_ms": percentile(embed, 0.5),
        "bytes": size_bytes,
    }


def _todo(i: int) -> Any:
    from ..ops import Insert

    fields = {
        "session": TODOMVC_SESSION,
        "title": f"Todo number {i}",
        "completed": i % 3 == 0,
        "order": float(i),
    }
    return Insert(c="todos", id=f"ssr-{i:06d}", fields=fields)


def _card(i: int) -> Any:
    from ..ops import Insert

    fields = {
        "board_id": "demo",
        "list_id": ("product", "engineering", "launch")[i % 3],
        "position": 10 + i,
        "title": f"Card number {i}",
        "description": "A short description of the work.",
        "labels": ["perf"] if i % 2 else [],
    }
    return Insert(c="cards", id=f"ssr-{i:06d}", fields=fields)


async def _get_page(app: Any, headers: list[tuple[bytes, bytes]]) -> bytes:
    """GET / through the ASGI app in this process (no network): the server's own time."""
    chunks: list[bytes] = []
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    if status != 200:
        raise RuntimeError(f"GET / answered {status}")
    return b"".join(chunks)


# --- resume ---------------------------------------------------------------------------------


def resume(plan: Plan, workdir: Path, report: Report) -> list[Result]:
    report(f"resume: {plan.resume_changes} changes while a client is offline")
    port = free_port()
    db = str(workdir / f"resume-{secrets.token_hex(3)}.sqlite3")
    with spawned(run_server, "syncline", port, db) as server:
        wait_port(port, server)
        metrics = _run_generator(run_resume, (port, plan.resume_changes), 600)
    params = {
        "changes": plan.resume_changes,
        "relevant_share": 0.01,
        "store": "sqlite (synchronous=FULL)",
    }
    return [Result("resume", "syncline", params, metrics)]


# --- connections ----------------------------------------------------------------------------


def connections(plan: Plan, workdir: Path, report: Report) -> list[Result]:
    results = []
    systems = _systems("connections", report)
    for n in plan.connections:
        for system in systems:
            report(f"connections: {system}, {n} idle subscribers")
            results.append(_connections_one(plan, workdir, system, n))
    return results


def _connections_one(plan: Plan, workdir: Path, system: str, n: int) -> Result:
    from .common import rss_mb

    port = free_port()
    db = str(workdir / f"conns-{n}-{secrets.token_hex(3)}.sqlite3")
    with spawned(run_server, system, port, db) as server:
        wait_port(port, server)
        time.sleep(0.5)
        before = rss_mb(server.pid or 0)
        with _Subscribers(plan, system, port, n, connect_timeout=300) as subs:
            connected, failed = subs.connected, subs.failed
            time.sleep(plan.idle_seconds)
            after = rss_mb(server.pid or 0)
            reports = subs.finish()
    metrics = {
        "held": connected - sum(r["dropped"] for r in reports),
        "connect_failures": failed,
        "rss_mb": after,
        "rss_idle_server_mb": before,
        "kb_per_conn": (after - before) * 1024 / max(1, connected),
    }
    params = {"connections": n, "idle_seconds": plan.idle_seconds, "subscribed": True}
    return Result("connections", system, params, metrics)


# --- matching -------------------------------------------------------------------------------


def matching(plan: Plan, workdir: Path, report: Report) -> list[Result]:
    """The server's CPU per commit with ``matching_connections`` connections holding 100
    queries each that no commit touches, against the same with 1 such query each: the
    subscription index should make a commit's cost grow with what it concerns only."""
    results = []
    n = plan.matching_connections
    for queries, system in ((100, "syncline"), (1, "one-query-each")):
        report(f"matching: {n} connections x {queries} non-matching queries")
        port = free_port()
        db = str(workdir / f"matching-{queries}-{secrets.token_hex(3)}.sqlite3")
        with spawned(run_server, "syncline", port, db) as server:
            wait_port(port, server)
            with _Subscribers(plan, "syncline", port, n, 300, nonmatching=queries) as subs:
                connected = subs.connected
                time.sleep(0.5)
                cpu_start = _cpu_s(server.pid or 0)
                out = _run_generator(
                    run_mutators,
                    ("syncline", port, 1, plan.mutation_seconds),
                    plan.mutation_seconds + 60,
                )
                cpu = _cpu_s(server.pid or 0) - cpu_start
                subs.finish()
        commits = max(1, out["acked"])
        params = {"connections": n, "queries_per_connection": queries, "store": "sqlite"}
        metrics = {
            "cpu_ms_per_commit": 1000 * cpu / commits,
            "commits": out["acked"],
            "connected": connected,
        }
        results.append(Result("matching", system, params, metrics))
    return results


# --- multinode ------------------------------------------------------------------------------

REDIS_ENV = "SYNCLINE_BENCH_REDIS"
"""The Redis of ``multinode`` (default ``redis://127.0.0.1:6379/0``); a run's channel is
its own."""


def multinode(plan: Plan, workdir: Path, report: Report) -> list[Result]:
    """Commit-to-delivery with 3 nodes on one PostgreSQL and Redis (writer on node 1,
    subscribers on nodes 2 and 3) against one node holding writer and subscribers."""
    import os

    if not plan.postgres_url:
        report(f"multinode: skipped (give --postgres-url or ${POSTGRES_ENV})")
        return []
    redis = os.environ.get(REDIS_ENV, "redis://127.0.0.1:6379/0")
    n = plan.subscribers[0]
    results = []
    for nodes, system in ((3, "syncline-3-nodes"), (1, "one-node")):
        report(f"multinode: {nodes} node(s), {n} subscribers")
        schema = f"syncline_bench_perf_{secrets.token_hex(4)}"
        sep = "&" if "?" in plan.postgres_url else "?"
        store = f"{plan.postgres_url}{sep}schema={schema}"
        spec = f"{store} {redis} syncline-bench-perf-{secrets.token_hex(4)}"
        ports = [free_port() for _ in range(nodes)]
        try:
            with contextlib.ExitStack() as stack:
                for port in ports:  # one at a time: the first seeds the board
                    server = stack.enter_context(spawned(run_server, "syncline-node", port, spec))
                    wait_port(port, server)
                readers = ports[1:] or ports
                shares = [n // len(readers) + (i < n % len(readers)) for i in range(len(readers))]
                groups = [
                    stack.enter_context(
                        _Subscribers(
                            dataclasses.replace(plan, subscriber_processes=1),
                            "syncline",
                            port,
                            share,
                            120,
                            tag=10 * i,
                        )
                    )
                    for i, (port, share) in enumerate(zip(readers, shares, strict=True))
                ]
                time.sleep(0.5)
                rate = _run_generator(
                    run_writers,
                    ("syncline", ports[0], "rate", plan.rate, plan.latency_seconds, 1, 1),
                    plan.latency_seconds + 30,
                )
                reports = [r for g in groups for r in g.finish()]
                connected = sum(g.connected for g in groups)
        finally:
            _drop_pg_schema(plan.postgres_url, schema)
        latencies = [x for r in reports for x in r["latencies"]]
        params = {
            "subscribers": n,
            "nodes": nodes,
            "rate_per_s": plan.rate,
            "latency_seconds": plan.latency_seconds,
            "store": "postgresql (synchronous_commit=on)",
            "backplane": "redis",
        }
        metrics = {**_latency_metrics(plan, latencies, rate, connected), "connected": connected}
        results.append(Result("multinode", system, params, metrics))
    return results


SCENARIOS: dict[str, Callable[[Plan, Path, Report], list[Result]]] = {
    "fanout": fanout,
    "mutations": mutations,
    "ssr": ssr,
    "resume": resume,
    "connections": connections,
    "matching": matching,
    "multinode": multinode,
}
