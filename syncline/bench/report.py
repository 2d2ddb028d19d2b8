"""Markdown of a ``syncline bench`` JSON document: the goals of the performance work,
each with syncline's figure, its peer's in the same run, the ratio and whether it is
met, and optionally the ratio in an earlier run (before a change).

``python -m syncline.bench.report AFTER.json [BEFORE.json]`` prints it.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


@dataclass(frozen=True)
class Goal:
    """syncline's ``metric`` over ``peer``'s (same scenario and size) against ``bound``."""

    label: str
    scenario: str
    system: str
    peer: str
    key: str
    value: int
    metric: str
    bound: float
    at_most: bool  # the ratio must be at most ``bound`` (latency, memory, time)


GOALS = (
    Goal("mutations/s, 1 writer, SQLite", "mutations", "syncline", "starlette-sqlite-naive",
         "writers", 1, "mutations_per_s", 1.0, False),
    Goal("mutations/s, 50 writers, SQLite", "mutations", "syncline", "starlette-sqlite-naive",
         "writers", 50, "mutations_per_s", 3.0, False),
    Goal("mutations/s, 1 writer, PostgreSQL", "mutations", "syncline-postgres",
         "starlette-postgres-naive", "writers", 1, "mutations_per_s", 1.0, False),
    Goal("mutations/s, 50 writers, PostgreSQL", "mutations", "syncline-postgres",
         "starlette-postgres-naive", "writers", 50, "mutations_per_s", 3.0, False),
    Goal("fan-out p50, 100 subscribers, 100 changes/s", "fanout", "syncline",
         "websockets-floor", "subscribers", 100, "p50_ms", 1.3, True),
    Goal("fan-out p99, 100 subscribers, 100 changes/s", "fanout", "syncline",
         "websockets-floor", "subscribers", 100, "p99_ms", 1.5, True),
    Goal("fan-out throughput, 100 subscribers", "fanout", "syncline", "websockets-floor",
         "subscribers", 100, "delivered_per_s", 1.0, False),
    Goal("CPU per commit, 300 connections x 100 non-matching queries", "matching",
         "syncline", "one-query-each", "connections", 300, "cpu_ms_per_commit", 1.5, True),
    Goal("SSR render, TodoMVC, 1,000 records", "ssr", "syncline (todomvc)", "ssr-naive",
         "records", 1_000, "render_ms", 1.3, True),
    Goal("SSR render, TodoMVC, 10,000 records", "ssr", "syncline (todomvc)", "ssr-naive",
         "records", 10_000, "render_ms", 1.3, True),
    Goal("idle connection memory at 10,000", "connections", "syncline", "websockets-floor",
         "connections", 10_000, "kb_per_conn", 1.2, True),
    Goal("hydration, 10,000 todos, DOMContentLoaded to live", "ssr", "syncline (todomvc)",
         "hydrate-naive", "records", 10_000, "hydrate_ms", 1.2, True),
    Goal("multi-node p50, 3 nodes vs 1 (no goal set)", "multinode", "syncline-3-nodes",
         "one-node", "subscribers", 100, "p50_ms", math.inf, True),
    Goal("multi-node p99, 3 nodes vs 1 (no goal set)", "multinode", "syncline-3-nodes",
         "one-node", "subscribers", 100, "p99_ms", math.inf, True),
)  # fmt: skip


def figure(document: dict[str, Any], scenario: str, system: str, key: str, value: int,
           metric: str) -> float | None:  # fmt: skip
    for row in document.get("results", []):
        if (row["scenario"], row["system"], row["params"].get(key)) == (scenario, system, value):
            got = row["metrics"].get(metric)
            if got is not None and not math.isnan(got):
                return float(got)
    return None


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def goals_table(after: dict[str, Any], before: dict[str, Any] | None = None) -> str:
    head = "| measure | syncline | peer | ratio | goal | met |"
    rule = "| --- | ---: | --- | ---: | --- | --- |"
    if before is not None:
        head = head.replace("| ratio |", "| ratio before | ratio |")
        rule = rule.replace("| ---: | --- | --- |", "| ---: | ---: | --- | --- |", 1)
    lines = [head, rule]
    for g in GOALS:
        ours = figure(after, g.scenario, g.system, g.key, g.value, g.metric)
        theirs = figure(after, g.scenario, g.peer, g.key, g.value, g.metric)
        ratio = ours / theirs if ours is not None and theirs else None
        goal = "-" if math.isinf(g.bound) else f"{'<=' if g.at_most else '>='} {g.bound:g}x"
        met = (
            "-"
            if ratio is None or math.isinf(g.bound)
            else ("met" if (ratio <= g.bound if g.at_most else ratio >= g.bound) else "**missed**")
        )
        cells = [g.label, _fmt(ours), f"{g.peer} {_fmt(theirs)}"]
        if before is not None:
            b_ours = figure(before, g.scenario, g.system, g.key, g.value, g.metric)
            b_theirs = figure(before, g.scenario, g.peer, g.key, g.value, g.metric)
            cells.append(f"{b_ours / b_theirs:.2f}x" if b_ours is not None and b_theirs else "-")
        cells += [f"{ratio:.2f}x" if ratio is not None else "-", goal, met]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def results_tables(document: dict[str, Any]) -> str:
    """Every row of the run: its headline figures, and syncline's ratio on a peer's row."""
    from .runner import HEADLINES, PAIR_BY

    out = []
    for scenario in dict.fromkeys(r["scenario"] for r in document.get("results", [])):
        key = PAIR_BY.get(scenario, "")
        metrics = [m for m, _ in HEADLINES.get(scenario, [])]
        rows = [r for r in document["results"] if r["scenario"] == scenario]
        metrics = [m for m in metrics if any(m in r["metrics"] for r in rows)]
        out.append(f"#### {scenario}\n")
        out.append(f"| {key} | system | " + " | ".join(metrics) + " | syncline/this |")
        out.append("| ---: | --- |" + " ---: |" * len(metrics) + " --- |")
        for r in rows:
            ratios = [
                f"{p['metric']} {p['ratio']:.2f}x"
                for p in document.get("ratios", [])
                if p["scenario"] == scenario
                and p["peer"] == r["system"]
                and p.get(key) == r["params"].get(key)
            ]
            cells = [str(r["params"].get(key)), r["system"]]
            cells += [_fmt(r["metrics"].get(m)) for m in metrics]
            cells.append(", ".join(ratios))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print("usage: python -m syncline.bench.report AFTER.json [BEFORE.json]", file=sys.stderr)
        return 2
    after = orjson.loads(Path(argv[0]).read_bytes())
    before = orjson.loads(Path(argv[1]).read_bytes()) if len(argv) == 2 else None
    print(goals_table(after, before))
    print(results_tables(after))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
