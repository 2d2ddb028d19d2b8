"""``syncline bench``: run the scenarios, show progress, print the table, write JSON."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..logs import redact_url
from .common import Result, machine
from .common import fsync_ms as fsync_probe
from .scenarios import FULL, QUICK, SCENARIOS, Plan

# The figures each scenario is judged by: (metric, higher is better).
HEADLINES: dict[str, list[tuple[str, bool]]] = {
    "fanout": [("delivered_per_s", True), ("p50_ms", False), ("p99_ms", False), ("rss_mb", False)],
    "mutations": [("mutations_per_s", True)],
    "ssr": [
        ("render_ms", False),
        ("read_ms", False),
        ("embed_ms", False),
        ("bytes", False),
        ("hydrate_ms", False),
        ("response_to_live_ms", False),
    ],
    "resume": [
        ("bytes", False),
        ("relevant_bytes", False),
        ("bytes_ratio", False),
        ("time_to_live_ms", False),
    ],
    "connections": [("held", True), ("rss_mb", False), ("kb_per_conn", False)],
    "matching": [("cpu_ms_per_commit", False)],
    "multinode": [("p50_ms", False), ("p99_ms", False)],
}
# The parameter that pairs a syncline row with its peers' rows.
PAIR_BY = {
    "fanout": "subscribers",
    "mutations": "writers",
    "ssr": "records",
    "resume": "changes",
    "connections": "connections",
    "matching": "connections",
    "multinode": "subscribers",
}
# Peers measured against only some of syncline's rows (default: every syncline row of
# the scenario and size): a naive SQLite endpoint is syncline-on-SQLite's peer, not
# syncline-on-PostgreSQL's.
COMPARED_WITH: dict[str, tuple[str, ...]] = {
    "starlette-sqlite-naive": ("syncline",),
    "starlette-postgres-naive": ("syncline-postgres",),
    "ssr-naive": ("syncline (todomvc)",),
    "hydrate-naive": ("syncline (todomvc)",),
    "one-node": ("syncline-3-nodes",),
}

TINY = Plan(
    (10,),
    0.5,
    0.5,
    (1, 2),
    0.5,
    (100,),
    2,
    subscriber_processes=1,
    flood_connections=2,
    resume_changes=300,
    hydrate_timeout=30.0,
    connections=(50,),
    idle_seconds=0.5,
    matching_connections=5,
)
"""Tiny sizes for the smoke test (hidden option ``--tiny``); its figures mean nothing."""


def ratios(results: list[Result]) -> list[dict[str, Any]]:
    """syncline's figure over each peer's, for every headline metric (same scenario and
    size, same run). Above 1 means syncline is ahead for higher-is-better metrics, behind
    for lower-is-better ones (latency, memory)."""
    out = []
    for peer in results:
        if peer.system.startswith("syncline"):
            continue
        key = PAIR_BY.get(peer.scenario, "")
        for ours in results:
            if (
                ours.scenario != peer.scenario
                or not ours.system.startswith("syncline")
                or ours.params.get(key) != peer.params.get(key)
                or ours.system not in COMPARED_WITH.get(peer.system, (ours.system,))
            ):
                continue
            for metric, higher in HEADLINES.get(peer.scenario, []):
                a, b = ours.metrics.get(metric), peer.metrics.get(metric)
                if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
                    continue
                out.append(
                    {
                        "scenario": peer.scenario,
                        key: peer.params.get(key),
                        "system": ours.system,
                        "peer": peer.system,
                        "metric": metric,
                        "higher_is_better": higher,
                        "ratio": a / b,
                    }
                )
    return out


def _fmt(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def tables(results: list[Result], pairs: list[dict[str, Any]], cores: int | None) -> list[Table]:
    """One table per scenario: each system's headline figures and, on a peer's row,
    syncline's figure over the peer's."""
    out = []
    for scenario in dict.fromkeys(r.scenario for r in results):
        rows = [r for r in results if r.scenario == scenario]
        key = PAIR_BY.get(scenario, "")
        metrics = [m for m, _ in HEADLINES.get(scenario, [])]
        compared = [
            m for m in metrics if any(p["metric"] == m and p["scenario"] == scenario for p in pairs)
        ]
        t = Table(title=f"{scenario} (loopback; load generators shared the server's {cores} cores)")
        t.add_column(key)
        t.add_column("system")
        for m in metrics:
            t.add_column(m, justify="right")
        for m in compared:
            t.add_column(f"syncline/this {m}", justify="right")
        for r in rows:
            ratio = {
                p["metric"]: p["ratio"]
                for p in pairs
                if p["peer"] == r.system
                and p["scenario"] == scenario
                and p.get(key) == r.params.get(key)
            }
            t.add_row(
                str(r.params.get(key)),
                r.system,
                *(_fmt(r.metrics.get(m)) for m in metrics),
                *(f"{ratio[m]:.2f}x" if m in ratio else "" for m in compared),
            )
        out.append(t)
    return out


@contextlib.contextmanager
def _progress(console: Console, began: float) -> Iterator[Callable[[str], None]]:
    """A reporter of steps: a spinner line in a terminal; elsewhere (a pipe, a file, CI)
    one plain line per step, with the seconds since the start, as it happens."""
    if console.is_terminal:
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
        ) as progress:
            task = progress.add_task("starting", total=None)
            yield lambda message: progress.update(task, description=message)
        return

    def line(message: str) -> None:
        elapsed = time.monotonic() - began
        console.print(f"{elapsed:7.1f} s  {message}", markup=False, highlight=False)
        console.file.flush()

    yield line


def run(
    scenarios: list[str],
    *,
    quick: bool = False,
    json_path: Path | None = None,
    tiny: bool = False,
    console: Console | None = None,
    postgres_url: str | None = None,
    charts_dir: Path | None = None,
) -> dict[str, Any]:
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        raise ValueError(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
        )
    chosen = scenarios or list(SCENARIOS)
    plan = TINY if tiny else QUICK if quick else FULL
    plan = dataclasses.replace(plan, postgres_url=postgres_url)
    info = machine()
    results: list[Result] = []
    errors: list[dict[str, str]] = []
    workdir = Path(tempfile.mkdtemp(prefix="syncline-bench-"))
    began = time.monotonic()
    fsync_ms = fsync_probe(workdir)
    try:
        with _progress(console, began) as report:
            for name in chosen:
                try:
                    results.extend(SCENARIOS[name](plan, workdir, report))
                except Exception as exc:  # report it, and go on with the next scenario
                    errors.append({"scenario": name, "error": f"{type(exc).__name__}: {exc}"})
                    console.print(f"[red]{name} failed:[/red] {type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    pairs = ratios(results)
    info["plan"] = "tiny" if tiny else "quick" if quick else "full"
    info["plan_settings"] = dataclasses.asdict(plan)
    info["fsync_ms"] = round(fsync_ms, 3)
    info["plan_settings"]["postgres_url"] = redact_url(postgres_url) if postgres_url else None
    info["elapsed_s"] = round(time.monotonic() - began, 1)
    document = {
        "machine": info,
        "results": [r.to_json() for r in results],
        "ratios": pairs,
        "errors": errors,
    }
    for t in tables(results, pairs, info["cores"]):
        console.print(t)
    console.print(
        "Ratios are syncline's figure over the peer's, measured in this run: above 1 is "
        "ahead for throughput, behind for latency, memory and render time."
    )
    if json_path is not None:
        json_path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
        console.print(f"wrote {json_path}")
    if charts_dir is not None:
        from .charts import write_charts

        for path in write_charts(document, charts_dir):
            console.print(f"wrote {path}")
    return document
