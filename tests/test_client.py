"""The client without sockets: the sans-I/O protocol fed frames by hand, and the asyncio
Client's local side (optimistic edits, events, persistence) with no connection."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from syncline import InvalidMutation, Query, QueryError, Replica, SchemaError, StoreError
from syncline.client import Client, ClientEvent, ClientFailed, ClientProtocol
from syncline.protocol.client import State, decode_frame
from syncline.protocol.frames import ProtocolError
from syncline.ssr import embed_json

from .schemas import BOARD

Q = {"c": "cards", "where": {"list_id": "l1"}}
CARD = {"list_id": "l1", "title": "Shop", "description": "", "votes": 0, "labels": []}
CARD |= {"status": "todo", "slug": "", "rank": 0.0, "done": None}


def record(rid: str, v: int = 3, **data: Any) -> dict[str, Any]:
    d = {**CARD, **data}
    return {"id": rid, "inc": 1, "v": v, "fv": dict.fromkeys(d, v), "data": d}


def page_state(cursor: str = "e1.5", **records: dict[str, Any]) -> dict[str, Any]:
    recs = list(records.values()) or [record("c1")]
    return {
        "v": 1,
        "schema": BOARD.hash,
        "cursor": cursor,
        "queries": {"q": Q},
        "records": {"q": recs},
    }


def welcome(head: str = "e1.5", last: int = 0, epoch: str = "e1") -> dict[str, Any]:
    return {
        "t": "welcome",
        "v": 1,
        "client": "client-0001",
        "epoch": epoch,
        "head": head,
        "last": last,
    }


def reject(mid: int, code: str, **fields: Any) -> dict[str, Any]:
    """A temporary refusal, as the server sends it."""
    return {"t": "reject", "mid": mid, "permanent": False, "code": code, "message": code, **fields}


def live(hydrated: bool = True, **kwargs: Any) -> tuple[ClientProtocol, list[dict[str, Any]]]:
    """A protocol connected, welcomed and resumed; returns it and what it sent."""
    p = ClientProtocol(Replica(BOARD, "client-0001"), **kwargs)
    if hydrated:
        p.hydrate(page_state())
    p.connection_made()
    p.receive(welcome(), 0.0)
    sent = p.data_to_send(0.0)
    if hydrated:
        p.receive({"t": "changes", "from": "e1.5", "to": "e1.5", "q": {}}, 0.0)
    return p, sent


def kinds(events: list[ClientEvent]) -> list[str]:
    return [e.kind for e in events if e.kind not in ("changed", "ack")]


# --- the protocol ------------------------------------------------------------------------


def test_hello_carries_credentials_and_the_answers_held() -> None:
    p = ClientProtocol(Replica(BOARD, "client-0001"), credentials={"token": "t"})
    p.connection_made()
    assert p.data_to_send(0.0) == [
        {
            "t": "hello",
            "v": 1,
            "client": "client-0001",
            "schema": BOARD.hash,
            "auth": {"token": "t"},
            "acked": 0,
        }
    ]
    assert p.state is State.HELLO_SENT
    assert p.data_to_send(0.0) == []  # nothing else before welcome, even with edits
    with pytest.raises(RuntimeError, match="before connecting"):
        p.hydrate(page_state())


def test_a_subscription_without_data_asks_for_a_snapshot_and_is_answered_by_it() -> None:
    p = ClientProtocol(Replica(BOARD, "client-0001"))
    p.subscribe({"q": Q, "typed": Query.parse({"c": "lists"}, BOARD)})
    assert not p.answered(["q"])
    p.connection_made()
    p.receive(welcome(), 0.0)
    _, sub = p.data_to_send(0.0)
    assert sub == {"t": "sub", "queries": {"q": Q, "typed": {"c": "lists", "where": {}}}}
    assert not p.synced
    p.receive(
        {
            "t": "snapshot",
            "cursor": "e1.5",
            "queries": sub["queries"],
            "records": {"q": [record("c1")]},
        },
        0.0,
    )
    assert p.answered(["q", "typed"]) and p.synced
    assert p.replica.get("cards", "c1") == {**CARD, "id": "c1"}


def test_a_bad_query_is_refused_locally() -> None:
    p = ClientProtocol(Replica(BOARD, "client-0001"))
    with pytest.raises(QueryError, match="not queryable"):
        p.subscribe({"q": {"c": "cards", "where": {"title": "x"}}})


def test_a_query_the_server_refuses_is_answered_and_dropped() -> None:
    p, _ = live()
    p.subscribe({"big": {"c": "lists"}})
    p.data_to_send(0.0)
    events = p.receive({"t": "error", "code": "limit", "message": "at most 100 queries"}, 0.0)
    assert kinds(events) == ["error"]
    assert p.answered(["big"]) and "big" not in p.wanted and p.synced


def test_a_cursor_the_server_cannot_continue_from_gets_fresh_snapshots() -> None:
    p = ClientProtocol(Replica(BOARD, "client-0001"))
    p.hydrate(page_state("e1.50"))
    p.connection_made()
    p.receive(welcome("e1.7"), 0.0)
    assert p.data_to_send(0.0)[-1]["since"] == "e1.50"
    p.receive({"t": "error", "code": "cursor_ahead", "message": "ahead"}, 0.0)
    assert p.data_to_send(0.0) == [{"t": "sub", "queries": {"q": Q}}]
    p.receive({"t": "snapshot", "cursor": "e1.7", "queries": {"q": Q}, "records": {"q": []}}, 0.0)
    assert p.synced and p.replica.get("cards", "c1") is None


def test_changes_that_do_not_follow_the_cursor_ask_for_a_new_connection() -> None:
    p, _ = live()
    events = p.receive({"t": "changes", "from": "e1.9", "to": "e1.10", "q": {}}, 0.0)
    assert kinds(events) == ["error"] and p.close_requested
    p.connection_lost()
    p.connection_made()
    assert p.close_requested is None
    p.receive(welcome("e1.10"), 0.0)
    assert p.data_to_send(0.0)[-1] == {"t": "sub", "queries": {"q": Q}, "since": "e1.5"}


@pytest.mark.parametrize(
    "data",
    [b"{not json", b"[1]", b'{"t": "surprise"}', b'{"t": "ack"}', b'{"t": "changes", "from": 3}'],
)
def test_garbage_from_the_server_is_reported_and_changes_nothing(data: bytes) -> None:
    p, _ = live()
    before = p.replica.server_data()
    events = p.receive_text(data, 0.0)
    assert kinds(events) == ["error"] and p.close_requested
    assert p.replica.server_data() == before


ENTER = {"k": "enter", "c": "cards", **record("c2")}
MALFORMED = {
    "ack without seq": ({"t": "ack", "mid": 1, "status": "applied"}, "bad_frame", "seq"),
    "ack mid a string": (
        {"t": "ack", "mid": "1", "status": "applied", "seq": 6},
        "bad_frame",
        "mid",
    ),
    "reject without permanent": (
        {"t": "reject", "mid": 1, "code": "retry", "message": "later"},
        "bad_frame",
        "permanent",
    ),
    "error code a number": ({"t": "error", "code": 7, "message": "x"}, "bad_frame", "code"),
    "changes without to": ({"t": "changes", "from": "e1.5", "q": {}}, "bad_frame", "to"),
    "patch without fv": (
        {"t": "changes", "from": "e1.5", "to": "e1.6", "q": {"q": [{"k": "patch", "id": "c1"}]}},
        "bad_frame",
        "inc",
    ),
    "enter with a string version": (
        {"t": "changes", "from": "e1.5", "to": "e1.6", "q": {"q": [{**ENTER, "v": "6"}]}},
        "bad_frame",
        "v",
    ),
    "change item of no kind": (
        {"t": "changes", "from": "e1.5", "to": "e1.6", "q": {"q": [{"k": "moved", "id": "c1"}]}},
        "bad_frame",
        "k",
    ),
    "snapshot record without data": (
        {
            "t": "snapshot",
            "cursor": "e1.6",
            "queries": {"q": Q},
            "records": {"q": [{"id": "c1", "inc": 1, "v": 6, "fv": {}}]},
        },
        "bad_frame",
        "data",
    ),
    "snapshot records a list": (
        {"t": "snapshot", "cursor": "e1.6", "queries": {"q": Q}, "records": []},
        "bad_frame",
        "records",
    ),
    "unknown type": ({"t": "surprise"}, "unknown_frame", "surprise"),
    "no type": ({"mid": 1}, "bad_frame", "`t`"),
}


@pytest.mark.parametrize(("frame", "code", "names"), MALFORMED.values(), ids=list(MALFORMED))
def test_a_malformed_server_frame_is_a_named_protocol_error(
    frame: dict[str, Any], code: str, names: str
) -> None:
    # Decoded once at the boundary: a missing field or a wrong type is a ProtocolError
    # that names it, never a KeyError or TypeError from deep inside a handler.
    with pytest.raises(ProtocolError, match=names) as raised:
        decode_frame(frame)
    assert raised.value.code == code
    p, _ = live()
    p.replica.increment("cards", "c1", "votes")
    p.data_to_send(0.0)
    before = (p.replica.server_data(), p.replica.cursor, p.replica.held_snapshot())
    events = p.receive(frame, 0.0)
    assert [(e.kind, e.error and e.error["code"]) for e in events] == [("error", code)]
    assert p.close_requested is not None and p.close_requested.startswith(code)
    assert (p.replica.server_data(), p.replica.cursor, p.replica.held_snapshot()) == before
    assert [m.id for m in p.replica.unacked()] == [1] and p.state is State.LIVE
    events = p.receive_text(json_dumps(frame), 0.0)  # the same from the frame's text
    assert [(e.kind, e.error and e.error["code"]) for e in events] == [("error", code)]


def test_a_malformed_welcome_leaves_the_protocol_waiting_for_one() -> None:
    p = ClientProtocol(Replica(BOARD, "client-0001"))
    p.connection_made()
    p.data_to_send(0.0)
    events = p.receive({**welcome(), "last": "0"}, 0.0)
    assert kinds(events) == ["error"] and p.state is State.HELLO_SENT and p.close_requested
    assert events[0].error is not None and "last" in events[0].error["message"]


def test_a_saved_state_that_is_not_a_snapshot_is_a_protocol_error() -> None:
    p = ClientProtocol(Replica(BOARD, "client-0001"))
    with pytest.raises(ProtocolError, match="cursor"):
        p.hydrate({"queries": {"q": Q}, "records": {"q": []}})
    assert p.replica.cursor is None and p.wanted == {}


def test_at_most_max_in_flight_mutations_wait_for_answers() -> None:
    p, _ = live(max_in_flight=2)
    for i in range(5):
        p.replica.increment("cards", "c1", "votes", i)
    assert [f["id"] for f in p.data_to_send(0.0)] == [1, 2]
    assert p.data_to_send(0.0) == []
    p.receive({"t": "ack", "mid": 1, "status": "applied", "seq": 6}, 0.0)
    assert [f["id"] for f in p.data_to_send(0.0)] == [3]


def test_a_rate_error_naming_a_mutation_is_retried_after_a_pause() -> None:
    p, _ = live(default_retry_after=0.25)
    p.replica.increment("cards", "c1", "votes")
    p.replica.increment("cards", "c1", "votes")
    assert len(p.data_to_send(0.0)) == 2
    events = p.receive({"t": "error", "code": "rate", "message": "too many", "ref": 1}, 0.0)
    assert kinds(events) == ["error"]
    p.receive({"t": "error", "code": "rate", "message": "too many", "ref": 2}, 0.0)
    assert p.data_to_send(0.1) == [] and p.next_deadline() == 0.25
    assert [f["id"] for f in p.data_to_send(0.25)] == [1, 2]
    assert p.replica.pending and [m.id for m in p.replica.unacked()] == [1, 2]


def test_resending_that_makes_no_progress_backs_off_instead_of_spinning() -> None:
    p, _ = live(stall_backoff=(0.1, 1.0))
    p.replica.increment("cards", "c1", "votes")
    p.replica.increment("cards", "c1", "votes")
    now, sends = 0.0, []
    for _ in range(8):
        frames = p.data_to_send(now)
        while not frames:  # jump to the next moment the protocol will send
            deadline = p.next_deadline()
            assert deadline is not None and deadline > now
            now = deadline
            frames = p.data_to_send(now)
        sends.append(now)
        assert [f["id"] for f in frames] == [1, 2]
        p.receive(reject(1, "retry", retry_after=0), now)
        p.receive(reject(2, "gap", expected=1), now)
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    assert gaps == pytest.approx([0.0, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    p.receive({"t": "ack", "mid": 1, "status": "applied", "seq": 6}, now)
    p.receive(reject(2, "gap", expected=2), now)
    assert [f["id"] for f in p.data_to_send(now)] == [2]  # progress: no wait


def test_a_welcome_naming_a_lower_last_id_renumbers_what_the_server_never_saw() -> None:
    p = ClientProtocol(Replica(BOARD, "client-0001"))
    p.hydrate(page_state())
    for _ in range(3):
        p.replica.increment("cards", "c1", "votes")
    p.replica.pending = p.replica.pending[1:]  # say mutation 1 was refused locally
    p.connection_made()
    p.receive(welcome(last=0), 0.0)
    hello_free = p.data_to_send(0.0)
    assert [f["id"] for f in hello_free if f["t"] == "mut"] == [1, 2]
    assert p.replica.increment("cards", "c1", "votes").id == 3


def test_acks_of_dropped_ops_are_reported() -> None:
    p, _ = live()
    p.replica.update("cards", "c1", title="x")
    p.data_to_send(0.0)
    events = p.receive(
        {
            "t": "ack",
            "mid": 1,
            "status": "applied",
            "seq": None,
            "results": [{"status": "dropped", "reason": "deleted"}],
        },
        0.0,
    )
    (dropped,) = [e for e in events if e.kind == "dropped"]
    assert dropped.keys == (("cards", "c1"),) and dropped.reason == "deleted"
    assert p.replica.pending == []


def test_an_ack_for_a_settled_mutation_changes_nothing() -> None:
    p, _ = live()
    events = p.receive({"t": "ack", "mid": 9, "status": "applied", "seq": 7, "replay": True}, 0.0)
    assert kinds(events) == [] and p.replica.pending == []


def test_without_subscriptions_acknowledged_mutations_end_at_once() -> None:
    # The server sends no changes to a connection without subscriptions, so the cursor
    # would never reach the ack's seq.
    p, _ = live(hydrated=False)
    p.replica.insert("boards", "b1", name="B")
    p.data_to_send(0.0)
    p.receive({"t": "ack", "mid": 1, "status": "applied", "seq": 4}, 0.0)
    assert p.replica.pending == [] and p.synced


def test_fatal_errors_stop_the_protocol() -> None:
    p = ClientProtocol(Replica(BOARD, "client-0001"))
    p.connection_made()
    p.data_to_send(0.0)
    events = p.receive({"t": "error", "code": "unauthorized", "message": "no"}, 0.0)
    assert kinds(events) == ["error"] and p.state is State.FAILED
    assert p.fatal is not None and p.fatal["code"] == "unauthorized"
    p.connection_lost()
    p.connection_made()
    assert p.state is State.FAILED and p.data_to_send(0.0) == []


def test_hydrate_refuses_another_schema_or_version() -> None:
    p = ClientProtocol(Replica(BOARD, "client-0001"))
    with pytest.raises(SchemaError):
        p.hydrate({**page_state(), "schema": "0000"})
    with pytest.raises(ValueError, match="version"):
        p.hydrate({**page_state(), "v": 2})


def test_the_held_snapshot_follows_the_frames_through_the_replica() -> None:
    # The replica is the one owner of which records each query holds: what a client
    # persists (held_snapshot) follows enter, remove and a snapshot from another database.
    p, _ = live()
    enter = {"k": "enter", **record("c2", v=6, title="Two")}
    p.receive({"t": "changes", "from": "e1.5", "to": "e1.6", "q": {"q": [enter]}}, 0.0)
    remove = {"k": "remove", "id": "c1"}
    p.receive({"t": "changes", "from": "e1.6", "to": "e1.7", "q": {"q": [remove]}}, 0.0)
    held = p.replica.held_snapshot()
    assert held is not None and held["cursor"] == "e1.7"
    assert [r["id"] for r in held["records"]["q"]] == ["c2"]
    again = ClientProtocol(Replica(BOARD, "client-0001"))
    again.hydrate({"v": 1, "schema": BOARD.hash, **held})
    assert again.replica.get("cards", "c2") == p.replica.get("cards", "c2")
    assert again.replica.get("cards", "c1") is None
    snapshot = {"cursor": "e2.1", "queries": {"q": Q}, "records": {"q": [record("c3")]}}
    p.receive({"t": "snapshot", "reset": "cursor_reset", **snapshot}, 0.0)
    held = p.replica.held_snapshot()
    assert held is not None and [r["id"] for r in held["records"]["q"]] == ["c3"]
    assert p.replica.get("cards", "c2") is None


# --- the asyncio client, offline -----------------------------------------------------------

URL = "ws://127.0.0.1:9/sync"  # never connected to in these tests


async def test_local_edits_show_at_once_and_are_reported() -> None:
    client = Client(URL, BOARD)
    client.hydrate(embed_json(page_state()))  # the script tag's text, escapes and all
    seen: list[ClientEvent] = []
    client.on("changed", seen.append)
    stream = client.events()
    calls: list[str] = []

    async def later(event: ClientEvent) -> None:
        calls.append(event.kind)

    off = client.on("*", later)
    client.update("cards", "c1", title="<b>mine</b>")
    with client.batch() as b:
        b.increment("cards", "c1", "votes", 2)
        b.add("cards", "c1", "labels", "bug")
    assert client.get("cards", "c1") == {
        **CARD,
        "title": "<b>mine</b>",
        "votes": 2,
        "labels": ["bug"],
        "id": "c1",
    }
    assert client.query({"c": "cards", "where": {"list_id": "l1"}})[0]["votes"] == 2
    assert client.pending == [1, 2] and client.status == "offline" and client.cursor == "e1.5"
    assert [e.keys for e in seen] == [(("cards", "c1"),), (("cards", "c1"),)]
    assert (await anext(stream)).mutation_id == 1
    assert (await anext(stream)).mutation_id == 2
    await asyncio.sleep(0)
    assert calls == ["changed", "changed"]
    off()
    client.delete("cards", "c1")
    await asyncio.sleep(0)
    assert calls == ["changed", "changed"] and client.get("cards", "c1") is None
    await client.close()
    assert [e.kind async for e in stream] == ["changed"]  # then the stream ends
    with pytest.raises(RuntimeError, match="closed"):
        client.update("cards", "c1", title="late")


async def test_a_mutation_the_server_would_refuse_unread_is_refused_here() -> None:
    client = Client(URL, BOARD)
    client.hydrate(page_state())
    with pytest.raises(InvalidMutation, match="limit"):
        client.update("cards", "c1", description="x" * 100_001)
    assert client.pending == []
    assert client.update("cards", "c1", title="ok").id == 1  # the id was not used up
    await client.close()


async def test_waiting_raises_on_timeout_and_after_close() -> None:
    client = Client(URL, BOARD)
    with pytest.raises(TimeoutError):
        await client.wait_synced(0.01)
    waiter = asyncio.ensure_future(client.wait_live())
    await asyncio.sleep(0)
    await client.close()
    with pytest.raises(ClientFailed, match="closed"):
        await waiter


async def test_a_url_that_can_never_connect_fails_the_client_for_good() -> None:
    client = Client("http://127.0.0.1:9/sync", BOARD)  # not ws://: no retry can help
    errors: list[ClientEvent] = []
    client.on("error", errors.append)
    await client.connect()
    with pytest.raises(ClientFailed, match="bad_url"):
        await client.wait_live(10)
    assert client.failed and client.error is not None and client.error["code"] == "bad_url"
    assert [e.error["code"] for e in errors if e.error is not None] == ["bad_url"]
    await client.close()


async def test_pending_mutations_drafts_and_data_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "pending.sqlite3"
    first = Client(URL, BOARD, pending_path=path)
    first.hydrate(page_state())
    first.update("cards", "c1", status="done")
    first.protocol.connection_made()
    first.protocol.receive(welcome(), 0.0)
    first.protocol.receive(
        {
            "t": "ack",
            "mid": 1,
            "status": "conflict",
            "seq": None,
            "results": [
                {
                    "status": "conflict",
                    "conflicts": [
                        {
                            "c": "cards",
                            "id": "c1",
                            "field": "status",
                            "base": "todo",
                            "mine": "done",
                            "theirs": "doing",
                            "theirs_v": 6,
                        }
                    ],
                }
            ],
        },
        0.0,
    )
    first.increment("cards", "c1", "votes", 4)
    first.protocol.receive({"t": "ack", "mid": 2, "status": "applied", "seq": 7}, 0.0)
    first.add("cards", "c1", "labels", "x")
    first._after([], state_changed=True)
    with pytest.raises(StoreError, match="another client process"):
        Client(URL, BOARD, pending_path=path)
    await first.close()

    again = Client(URL, BOARD, pending_path=path)
    assert again.client_id == first.client_id
    assert again.pending == [2, 3]
    assert [p.acked for p in again.replica.pending] == [True, False]
    assert again.replica.pending[0].seq == 7
    (draft,) = again.drafts
    assert draft.conflicts[0].theirs == "doing" and draft.ops[0].op == "update"
    assert again.cursor == "e1.5"
    assert again.get("cards", "c1") == {**CARD, "votes": 4, "labels": ["x"], "id": "c1"}
    assert again.insert("cards", "c2", list_id="l1").id == 4
    assert again.protocol.acked == 2  # holds the answers to 1 and 2
    await again.close()
    with pytest.raises(ValueError, match="belongs to client"):
        Client(URL, BOARD, pending_path=path, client_id="someone-else")


# --- many clients, the real server, an in-memory link, random faults ---------------------


class Link:
    """One connection to an in-process SynclineServer, through ASGI: no socket. Closing
    it loses every frame the client has not read yet (lost acks included)."""

    def __init__(self, app: Any, protocol: ClientProtocol) -> None:
        self.protocol = protocol
        self.to_server: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.to_client: list[str] = []
        self.open = True
        self.to_server.put_nowait({"type": "websocket.connect"})
        scope = {
            "type": "websocket", "asgi": {"version": "3.0"}, "path": "/sync", "raw_path": b"/sync",
            "root_path": "", "scheme": "ws", "query_string": b"", "headers": [],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "subprotocols": [],
        }  # fmt: skip
        self.task = asyncio.ensure_future(app(scope, self.to_server.get, self._from_server))
        protocol.connection_made()

    async def _from_server(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send" and self.open:
            self.to_client.append(message["text"])
        elif message["type"] == "websocket.close":
            self.open = False

    def pump(self, now: float) -> list[ClientEvent]:
        events: list[ClientEvent] = []
        while self.open and self.to_client:
            events += self.protocol.receive_text(self.to_client.pop(0), now)
            if self.protocol.close_requested:
                self.open = False
        for frame in self.protocol.data_to_send(now) if self.open else []:
            self.to_server.put_nowait({"type": "websocket.receive", "text": json_dumps(frame)})
        return events

    async def close(self) -> None:
        self.open = False
        self.to_client.clear()
        self.protocol.connection_lost()
        self.to_server.put_nowait({"type": "websocket.disconnect", "code": 1006})
        await asyncio.wait_for(self.task, 5)


def json_dumps(frame: dict[str, Any]) -> str:
    import orjson

    return orjson.dumps(frame).decode()


SEEDS = [1, 2, 3, 4, 5, 6, 7, 8]


@pytest.mark.parametrize("seed", SEEDS)
async def test_clients_converge_under_random_edits_and_dropped_connections(seed: int) -> None:
    import random

    from syncline import Engine, MemoryStore
    from syncline.server.app import SynclineServer

    rng = random.Random(seed)
    print(f"seed={seed}")  # replay a failure with this seed
    engine = Engine(BOARD, MemoryStore())
    server = SynclineServer(engine)
    await server.start()
    try:
        admin = Replica(BOARD, "admin-000")
        with admin.batch() as b:
            b.insert("boards", "b1", name="B")
            b.insert("lists", "l1", board_id="b1")
            for i in range(3):
                b.insert("cards", f"c{i}", list_id="l1", description="the fox")
        assert b.mutation is not None
        await engine.apply("admin", "admin-000", b.mutation)
        clients = [ClientProtocol(Replica(BOARD, f"client-{i:04d}")) for i in range(3)]
        for p in clients:
            p.subscribe({"cards": {"c": "cards"}})
        links: dict[int, Link] = {}
        increments = 0
        now = 0.0

        async def settle() -> None:
            for _ in range(5):
                for link in list(links.values()):
                    link.pump(now)
                await asyncio.sleep(0)

        for _ in range(300):
            i = rng.randrange(len(clients))
            p, roll = clients[i], rng.random()
            if roll < 0.12:
                if i in links:
                    await links.pop(i).close()
                else:
                    links[i] = Link(server.app, p)
            elif p.replica.cursor is not None and roll < 0.75:
                card = f"c{rng.randrange(3)}"
                if p.replica.get("cards", card) is None:
                    continue
                op = rng.choice(["votes", "title", "description", "labels", "status"])
                if op == "votes":
                    p.replica.increment("cards", card, "votes", 1)
                    increments += 1
                elif op == "title":
                    p.replica.update("cards", card, title=f"t{rng.randrange(100)}")
                elif op == "description":
                    text = p.replica.get("cards", card)["description"]  # type: ignore[index]
                    p.replica.update("cards", card, description=text + rng.choice(" 🦊ab"))
                elif op == "labels":
                    label = rng.choice(["x", "y"])
                    if rng.random() < 0.5:
                        p.replica.add("cards", card, "labels", label)
                    else:
                        p.replica.remove("cards", card, "labels", label)
                else:
                    p.replica.update("cards", card, status=rng.choice(["todo", "doing", "done"]))
            for draft in list(p.replica.drafts):
                if rng.random() < 0.5:
                    p.replica.resolve(draft, {c.field: c.mine for c in draft.conflicts if c.field})
            now += rng.random() * 0.2
            await settle()

        for i, p in enumerate(clients):  # everyone reconnects, answers drafts, goes idle
            if i not in links:
                links[i] = Link(server.app, p)
        for _ in range(2000):
            await settle()
            for p in clients:
                for draft in list(p.replica.drafts):
                    p.replica.resolve(draft, {})  # keep theirs
            now += 0.05
            head = await engine.head()  # synced alone does not mean every change arrived
            if all(p.synced and not p.replica.drafts and p.replica.cursor == head for p in clients):
                break
            await asyncio.sleep(0.001)
        assert all(p.synced and p.replica.cursor == head for p in clients), [
            (p.state, len(p.replica.pending), p.replica.cursor, head) for p in clients
        ]
        snap = await engine.snapshot("anonymous", {"cards": Query.parse({"c": "cards"}, BOARD)})
        truth = {("cards", r["id"]): r["data"] for r in snap.results["cards"]}
        for p in clients:
            assert p.replica.server_data() == truth  # invariant 9
        assert sum(d["votes"] for d in truth.values()) == increments  # each applied once
        for link in links.values():
            await link.close()
    finally:
        await server.stop()
