"""A smoke run of ``syncline bench``: it completes and writes JSON of the documented
shape. It never asserts speed (benchmarks are not timed tests)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from typer.testing import CliRunner

from syncline.cli import app


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
