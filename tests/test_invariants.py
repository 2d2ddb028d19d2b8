"""Guards for invariants (docs/design.md, "Invariants") that the other tests left
unguarded or guarded on one store only; each test names the invariant it serves.

The property tests run on every store (``conftest.store``): hypothesis draws the
programs and prints the blob that replays a failure. One store (or one live server)
serves all examples of a test, so each example writes records of its own (a fresh tag)
and reads only those.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from syncline import ClientIdTaken, Engine, Insert, InvalidMutation, Query, Replica, Schema, Update
from syncline.model import Collection
from syncline.ops import Delete, Increment
from syncline.ssr import embed_json, read_page
from syncline.store import Store

from .live import RawClient
from .schemas import BOARD, Board, Card, List
from .test_server import running

# One fixture for every example of a test: the examples tell their records apart by tag.
SHARED_FIXTURE = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_tags = itertools.count()


async def seeded_board(engine: Engine, cards: int = 0) -> tuple[str, str, str]:
    """A board with two lists and ``cards`` cards (all in the first list but the fourth),
    all new: returns (tag, first list id, second list id). Card n is ``{tag}-c{n}``."""
    tag = f"x{next(_tags)}"
    l1, l2 = f"{tag}-l1", f"{tag}-l2"
    async with engine.transaction("admin") as tx:
        tx.apply(
            Insert(c="boards", id=f"{tag}-b", fields={"name": "B"}),
            Insert(c="lists", id=l1, fields={"board_id": f"{tag}-b"}),
            Insert(c="lists", id=l2, fields={"board_id": f"{tag}-b"}),
            *(
                Insert(c="cards", id=f"{tag}-c{n}", fields={"list_id": l2 if n == 3 else l1})
                for n in range(cards)
            ),
        )
    return tag, l1, l2


def list_queries(l1: str) -> dict[str, Query]:
    """A filtered query, a filter on two fields, and a limited window, all on list l1."""
    return {
        "all": Query.parse({"c": "cards", "where": {"list_id": l1}}, BOARD),
        "todo": Query.parse({"c": "cards", "where": {"list_id": l1, "status": "todo"}}, BOARD),
        "top": Query.parse(
            {"c": "cards", "where": {"list_id": l1}, "order": [["rank", "desc"]], "limit": 1},
            BOARD,
        ),
    }


def held(replica: Replica, queries: Mapping[str, Query]) -> dict[str, list[Any]]:
    """What a replica shows for each query, in the query's order."""
    return {
        qid: [(r["id"], {k: v for k, v in r.items() if k != "id"}) for r in replica.query(q)]
        for qid, q in queries.items()
    }


def truth(snapshot_results: Mapping[str, list[dict[str, Any]]]) -> dict[str, list[Any]]:
    return {qid: [(r["id"], r["data"]) for r in rs] for qid, rs in snapshot_results.items()}


# --- invariants 6 and 7: a snapshot and the changes after its cursor are the head -------

write_step = st.tuples(
    st.sampled_from(["insert", "move", "status", "rank", "title", "incr", "delete"]),
    st.integers(0, 5),  # which card: 0 to 3 exist at first
    st.integers(0, 99),
)


async def server_write(engine: Engine, tag: str, lists: tuple[str, str], step: Any) -> None:
    """One server-side commit of ``step`` on the tag's cards (nothing if it cannot apply)."""
    kind, n, r = step
    rid = f"{tag}-c{n}"
    async with engine.transaction("admin") as tx:
        current = await tx.get("cards", rid)
        if kind == "insert":
            if current is None:
                fields = {"list_id": lists[r % 2], "rank": float(r % 7), "title": f"t{r}"}
                tx.apply(Insert(c="cards", id=rid, fields=fields))
        elif current is None:
            return
        elif kind == "delete":
            tx.apply(Delete(c="cards", id=rid))
        elif kind == "incr":
            tx.apply(Increment(c="cards", id=rid, field="votes", by=1 + r % 3))
        else:
            value: Any = {
                "move": lists[1] if current["list_id"] == lists[0] else lists[0],
                "status": ["todo", "doing", "done"][r % 3],
                "rank": float(r % 7),
                "title": f"t{r}",
            }[kind]
            field = "list_id" if kind == "move" else kind
            tx.apply(Update(c="cards", id=rid, set={field: value}))


@SHARED_FIXTURE
@given(st.lists(write_step, min_size=1, max_size=14))
async def test_any_snapshot_taken_during_writes_plus_the_changes_since_its_cursor_is_the_head(
    store: Store, steps: list[Any]
) -> None:
    """Invariants 6 and 7: each snapshot is read racing a commit; loading it and applying
    the changes since its cursor gives exactly the head's answer to every query
    (records that entered whole, changed ones patched, those that left removed, a moved
    window resent)."""
    engine = Engine(BOARD, store)
    tag, l1, l2 = await seeded_board(engine, cards=4)
    queries = list_queries(l1)
    snapshots = []
    for step in steps:
        _, snap = await asyncio.gather(
            server_write(engine, tag, (l1, l2), step), engine.snapshot("reader", queries)
        )
        snapshots.append(snap)
    head = await engine.snapshot("reader", queries)
    expected = truth(head.results)
    for snap in snapshots:
        replica = Replica(BOARD, "reader")
        replica.load_snapshot(snap.to_wire())
        changes = await engine.changes_since("reader", snap.cursor, queries)
        assert (changes.since, changes.cursor) == (snap.cursor, head.cursor)
        note(f"from {snap.cursor}: {changes.to_wire()['q']}")
        for item in itertools.chain(*changes.queries.values()):
            event(f"item {item['k']}")
        replica.apply_changes(changes.to_wire())
        assert held(replica, queries) == expected, f"resumed from {snap.cursor}"


# --- invariant 3: a replay, in any order and any number of times, changes nothing -------

edit = st.tuples(
    st.integers(0, 1),  # which client
    st.sampled_from(
        ["title", "status", "status", "text", "incr", "label", "bad", "insert", "delete"]
    ),
    st.integers(0, 1),  # which card
    st.integers(0, 99),
)


def client_edit(replica: Replica, tag: str, l1: str, action: Any) -> None:
    _, kind, n, r = action
    rid = f"{tag}-c{n}"
    current = replica.get("cards", rid)
    try:
        if kind == "insert":
            if current is None:
                replica.insert("cards", rid, list_id=l1, status="todo")
        elif current is None:
            return
        elif kind == "title":
            replica.update("cards", rid, title=f"{replica.client_id}-{r}")
        elif kind == "status":  # manual: concurrent edits conflict
            replica.update("cards", rid, status=["todo", "doing", "done"][r % 3])
        elif kind == "text":
            text = current["description"]
            replica.update("cards", rid, description=text[: r % (len(text) + 1)] + "é🎉")
        elif kind == "incr":
            replica.increment("cards", rid, "votes", 1 + r % 3)
        elif kind == "label":
            replica.add("cards", rid, "labels", f"l{r % 3}")
        elif kind == "bad":  # refused by the server for good: the number is used up
            replica.insert("cards", f"{rid}-orphan{r}", list_id="no-such-list")
        elif kind == "delete":
            replica.delete("cards", rid)
    except InvalidMutation:
        pass  # not possible from this replica's view


@SHARED_FIXTURE
@given(st.lists(edit, min_size=1, max_size=16), st.randoms(use_true_random=False))
async def test_replaying_any_mutations_in_any_order_returns_their_acks_and_changes_nothing(
    store: Store, edits: list[Any], rng: Any
) -> None:
    """Invariant 3 on every store: two clients edit concurrently (conflicts, overwrites,
    merges and permanent refusals among the acks); then every mutation is sent again,
    shuffled, some twice. Each replay is its original ack marked ``replay``, and neither
    the records nor the clients' numbering move."""
    engine = Engine(BOARD, store)
    tag, l1, _ = await seeded_board(engine, cards=2)
    queries = {"all": Query.parse({"c": "cards", "where": {"list_id": l1}}, BOARD)}
    start = (await engine.snapshot("u", queries)).to_wire()
    replicas = [Replica(BOARD, f"{tag}-{who}") for who in "ab"]
    for replica in replicas:
        replica.load_snapshot(start)
    sent: list[tuple[Replica, Any, dict[str, Any]]] = []
    for action in edits:
        replica = replicas[action[0]]
        client_edit(replica, tag, l1, action)
        for m in replica.unacked():
            if all(m is not s[1] for s in sent):
                ack = (await engine.apply("u", replica.client_id, m)).to_wire()
                sent.append((replica, m, ack))
                event(f"ack {ack['status']}")
                replica.apply_ack(ack)
    note(f"acks: {[(s[0].client_id, s[2]['mid'], s[2]['status']) for s in sent]}")
    before = await engine.snapshot("u", queries)
    lasts = [await engine.client_last("u", r.client_id) for r in replicas]
    again = sent + rng.sample(sent, len(sent) // 2)
    rng.shuffle(again)
    for replica, m, ack in again:
        replay = (await engine.apply("u", replica.client_id, m)).to_wire()
        assert replay == {**ack, "replay": True}
    after = await engine.snapshot("u", queries)
    assert (after.cursor, after.results) == (before.cursor, before.results)
    assert [await engine.client_last("u", r.client_id) for r in replicas] == lasts


# --- invariants 4 and 10: a client id's answers are its principal's alone ---------------


async def test_another_principal_replaying_a_client_ids_mutation_gets_no_answer_of_it(
    store: Store,
) -> None:
    """Invariant 4: the principal check comes before the replay check, so a kept ack (its
    conflict shows *theirs*) never goes to whoever presents the client id."""
    engine = Engine(BOARD, store)
    tag, l1, _ = await seeded_board(engine)
    rid = f"{tag}-c"
    async with engine.transaction("admin") as tx:
        tx.apply(Insert(c="cards", id=rid, fields={"list_id": l1}))
    base = (await engine.head()).seq
    status = {"op": "update", "c": "cards", "id": rid, "base": {"status": base}}
    await engine.apply("bob", f"{tag}-bob", {"id": 1, "ops": [{**status, "set": {"status": "x"}}]})
    mine = {"id": 1, "ops": [{**status, "set": {"status": "mine"}}]}
    ack = await engine.apply("alice", f"{tag}-alice", mine)
    assert ack.status == "conflict" and ack.results[0].conflicts[0].theirs == "x"
    with pytest.raises(ClientIdTaken, match="belongs to another principal"):
        await engine.apply("mallory", f"{tag}-alice", mine)
    assert await engine.client_last("alice", f"{tag}-alice") == 1


def secret_schema(may_read: Callable[[Any], bool], may_write: Callable[[Any], bool]) -> Schema:
    """Boards and lists open to all; cards read and written as the two predicates say."""
    return Schema(
        [
            Collection("boards", Board, read=lambda *_: True, write=lambda *_: True),
            Collection("lists", List, read=lambda *_: True, write=lambda *_: True),
            Collection(
                "cards",
                Card,
                read=lambda who, rec: may_read(who),
                write=lambda who, before, after: may_write(who),
            ),
        ]
    )


@pytest.mark.parametrize("mode", ["whole", "partial"])
@pytest.mark.parametrize(
    "who",
    ["reader", "stranger"],  # may read but not write; may do neither
)
async def test_a_conflict_shows_theirs_only_to_who_may_read_and_write_the_record(
    store: Store, mode: str, who: str
) -> None:
    """Invariant 10 (and design: a manual conflict carries theirs only to a principal
    who may read the record and whose write rule allows changing it), in both modes."""
    writers, readers = {"admin", "alice"}, {"admin", "alice", "reader"}
    schema = secret_schema(lambda p: p in readers, lambda p: p in writers)
    engine = Engine(schema, store)
    tag = f"x{next(_tags)}"
    async with engine.transaction("admin") as tx:
        tx.apply(
            Insert(c="boards", id=f"{tag}-b", fields={"name": "B"}),
            Insert(c="lists", id=f"{tag}-l", fields={"board_id": f"{tag}-b"}),
            Insert(c="cards", id=f"{tag}-c", fields={"list_id": f"{tag}-l"}),
        )
    status = {"op": "update", "c": "cards", "id": f"{tag}-c", "base": {"status": 1}}
    secret = await engine.apply(
        "alice", f"{tag}-a", {"id": 1, "ops": [{**status, "set": {"status": "secret"}}]}
    )
    assert secret.status == "applied"
    probe = {"id": 1, "ops": [{**status, "set": {"status": "guess"}}], "mode": mode}
    ack = await engine.apply(who, f"{tag}-{who}", probe)
    assert "secret" not in str(ack.to_wire()), ack.to_wire()
    assert ack.status == "rejected" and ack.error is not None
    # a stranger may not even read the card: answered as for a missing one
    assert ack.error["code"] == ("forbidden" if who == "reader" else "not_found")


# --- design: read rules see the id and the queryable fields only ------------------------


async def test_read_rules_see_only_the_id_and_queryable_fields_everywhere(store: Store) -> None:
    """Design (model and merge): what a read rule is given in snapshots, in changes
    (from the log's before and after images) and in the conflict check is the record's
    id and its queryable fields, nothing else."""
    seen: list[frozenset[str]] = []

    def may_read(who: Any, rec: Mapping[str, Any]) -> bool:
        seen.append(frozenset(rec))
        return True

    schema = Schema(
        [
            Collection("boards", Board, read=lambda *_: True, write=lambda *_: True),
            Collection("lists", List, read=lambda *_: True, write=lambda *_: True),
            Collection("cards", Card, read=may_read, write=lambda *_: True),
        ]
    )
    engine = Engine(schema, store)
    tag = f"x{next(_tags)}"
    rid = f"{tag}-c"
    queries = {"q": Query.parse({"c": "cards", "where": {"list_id": f"{tag}-l"}}, schema)}
    async with engine.transaction("admin") as tx:
        tx.apply(
            Insert(c="boards", id=f"{tag}-b", fields={"name": "B"}),
            Insert(c="lists", id=f"{tag}-l", fields={"board_id": f"{tag}-b"}),
        )
    start = await engine.snapshot("alice", queries)
    card = {"list_id": f"{tag}-l", "title": "t", "description": "private text"}
    async with engine.transaction("admin") as tx:
        tx.apply(Insert(c="cards", id=rid, fields=card))
    await engine.snapshot("alice", queries)
    base = (await engine.head()).seq
    edit = {"op": "update", "c": "cards", "id": rid, "base": {"status": base}}
    await engine.apply("bob", f"{tag}-b", {"id": 1, "ops": [{**edit, "set": {"status": "x"}}]})
    conflict = await engine.apply(
        "alice", f"{tag}-a", {"id": 1, "ops": [{**edit, "set": {"status": "y"}}]}
    )
    assert conflict.status == "conflict"
    changes = await engine.changes_since("alice", start.cursor, queries)
    assert [i["k"] for i in changes.queries["q"]] == ["enter"]
    assert seen, "the read rule was never asked"
    assert set(seen) == {frozenset({"id", *BOARD["cards"].queryable})}


# --- design: a mutation that changes nothing gets no seq ---------------------------------


async def test_a_mutation_that_changes_nothing_takes_no_seq_and_ends_at_its_ack(
    store: Store,
) -> None:
    """Design (engine and stores): every op dropped (here: an update of a deleted
    record) commits nothing, the ack has no ``seq``, and the client forgets it at once."""
    engine = Engine(BOARD, store)
    tag, l1, _ = await seeded_board(engine)
    queries = {"all": Query.parse({"c": "cards", "where": {"list_id": l1}}, BOARD)}
    async with engine.transaction("admin") as tx:
        tx.apply(Insert(c="cards", id=f"{tag}-c", fields={"list_id": l1}))
    replica = Replica(BOARD, f"{tag}-late")
    replica.load_snapshot((await engine.snapshot("u", queries)).to_wire())
    async with engine.transaction("admin") as tx:
        tx.apply(Delete(c="cards", id=f"{tag}-c"))
    head = await engine.head()
    m = replica.update("cards", f"{tag}-c", title="too late")
    ack = await engine.apply("u", replica.client_id, m)
    assert (ack.status, ack.seq, ack.results[0].status) == ("applied", None, "dropped")
    assert await engine.head() == head
    async with store.read() as tx:
        assert [e.seq for e in await tx.log(head.seq - 1, head.seq + 1)] == [head.seq]
    replica.apply_ack(ack.to_wire())
    assert replica.pending == []


# --- over a live server -----------------------------------------------------------------


def set_title(title: str) -> dict[str, Any]:
    return {"op": "update", "c": "cards", "id": "c1", "set": {"title": title}, "base": {"title": 1}}


async def test_a_hello_naming_the_acks_held_lets_the_server_forget_them(tmp_path: Path) -> None:
    """Invariant 3: acks are kept until the client confirms it holds them: before its
    ``hello.acked`` a resent mutation gets its original ack; after, ``duplicate``."""
    async with running(tmp_path) as (host, _, _):
        async with RawClient.connect(host, BOARD, client_id="confirming-01") as c:
            first = await c.mutate([set_title("one")], 1)
            assert first["t"] == "ack" and first["seq"] == 2
        async with RawClient.connect(host, BOARD, client_id="confirming-01") as c:
            kept = await c.mutate([set_title("one")], 1)  # hello said acked 0
            assert {**kept, "replay": False} == {**first, "replay": False}
        async with RawClient.connect(host, BOARD, client_id="confirming-01", hello=False) as c:
            await c.send(
                {"t": "hello", "v": 1, "client": c.client_id, "schema": BOARD.hash, "acked": 1}
            )
            assert (await c.expect("welcome"))["last"] == 1
            forgotten = await c.mutate([set_title("one")], 1)
            assert (forgotten["status"], forgotten["replay"]) == ("duplicate", True)
            assert forgotten.get("seq") is None


async def test_a_mutation_outside_the_connections_queries_still_reaches_its_ack(
    tmp_path: Path,
) -> None:
    """Invariant 8: a mutation stays pending until the cursor reaches its ack's seq, so
    the server advances the author's cursor even when the commit concerns none of its
    queries (with an empty ``changes``), long before the periodic advance."""
    async with running(tmp_path) as (host, _, _):
        async with RawClient.connect(host, BOARD) as c:
            await c.subscribe({"boards": {"c": "boards"}})
            m = c.replica.insert("cards", "c2", list_id="l1", title="not in my view")
            await c.send({"t": "mut", **m.model_dump()})
            ack = await c.expect("ack")
            c.feed(ack)
            assert ack["seq"] == 2 and c.replica.pending
            await c.pump(2, timeout=5.0)  # the periodic advance comes every 15 s
            assert c.replica.pending == []
            assert [f["q"] for f in c.frames if f["t"] == "changes"] == [{}]


# --- invariant 11: garbage on one connection harms nothing ------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
garbage_op = st.fixed_dictionaries(
    {"op": st.sampled_from(["insert", "update", "delete", "incr", "add", "nope"])},
    optional={
        "c": st.sampled_from(["cards", "lists", "ghosts"]) | json_values,
        "id": st.sampled_from(["c1", "l1", ""]) | json_values,
        "fields": json_values,
        "set": st.dictionaries(st.sampled_from(["title", "votes", "zzz"]), json_values),
        "base": json_values,
        "field": json_values,
        "by": json_values,
    },
)
frame_like = st.fixed_dictionaries(
    {"t": st.sampled_from(["hello", "sub", "unsub", "mut", "ping", "pong", "ack", "nope"])},
    optional={
        "id": st.integers(0, 3) | json_values,
        "ops": st.lists(garbage_op, max_size=2) | json_values,
        "queries": st.dictionaries(st.text(max_size=3), json_values, max_size=2)
        | st.lists(st.text(max_size=3), max_size=2)
        | json_values,
        "since": json_values,
        "n": json_values,
        "mode": json_values,
        "client": json_values,
        "v": json_values,
        "extra": json_values,
    },
)
query_like = st.fixed_dictionaries(
    {"c": st.sampled_from(["cards", "lists", "nope"])},
    optional={"where": json_values, "order": json_values, "limit": json_values},
)
nearly_valid = st.one_of(  # frames of the right shape, with wrong or unknown values
    st.builds(lambda q: {"t": "unsub", "queries": q}, st.lists(st.text(max_size=4), max_size=3)),
    st.builds(
        lambda q, since: {"t": "sub", "queries": q, **since},
        st.dictionaries(st.text(max_size=3), query_like, min_size=1, max_size=2),
        st.just({}) | st.fixed_dictionaries({"since": st.text(max_size=12)}),
    ),
    st.builds(
        lambda mid, ops, mode: {"t": "mut", "id": mid, "ops": ops, **mode},
        st.integers(-1, 5),
        st.lists(garbage_op, max_size=2),
        st.just({}) | st.fixed_dictionaries({"mode": json_values}),
    ),
    st.builds(lambda n: {"t": "ping", "n": n}, json_values),
)
garbage_text = st.one_of(
    frame_like.map(lambda f: orjson.dumps(f).decode()),
    nearly_valid.map(lambda f: orjson.dumps(f).decode()),
    json_values.map(lambda v: orjson.dumps(v).decode()),
    st.text(max_size=30),
)
ANSWERS = {"error", "reject", "ack", "snapshot", "changes", "pong", "ping"}


@pytest.fixture
async def board_server(tmp_path: Path) -> AsyncIterator[tuple[str, Engine]]:
    async with running(tmp_path) as (host, engine, _):
        yield host, engine


async def logical_dump(engine: Engine) -> tuple[Any, Any]:
    queries = {c: Query.parse({"c": c}, BOARD) for c in BOARD.collections}
    snap = await engine.snapshot("admin", queries)
    return snap.cursor, snap.results


@SHARED_FIXTURE
@given(st.lists(garbage_text, min_size=1, max_size=10))
async def test_garbage_frames_are_answered_and_leave_data_and_bystanders_alone(
    board_server: tuple[str, Engine], frames: list[str]
) -> None:
    """Invariant 11 over a live server: after each frame of garbage (wrong types, unknown
    fields and frame types, non-JSON) the connection still answers a ping; every error
    names its code and problem; stored data is unchanged unless a mutation was acked;
    a subscribed bystander sees nothing of it."""
    host, engine = board_server
    before = await logical_dump(engine)
    acked = False
    async with (
        RawClient.connect(host, BOARD) as bystander,
        RawClient.connect(host, BOARD) as bad,
    ):
        await bystander.subscribe({"cards": {"c": "cards"}})
        for i, text in enumerate(frames):
            await bad.send(text)
            marker = 10**12 + i
            await bad.send({"t": "ping", "n": marker})
            while True:
                answer = await bad.recv()
                assert answer["t"] in ANSWERS, answer
                if answer["t"] in ("error", "reject"):
                    assert answer["code"] and isinstance(answer["code"], str), answer
                    assert answer["message"] and isinstance(answer["message"], str), answer
                acked |= answer["t"] == "ack" and answer.get("seq") is not None
                event(f"answer {answer['t']} {answer.get('code', '')}")
                if answer == {"t": "pong", "n": marker}:
                    break
        await bystander.send({"t": "ping", "n": 1})
        if not acked:
            assert await bystander.recv() == {"t": "pong", "n": 1}
    if not acked:
        assert await logical_dump(engine) == before


# --- design: pages embed the field policies the browser merges by -----------------------


async def test_a_page_embeds_the_field_policies_of_each_collection_it_queries(
    store: Store,
) -> None:
    """Design (protocol and fan-out): the embedded state carries each queried
    collection's field policies (``fields``), so the browser's optimistic edits merge
    as the server's will; collections the page does not query are not described."""
    engine = Engine(BOARD, store)
    state = await read_page(engine, "reader", {"a": {"c": "cards"}, "b": {"c": "lists"}})
    wire = orjson.loads(embed_json(state.to_wire()))
    described = BOARD.describe()
    assert wire["fields"] == {"cards": described["cards"], "lists": described["lists"]}
    assert wire["fields"]["cards"]["description"]["kind"] == "text"
