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
    assert len(steps) == 6, steps  # 2 writer counts x 3 systems, one line each
    assert "\x1b[" not in first + rest  # no terminal control sequences
    systems = {r["system"] for r in json.loads(out.read_text())["results"]}
    assert "syncline-postgres" in systems


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
