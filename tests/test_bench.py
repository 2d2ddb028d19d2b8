"""A smoke run of ``syncline bench``: it completes and writes JSON of the documented
shape. It never asserts speed (benchmarks are not timed tests)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from syncline.cli import app

from .conftest import PG_DSN
from .test_serve import free_port


def test_bench_quick_tiny_mutations_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        app, ["bench", "--quick", "--tiny", "--json", str(out), "mutations"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert set(document) >= {"machine", "results"}
    assert isinstance(document["machine"], dict)
    assert document["machine"]["cores"]
    systems = {r["system"] for r in document["results"]}
    assert {"syncline", "starlette-sqlite-naive"} <= systems
    for row in document["results"]:
        assert row["scenario"] == "mutations"
        assert isinstance(row["params"], dict)
        assert row["metrics"]
        for name, value in row["metrics"].items():
            assert name == name.lower() and " " not in name
            assert isinstance(value, int | float) and not math.isnan(value)


def test_bench_refuses_unknown_scenario() -> None:
    result = CliRunner().invoke(app, ["bench", "--tiny", "nonesuch"])
    assert result.exit_code != 0


def test_bench_progress_is_one_line_per_step_in_a_pipe_and_postgres_comes_from_env(
    tmp_path: Path,
) -> None:
    """In a pipe (CI, ``| tee``) each step is a plain line as it happens, not a live
    display; the PostgreSQL rows use $SYNCLINE_BENCH_POSTGRES (its own schema there)."""
    out = tmp_path / "bench.json"
    env = {**os.environ, "SYNCLINE_BENCH_POSTGRES": PG_DSN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncline", "bench", "--tiny", "--json", str(out), "mutations"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    assert proc.stdout is not None
    with proc:
        first = proc.stdout.readline()
        still_running = proc.poll() is None
        rest = proc.stdout.read()
    assert proc.returncode == 0, first + rest
    assert still_running, "the first step's line came only at the end"
    assert first.strip().endswith("mutations: syncline on sqlite, 1 writers"), first
    steps = [line for line in (first + rest).splitlines() if " s  mutations: " in line]
    assert "mutations: syncline on postgresql, 1 writers" in "\n".join(steps)
    assert "mutations: starlette-postgres-naive on postgresql, 1 writers" in "\n".join(steps)
    assert len(steps) == 8, steps  # 2 writer counts x 4 systems, one line each
    assert "\x1b[" not in first + rest  # no terminal control sequences
    document = json.loads(out.read_text())
    systems = {r["system"] for r in document["results"]}
    assert {"syncline-postgres", "starlette-postgres-naive"} <= systems
    # Each naive peer is compared with its own store's syncline row only.
    pairs = {(p["system"], p["peer"]) for p in document["ratios"]}
    assert ("syncline-postgres", "starlette-postgres-naive") in pairs
    assert ("syncline", "starlette-sqlite-naive") in pairs
    assert ("syncline-postgres", "starlette-sqlite-naive") not in pairs
    assert ("syncline", "starlette-postgres-naive") not in pairs


def test_bench_without_a_postgres_url_has_no_postgres_rows(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        app,
        ["bench", "--tiny", "--json", str(out), "mutations"],
        env={"SYNCLINE_BENCH_POSTGRES": None},
    )
    assert result.exit_code == 0, result.output
    assert "no PostgreSQL rows (give --postgres-url or $SYNCLINE_BENCH_POSTGRES)" in result.output
    systems = {r["system"] for r in json.loads(out.read_text())["results"]}
    assert "syncline-postgres" not in systems


def test_an_unreachable_bench_postgres_url_is_refused_before_the_run() -> None:
    closed = free_port()
    url = f"postgresql://postgres:s3cret@127.0.0.1:{closed}/test"
    out = subprocess.run(
        [sys.executable, "-m", "syncline", "bench", "--tiny", "mutations", "--postgres-url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and not out.stdout, out.stdout + out.stderr
    assert (
        f"cannot connect to --postgres-url postgresql://postgres:***@127.0.0.1:{closed}/test"
        in lines[0]
    )
    assert "s3cret" not in out.stderr


def test_bench_tiny_matching_and_ssr_naive_rows_have_their_peers(tmp_path: Path) -> None:
    """The matching scenario and the naive SSR peer run and are paired with syncline."""
    out = tmp_path / "bench.json"
    charts = tmp_path / "charts"
    result = CliRunner().invoke(
        app,
        ["bench", "--tiny", "--json", str(out), "--charts", str(charts), "matching", "ssr"],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert not document["errors"], document["errors"]
    systems = {(r["scenario"], r["system"]) for r in document["results"]}
    assert {("matching", "syncline"), ("matching", "one-query-each")} <= systems
    assert ("ssr", "ssr-naive") in systems
    peers = {(p["scenario"], p["peer"], p["metric"]) for p in document["ratios"]}
    assert ("matching", "one-query-each", "cpu_ms_per_commit") in peers
    assert ("ssr", "ssr-naive", "render_ms") in peers
    naive = next(r for r in document["results"] if r["system"] == "ssr-naive")
    ours = next(r for r in document["results"] if r["system"] == "syncline (todomvc)")
    assert naive["metrics"]["bytes"] > 0 and ours["metrics"]["bytes"] > 0
    assert (charts / "ssr-render.svg").exists()


def test_charts_draw_one_line_per_system_with_its_figures(tmp_path: Path) -> None:
    from xml.etree import ElementTree

    from syncline.bench.charts import main, write_charts

    def row(system: str, writers: int, value: float) -> dict[str, object]:
        return {
            "scenario": "mutations",
            "system": system,
            "params": {"writers": writers},
            "metrics": {"mutations_per_s": value},
        }

    document = {
        "results": [
            row("syncline", 1, 640.0),
            row("syncline", 50, 2_782.0),
            row("starlette-sqlite-naive", 1, 1_548.0),
            row("starlette-sqlite-naive", 50, float("nan")),
        ]
    }
    written = write_charts(document, tmp_path)
    assert [p.name for p in written] == ["mutations.svg"]  # no other scenario had data
    svg = ElementTree.parse(written[0]).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    lines = svg.findall(f"{ns}polyline")
    assert len(lines) == 1  # syncline's two points; the peer has one (nan is left out)
    texts = [t.text for t in svg.iter(f"{ns}text")]
    assert {"syncline", "starlette-sqlite-naive", "640", "2,782", "1,548"} <= set(texts)
    source = tmp_path / "bench.json"
    source.write_text(json.dumps(document).replace("NaN", "null"))
    assert main([str(source), str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "mutations.svg").exists()


def test_the_goals_table_judges_each_ratio_against_its_goal() -> None:
    from syncline.bench.report import goals_table

    def row(system: str, writers: int, value: float) -> dict[str, object]:
        return {
            "scenario": "mutations",
            "system": system,
            "params": {"writers": writers},
            "metrics": {"mutations_per_s": value},
        }

    after = {
        "results": [
            row("syncline", 1, 1_200.0),
            row("starlette-sqlite-naive", 1, 1_000.0),
            row("syncline", 50, 2_000.0),
            row("starlette-sqlite-naive", 50, 1_000.0),
        ]
    }
    before = {"results": [row("syncline", 1, 500.0), row("starlette-sqlite-naive", 1, 1_000.0)]}
    lines = goals_table(after, before).splitlines()
    one = next(line for line in lines if line.startswith("| mutations/s, 1 writer, SQLite |"))
    fifty = next(line for line in lines if line.startswith("| mutations/s, 50 writers, SQLite |"))
    assert "| 0.50x | 1.20x | >= 1x | met |" in one
    assert "| - | 2.00x | >= 3x | **missed** |" in fifty
    pg = next(line for line in lines if "1 writer, PostgreSQL" in line)
    assert pg.endswith("| - | - | >= 1x | - |")  # not measured: not judged


def test_bench_tiny_multinode_delivers_across_nodes(tmp_path: Path) -> None:
    """3 nodes on one PostgreSQL schema and Redis: the subscribers on nodes 2 and 3 get
    the changes committed on node 1; the one-node row is its peer."""
    out = tmp_path / "bench.json"
    redis = os.environ.get("SYNCLINE_TEST_REDIS", "redis://127.0.0.1:6379/0")
    result = CliRunner().invoke(
        app,
        ["bench", "--tiny", "--json", str(out), "--postgres-url", PG_DSN, "multinode"],
        env={"SYNCLINE_BENCH_REDIS": redis},
    )
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert not document["errors"], document["errors"]
    rows = {r["system"]: r for r in document["results"]}
    assert set(rows) == {"syncline-3-nodes", "one-node"}
    for row in rows.values():
        assert row["metrics"]["connected"] == 10
        assert row["metrics"]["latency_delivered_ratio"] > 0.5  # most arrived
    peers = {(p["system"], p["peer"], p["metric"]) for p in document["ratios"]}
    assert ("syncline-3-nodes", "one-node", "p99_ms") in peers
