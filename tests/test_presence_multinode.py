"""Presence across nodes (uvicorn processes over one PostgreSQL schema, joined by
Redis or by PostgreSQL LISTEN/NOTIFY): members on one node see those on another; a
node killed with SIGKILL loses its entries on the others within the documented bound
(``presence_ttl`` + 1 s: 16 s by default); a node that starts knows each room at once.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from syncline.client import Client

from .conftest import PG_DSN, drop_pg_schema, new_pg_schema
from .schemas import BOARD
from .servers import ServerProcess
from .test_backplane import REDIS_URL
from .test_multinode import check_services, run_async, start_all

T = 15.0  # a guard against hangs
BOUND = 15.0 + 1.0  # docs/protocol.md, Presence: presence_ttl + 1 s


@pytest.fixture(params=["redis", "postgres"])
def nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """Two nodes on a fresh PostgreSQL schema (its name: ``nodes[0].env``)."""
    backplane = request.param
    check_services(backplane)
    schema, channel = new_pg_schema(), f"syncline_presence_{secrets.token_hex(6)}"
    env = {
        "SYNCLINE_TEST_PG_DSN": PG_DSN,
        "SYNCLINE_TEST_PG_SCHEMA": schema,
        "SYNCLINE_TEST_BACKPLANE": REDIS_URL if backplane == "redis" else "postgres",
        "SYNCLINE_TEST_CHANNEL": channel,
    }
    procs = [
        ServerProcess(tmp_path / f"node{i}", app="tests.multinode_app:app", env=env)
        for i in range(2)
    ]
    try:
        start_all(procs)
        yield procs
    finally:
        for p in procs:
            p.kill()
        run_async(lambda: drop_pg_schema(schema))


async def test_presence_of_a_sigkilled_node_leaves_within_the_bound(
    nodes: list[ServerProcess],
) -> None:
    async with (
        Client(nodes[0].ws_url, BOARD) as ann,
        Client(nodes[1].ws_url, BOARD) as bob,
    ):
        await ann.wait_live(T)
        await bob.wait_live(T)
        before = await dump(nodes[0].env["SYNCLINE_TEST_PG_SCHEMA"])
        a = await ann.join("board:demo", {"who": "ann"})
        b = await bob.join("board:demo", {"who": "bob"})
        states = lambda r: sorted(m.state.get("who", "") for m in r.members.values())  # noqa: E731
        await b.wait_for(lambda r: states(r) == ["ann", "bob"], T)  # across nodes
        await a.wait_for(lambda r: states(r) == ["ann", "bob"], T)
        a.update({"who": "ann", "editing": "c1"})
        await b.wait_for(
            lambda r: any(m.state.get("editing") == "c1" for m in r.members.values()), T
        )
        # Nothing of it reached the database: every table, row for row, as before.
        assert await dump(nodes[0].env["SYNCLINE_TEST_PG_SCHEMA"]) == before
        loop = asyncio.get_running_loop()
        nodes[0].kill()  # SIGKILL: no leave is ever sent
        killed = loop.time()
        await b.wait_for(lambda r: states(r) == ["bob"], BOUND + 10)
        assert loop.time() - killed <= BOUND + 1.0  # a second for the test's own delays
        await ann.close()
        # A node that starts (again) knows the room without waiting for a change: it
        # asks the others to announce their entries.
        await asyncio.to_thread(nodes[0].start)
        async with Client(nodes[0].ws_url, BOARD) as cat:
            await cat.wait_live(T)
            c = await cat.join("board:demo", {"who": "cat"})
            await c.wait_for(lambda r: states(r) == ["bob", "cat"], 5.0)
            await b.wait_for(lambda r: states(r) == ["bob", "cat"], T)


async def dump(schema: str) -> dict[str, list[str]]:
    """Every table of ``schema``, each row as text, in a stable order."""
    conn = await asyncpg.connect(PG_DSN)
    try:
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
        )
        out = {}
        for t in sorted(r["table_name"] for r in tables):
            rows = await conn.fetch(f'SELECT t::text AS row FROM "{schema}"."{t}" t')
            out[t] = sorted(r["row"] for r in rows)
        assert out, f"no tables in {schema}"
        return out
    finally:
        await conn.close()


async def test_presence_of_a_node_stopped_gracefully_leaves_at_once(
    nodes: list[ServerProcess],
) -> None:
    async with (
        Client(nodes[0].ws_url, BOARD) as ann,
        Client(nodes[1].ws_url, BOARD) as bob,
    ):
        await ann.wait_live(T)
        await bob.wait_live(T)
        await ann.join("board:demo", {"who": "ann"})
        b = await bob.join("board:demo", {"who": "bob"})
        await b.wait_for(lambda r: len(r.members) == 2, T)
        await ann.close()  # so that it does not come back when the node is gone
        await b.wait_for(lambda r: len(r.members) == 1, T)
        again = Client(nodes[0].ws_url, BOARD, backoff=(30.0, 30.0))
        async with again:
            await again.wait_live(T)
            await again.join("board:demo", {"who": "ann"})
            await b.wait_for(lambda r: len(r.members) == 2, T)
            await asyncio.to_thread(nodes[0].stop)  # SIGTERM: the node says goodbye
            await b.wait_for(lambda r: len(r.members) == 1, 5.0)  # well before the TTL
