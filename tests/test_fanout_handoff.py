"""The log reader takes a range made only of this node's commits from the commits
themselves (``Engine.on_local_commit``), reading nothing, and hands over exactly what
reading the log would have; any other range is read from the log."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncline import Engine, Insert, Query, Update
from syncline.fanout.reader import LogReader
from syncline.store.memory import MemoryStore, _Read

from .test_fanout import Conn
from .test_fanout_index import CARDS, LISTS, RULED, card_queries, full_scan, join


async def setup() -> tuple[Engine, LogReader]:
    engine = Engine(RULED, MemoryStore())
    async with engine.transaction("admin") as tx:
        tx.apply(
            Insert(c="boards", id="b1", fields={"name": "B"}),
            *(Insert(c="lists", id=lid, fields={"board_id": "b1"}) for lid in LISTS),
            Insert(c="cards", id="c0", fields={"list_id": "l1", "rank": 1.0}),
        )
    reader = LogReader(engine, advance_every=3600)
    engine.on_commit(reader.notify)  # as LogReader.start does
    head = await engine.head()
    reader.epoch, reader.position = head.epoch, head.seq
    return engine, reader


def seq(cursor: str) -> int:
    return int(cursor.rsplit(".", 1)[1])


def counting_log_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = _Read.log

    async def log(self: _Read, after: int, upto: int) -> Any:
        calls.append(upto)
        return await real(self, after, upto)

    monkeypatch.setattr(_Read, "log", log)
    return calls


async def test_a_commit_of_this_node_is_delivered_without_reading_the_log(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, reader = await setup()
    conn = Conn("admin")
    await join(reader, conn, {"q": Query.parse({"c": "cards", "where": {"list_id": "l1"}}, RULED)})
    await conn.frames()
    reads = counting_log_reads(monkeypatch)
    incr = {"op": "incr", "c": "cards", "id": "c0", "field": "votes", "by": 2}
    ack = await engine.apply("admin", "w1", {"id": 1, "ops": [incr]})
    await reader.step()
    frames = await conn.frames()
    assert reads == [] and reader.handed_steps == 1
    assert [(seq(f["from"]), seq(f["to"])) for f in frames] == [(ack.seq - 1, ack.seq)]
    assert [(i["k"], i["id"]) for i in frames[0]["q"]["q"]] == [("patch", "c0")]
    # A server transaction (not handed over) in the range: the step reads the log.
    async with engine.transaction("admin") as tx:
        tx.apply(Insert(c="cards", id="c9", fields={"list_id": "l1"}))
    ack2 = await engine.apply("admin", "w1", {"id": 2, "ops": [incr]})
    await reader.step()
    frames = await conn.frames()
    assert reads == [ack2.seq] and reader.handed_steps == 1
    assert [(seq(f["from"]), seq(f["to"])) for f in frames] == [(ack.seq, ack2.seq)]
    assert [i["id"] for i in frames[0]["q"]["q"]] == ["c9", "c0"]


card_fields = st.fixed_dictionaries(
    {},
    optional={
        "list_id": st.sampled_from(LISTS),
        "status": st.sampled_from(("todo", "doing", "done")),
        "rank": st.sampled_from((0.0, 1.0, 2.5)),
    },
)
change = st.tuples(
    st.sampled_from(("set", "delete", "server")), st.sampled_from(CARDS), card_fields
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.sampled_from(("admin", "u1")), st.lists(card_queries, max_size=3))),
    st.lists(st.lists(change, min_size=1, max_size=4), min_size=1, max_size=4),
)
async def test_steps_from_handed_commits_hand_over_what_reading_the_log_would(
    subs: list[tuple[str, list[dict[str, Any]]]], rounds: list[list[tuple[str, str, Any]]]
) -> None:
    engine, reader = await setup()
    conns = []
    for principal, queries in subs:
        conn = Conn(principal)
        await join(reader, conn, {f"q{n}": Query.parse(q, RULED) for n, q in enumerate(queries)})
        await conn.frames()
        conns.append(conn)
    live = {"c0"}
    boards: list[str] = []
    mid = 0
    for changes in rounds:
        for kind, rid, fields in changes:
            if kind == "server":  # a commit the reader must read from the log
                async with engine.transaction("admin") as tx:
                    if rid in live and fields:
                        tx.apply(Update(c="cards", id=rid, set=fields))
                    else:
                        tx.apply(Insert(c="boards", id=f"s{len(boards)}", fields={"name": "x"}))
                        boards.append(rid)
                continue
            if kind == "delete":
                if rid not in live:
                    continue
                op: dict[str, Any] = {"op": "delete", "c": "cards", "id": rid}
                live.discard(rid)
            elif rid in live:  # a patch (updates of a client need a base; incr does not)
                op = {"op": "incr", "c": "cards", "id": rid, "field": "votes", "by": 1}
            else:
                op = {"op": "insert", "c": "cards", "id": rid, "fields": {"list_id": "l1"}}
                op["fields"].update(fields)
                live.add(rid)
            mid += 1
            ack = await engine.apply("admin", "writer", {"id": mid, "ops": [op]})
            assert ack.status == "applied", ack
        owed = await full_scan(engine, reader, conns)
        await reader.step()
        for conn, expected in zip(conns, owed, strict=True):
            frames = await conn.frames()
            got = [list(f["q"].items()) for f in frames]
            assert got == ([list(expected.items())] if expected else [])
        assert reader.position == (await engine.head()).seq
