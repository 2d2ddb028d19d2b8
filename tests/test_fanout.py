"""The log reader and the outboxes, driven step by step with a real engine: ordering
under coalescing, joins that are cancelled or race with unsubscribes, re-checks."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from syncline import Engine, Insert, Query, Update
from syncline.fanout.reader import ChangesPart, LogReader
from syncline.protocol.frames import ServerFrame, encode_text
from syncline.replica import Replica
from syncline.server.outbox import Outbox
from syncline.store.memory import MemoryStore

from .schemas import BOARD


class Conn:
    """A connection as the reader sees it, with a real outbox."""

    def __init__(self, principal: str = "admin") -> None:
        self.principal = principal
        self.read_key: object = principal
        self.queries: dict[str, Query] = {}
        self.cursor: int | None = None
        self.awaiting_seq = 0
        self.left = False
        self.resync = False
        self.outbox = Outbox()

    def send_changes(self, part: ChangesPart) -> None:
        self.outbox.put_changes(part)

    def send_frame(self, frame: ServerFrame) -> None:
        self.outbox.put(encode_text(frame))

    async def frames(self) -> list[dict[str, Any]]:
        out = []
        while len(self.outbox):
            out.append(orjson.loads(self.outbox.pop() or "null"))
        return out


def q(obj: dict[str, Any]) -> Query:
    return Query.parse(obj, BOARD)


async def setup() -> tuple[Engine, LogReader]:
    engine = Engine(BOARD, MemoryStore())
    async with engine.transaction("admin") as tx:
        tx.apply(
            Insert(c="boards", id="b1", fields={"name": "B"}),
            Insert(c="lists", id="l1", fields={"board_id": "b1"}),
            Insert(c="cards", id="c1", fields={"list_id": "l1", "title": "first"}),
        )
    reader = LogReader(engine)
    head = await engine.head()
    reader.epoch, reader.position = head.epoch, head.seq
    return engine, reader


async def join(reader: LogReader, conn: Conn, queries: dict[str, Query] | None) -> None:
    task = asyncio.create_task(reader.join(conn, queries, None))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    await reader.step()
    await task


async def edit(engine: Engine, **fields: Any) -> None:
    async with engine.transaction("admin") as tx:
        tx.apply(Update(c="cards", id="c1", set=fields))


async def test_a_record_moving_between_queries_under_load_is_never_applied_out_of_order() -> None:
    engine, reader = await setup()
    conn = Conn()
    todo, doing = (
        q({"c": "cards", "where": {"status": "todo"}}),
        q({"c": "cards", "where": {"status": "doing"}}),
    )
    await join(reader, conn, {"todo": todo, "doing": doing})
    replica = Replica(BOARD, "tab-aaaaaaaa")
    replica.load_snapshot((await conn.frames())[0])
    # The socket is busy: both steps' parts wait in the outbox together.
    await edit(engine, status="doing", title="two")
    await reader.step()
    await edit(engine, status="todo", title="three")
    await reader.step()
    for frame in await conn.frames():
        replica.apply_changes(frame)
    held = replica.server[("cards", "c1")].data
    assert (held["status"], held["title"]) == ("todo", "three")
    assert [r["id"] for r in replica.query(todo)] == ["c1"] and replica.query(doing) == []


async def test_parts_of_one_query_coalesce_into_one_frame() -> None:
    engine, reader = await setup()
    conn = Conn()
    await join(reader, conn, {"all": q({"c": "cards"})})
    await conn.frames()
    for n in range(5):
        await edit(engine, title=f"t{n}")
        await reader.step()
    (frame,) = await conn.frames()
    assert frame["from"].endswith(".1") and frame["to"].endswith(".6")
    assert len(frame["q"]["all"]) == 5


async def test_a_join_whose_subscriber_gave_up_harms_no_other_join() -> None:
    _, reader = await setup()
    gone, other = Conn(), Conn()
    gone_task = asyncio.create_task(reader.join(gone, {"a": q({"c": "cards"})}, None))  # type: ignore[arg-type]
    other_task = asyncio.create_task(reader.join(other, {"a": q({"c": "cards"})}, None))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    gone_task.cancel()
    reader.leave(gone)  # type: ignore[arg-type]
    await reader.step()
    await other_task
    assert [f["t"] for f in await other.frames()] == ["snapshot"]
    assert gone not in reader.connections and len(gone.outbox) == 0


async def test_an_unsubscribe_during_a_step_does_not_break_it() -> None:
    engine, reader = await setup()
    conn = Conn()
    limited = q({"c": "cards", "order": [["rank", "desc"]], "limit": 1})
    await join(reader, conn, {"top": limited, "all": q({"c": "cards"})})
    await conn.frames()
    await edit(engine, rank=5.0)
    original = engine.run_query

    async def slow_query(*args: Any, **kwargs: Any) -> Any:
        conn.queries.pop("all", None)  # the client unsubscribes while the step awaits
        return await original(*args, **kwargs)

    engine.run_query = slow_query  # type: ignore[method-assign]
    await reader.step()
    engine.run_query = original  # type: ignore[method-assign]
    (frame,) = await conn.frames()
    assert frame["to"].endswith(".2") and frame["q"]["top"][0]["k"] == "reset"
    assert reader.position == 2


async def test_a_recheck_resends_what_the_connection_holds_and_nothing_it_dropped() -> None:
    engine, reader = await setup()
    conn = Conn()
    await join(reader, conn, {"cards": q({"c": "cards"}), "lists": q({"c": "lists"})})
    await conn.frames()
    conn.queries.pop("lists")  # unsub
    conn.resync = True
    await edit(engine, title="during the recheck")  # not sent live: the snapshot covers it
    await join(reader, conn, None)
    (frame,) = await conn.frames()
    assert frame["t"] == "snapshot" and set(frame["queries"]) == {"cards"}
    assert frame["records"]["cards"][0]["data"]["title"] == "during the recheck"
    assert set(conn.queries) == {"cards"} and conn.resync is False


async def test_a_connection_that_left_is_never_served_again() -> None:
    engine, reader = await setup()
    conn = Conn()
    await join(reader, conn, {"cards": q({"c": "cards"})})
    await conn.frames()
    reader.leave(conn)  # type: ignore[arg-type]
    await edit(engine, title="after")
    await reader.step()
    task = asyncio.create_task(reader.join(conn, None, None))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    await reader.step()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(conn.outbox) == 0 and conn not in reader.connections


async def test_no_frame_larger_than_the_queue_limit_leaves_even_into_an_empty_queue() -> None:
    # It used to go out when nothing waited: one frame of any size per connection.
    overflows: list[bool] = []
    outbox = Outbox(max_bytes=1000, on_overflow=lambda: overflows.append(True))
    outbox.put("x" * 1000)  # at the limit: goes
    assert not outbox.overflowed and len(outbox.pop() or "") == 1000
    outbox.put("y" * 1001)
    assert outbox.overflowed and overflows == [True] and outbox.pop() is None
    big = Outbox(max_bytes=1000)
    big.put_changes(ChangesPart("e", 0, 1, {"q": ["z" * 2000]}))
    assert big.overflowed and big.pop() is None


async def test_stopping_the_reader_just_as_a_commit_wakes_it_still_stops() -> None:
    # On Python 3.11, asyncio.wait_for swallows a cancellation that arrives in the same
    # loop turn as the awaited event: the reader then looped on, and a server's shutdown
    # hung right after a commit.
    engine, _ = await setup()
    reader = LogReader(engine, poll_interval=3600)
    await reader.start()
    await asyncio.sleep(0)
    reader.notify()
    async with asyncio.timeout(5):
        await reader.stop()
    assert reader._task is None


async def test_connections_at_one_cursor_share_one_encoded_part_and_coalesce_apart() -> None:
    engine, reader = await setup()
    query = q({"c": "cards"})
    busy, idle, other_query = Conn(), Conn(), Conn()
    for conn in (busy, idle):
        await join(reader, conn, {"all": query})
    await join(reader, other_query, {"mine": q({"c": "cards", "where": {"list_id": "l1"}})})
    for conn in (busy, idle, other_query):
        await conn.frames()
    await edit(engine, title="two")
    await reader.step()
    parts = [conn.outbox._items[0] for conn in (busy, idle, other_query)]  # type: ignore[index]
    assert parts[0] is parts[1] and parts[2] is not parts[0]  # one part, encoded once
    assert parts[0].encode() is parts[1].encode()
    (frame,) = await idle.frames()
    # The busy connection's socket waits: its next part merges into a copy, never into
    # the part the other connection was handed.
    await edit(engine, title="three")
    await reader.step()
    assert parts[0].to == 2 and orjson.loads(parts[0].encode()) == frame
    (merged,) = await busy.frames()
    assert merged["from"].endswith(".1") and merged["to"].endswith(".3")
    assert [i["data"]["title"] for i in merged["q"]["all"]] == ["two", "three"]
    (later,) = await idle.frames()
    assert later["from"].endswith(".2") and later["to"].endswith(".3")


async def test_a_subscriber_cancelled_while_its_snapshot_is_handed_over_harms_no_other_join() -> (
    None
):
    # Handing a snapshot over can overflow an outbox, and closing that connection may
    # cancel the task waiting for its join at that very moment: later joins of the same
    # step must still be answered.
    _, reader = await setup()
    first, second = Conn(), Conn()
    tasks: list[asyncio.Task[None]] = []

    def cancel_own_join(frame: dict[str, Any]) -> None:
        tasks[0].cancel()
        Conn.send_frame(first, frame)

    first.send_frame = cancel_own_join  # type: ignore[method-assign]
    for conn in (first, second):
        tasks.append(asyncio.create_task(reader.join(conn, {"a": q({"c": "cards"})}, None)))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    await reader.step()
    await asyncio.wait_for(tasks[1], 5)
    assert [f["t"] for f in await second.frames()] == ["snapshot"]
