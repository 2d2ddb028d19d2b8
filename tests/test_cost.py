"""Request-cost tests (issue 13, "cheap amplification"): each small request of an
attacker, sent to a real server in a subprocess, costs it bounded RSS and CPU, and is
answered with an error that names the limit. The bounds are generous (several times
what the server costs now) and far below what the same requests cost before the limits
existed: ``bench/request_cost.py`` runs the same cases and prints the figures.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench.request_cost import ROOT, run_case

SYNCLINE_ROOT = Path(os.environ.get("COST_SYNCLINE_ROOT", ROOT))
"""The checkout whose server is measured: set it to one from before the limits to see
these tests fail there."""


async def case(name: str, tmp_path: Path) -> dict[str, Any]:
    return await run_case(name, tmp_path, SYNCLINE_ROOT)


async def test_one_sub_naming_one_big_query_under_100_ids_is_refused_unbuilt(
    tmp_path: Path,
) -> None:
    # Before: a 171 MB snapshot, 505 MB more peak RSS.
    got = await case("sub_100_ids", tmp_path)
    assert got["peak_growth_mb"] < 60, got
    assert got["cpu_s"] < 1.0, got
    assert got["answer_bytes"] < 10_000
    assert got["answer"] == "error limit" and "max_snapshot_bytes" in got["message"]


async def test_three_pulls_with_100_ids_are_refused_unbuilt(tmp_path: Path) -> None:
    # Before: 515 MB answered, 875 MB more peak RSS.
    got = await case("pull_100_ids_x3", tmp_path)
    assert got["peak_growth_mb"] < 80, got
    assert got["cpu_s"] < 1.0, got
    assert got["answer_bytes"] < 10_000
    assert got["answer"] == [413]


async def test_limit_one_queries_over_unreadable_rows_scan_at_most_the_cap(
    tmp_path: Path,
) -> None:
    # Callable rule: every row of 30,000 read and judged in Python, per query.
    got = await case("limit1_x100_callable_rule", tmp_path)
    assert got["cpu_s"] < 3.0, got
    assert got["answer"] == "error limit" and "max_scan_rows" in got["message"]


async def test_limit_one_queries_under_a_read_filter_are_limited_in_the_store(
    tmp_path: Path,
) -> None:
    got = await case("limit1_x100_read_filter", tmp_path)
    assert got["cpu_s"] < 1.5, got
    assert got["answer"] == "snapshot" and got["records"] == 0


async def test_no_frame_larger_than_the_send_queue_leaves(tmp_path: Path) -> None:
    # Before: the 100 KB snapshot went out through a 64 KiB queue that was empty.
    got = await case("oversize_frame_queue_64k", tmp_path)
    assert got["answer_bytes"] <= 64 << 10, got
    assert got["answer"] == "error limit"


async def test_one_principal_holds_at_most_64_connections(tmp_path: Path) -> None:
    got = await case("connections_x70_one_user", tmp_path)
    assert got["welcomed"] == 64 and got["still_open"] == 64, got
    assert got["refused"] == {"too_many_connections / close 4009": 6}, got
