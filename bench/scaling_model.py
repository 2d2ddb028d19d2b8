"""The cost model of docs/scaling.md, fitted to a ``syncline bench`` JSON document.

- **Commits on one log.** Every commit of a node group takes the log's lock in turn
  (SQLite's one writer; PostgreSQL's advisory lock), so a group of ``n`` mutations
  holds it ``a + b*n`` seconds. With ``W`` writers each waiting for its ack, the groups
  hold all ``W``: throughput ``W / (a + b*W)``, bounded by ``1/b``. ``a`` and ``b`` are
  fitted to the 1- and 50-writer rows; the 10-writer row checks the fit.
- **Connections.** ``rss = base + n * kb_per_conn``, from the connections rows.
- **Fan-out.** Deliveries a second from the fanout rows; a node's share of the
  subscribers times the change rate must stay below it.

    .venv/bin/python bench/scaling_model.py out.json
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson


def rows(doc: dict[str, Any], scenario: str, system: str) -> dict[Any, dict[str, float]]:
    from syncline.bench.runner import PAIR_BY

    key = PAIR_BY[scenario]
    return {
        r["params"][key]: r["metrics"]
        for r in doc["results"]
        if r["scenario"] == scenario and r["system"] == system
    }


def commit_model(doc: dict[str, Any], system: str) -> None:
    got = {w: m["mutations_per_s"] for w, m in rows(doc, "mutations", system).items()}
    if not {1, 10, 50} <= got.keys():
        print(f"{system}: no 1/10/50-writer rows")
        return
    t1 = 1 / got[1]  # a + b
    t50 = 50 / got[50]  # a + 50 b
    b = max((t50 - t1) / 49, 1e-9)
    a = max(t1 - b, 0.0)
    predicted10 = 10 / (a + 10 * b)
    print(
        f"{system}: a = {a * 1000:.3f} ms per group, b = {b * 1000:.3f} ms per mutation; "
        f"10 writers predicted {predicted10:,.0f}/s, measured {got[10]:,.0f}/s "
        f"({predicted10 / got[10]:.2f}x); ceiling 1/b = {1 / b:,.0f}/s"
    )
    for w in (500, 5_000):
        print(f"  {w:>5} writers: {w / (a + w * b):,.0f}/s")


def connection_model(doc: dict[str, Any]) -> None:
    for n, m in sorted(rows(doc, "connections", "syncline").items()):
        base = m["rss_idle_server_mb"]
        per = m["kb_per_conn"]
        fit = int((20 * 1024 - base) * 1024 / per) if per > 0 else 0
        print(
            f"connections {n:,}: {per:.1f} KB each over a {base:.0f} MB idle server; "
            f"20 GB of RSS holds about {fit:,} such connections"
        )


def fanout_model(doc: dict[str, Any]) -> None:
    for n, m in sorted(rows(doc, "fanout", "syncline").items()):
        d = m["delivered_per_s"]
        print(
            f"fanout {n:,} subscribers: {d:,.0f} deliveries/s at {m['server_cpu_pct']:.0f}% "
            f"server CPU: {d / n:,.0f} changes/s to all of them"
        )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: bench/scaling_model.py BENCH.json", file=sys.stderr)
        return 2
    doc = orjson.loads(Path(argv[0]).read_bytes())
    for system in ("syncline", "syncline-postgres", "starlette-postgres-naive"):
        commit_model(doc, system)
    connection_model(doc)
    fanout_model(doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
