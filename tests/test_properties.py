"""Property tests: replay changes nothing, replicas converge, garbage never harms.

Hypothesis generates the programs; on failure it prints the blob (``print_blob``) that
replays the exact example with ``@reproduce_failure``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, note
from hypothesis import strategies as st

from syncline import Engine, InvalidMutation, MemoryStore, MutationRefused, Query, Replica
from syncline.exceptions import SynclineError
from syncline.ops import Increment, Mutation

from .schemas import BOARD

CARD_IDS = ["c1", "c2", "c3", "n1", "n2"]
WORDS = ["fox", "🎉", "é", "red", "sky"]
STATUSES = ["todo", "doing", "done"]
QUERY_SETS: list[dict[str, Any]] = [
    {"c": "cards"},
    {"c": "cards", "where": {"status": "todo"}},
    {"c": "cards", "where": {"status": {"in": ["doing", "done"]}}},
]


async def seed_engine() -> Engine:
    engine = Engine(BOARD, MemoryStore())
    from syncline import Insert

    async with engine.transaction("admin") as tx:
        tx.apply(
            Insert(c="boards", id="b1", fields={"name": "B"}),
            Insert(c="lists", id="l1", fields={"board_id": "b1"}),
            *(
                Insert(c="cards", id=cid, fields={"list_id": "l1", "description": "a b c"})
                for cid in CARD_IDS[:3]
            ),
        )
    return engine


async def dump(engine: Engine) -> dict[str, Any]:
    """The store's logical content: every live record and the head."""
    queries = {c: Query.parse({"c": c}, BOARD) for c in BOARD.collections}
    snap = await engine.snapshot("admin", queries)
    return {"head": snap.cursor.seq, "records": snap.results}


@dataclass
class SimClient:
    replica: Replica
    connected: bool = True
    sent_upto: int = 0  # the newest mutation id sent on this connection
    delivered: list[Mutation] = field(default_factory=list)


edit = st.tuples(
    st.sampled_from(["title", "text", "status", "incr", "add", "remove", "insert", "delete"]),
    st.integers(0, len(CARD_IDS) - 1),
    st.integers(0, 99),
)
_edit_step = st.tuples(st.just("edit"), st.integers(0, 4), edit)
_send_step = st.tuples(st.just("send"), st.integers(0, 4), st.booleans())  # True: ack lost
step = st.one_of(
    _edit_step,
    _edit_step,
    _send_step,
    _send_step,
    st.tuples(st.just("dup"), st.integers(0, 4), st.integers(0, 99)),
    st.tuples(st.just("sync"), st.integers(0, 4), st.just(0)),
    st.tuples(st.just("drop"), st.integers(0, 4), st.just(0)),
    st.tuples(st.just("reconnect"), st.integers(0, 4), st.just(0)),
)


def make_edit(replica: Replica, action: tuple[str, int, int]) -> None:
    kind, idx, r = action
    cid = CARD_IDS[idx]
    current = replica.get("cards", cid)
    try:
        if kind == "insert":
            if current is None:
                replica.insert("cards", cid, list_id="l1", status=STATUSES[r % 3])
        elif current is None:
            return
        elif kind == "title":
            replica.update("cards", cid, title=f"{replica.client_id}-{r}")
        elif kind == "text":
            text = current["description"]
            pos = r % (len(text) + 1)
            replica.update("cards", cid, description=text[:pos] + WORDS[r % 5] + text[pos:])
        elif kind == "status":
            replica.update("cards", cid, status=STATUSES[r % 3])
        elif kind == "incr":
            replica.increment("cards", cid, "votes", 1 + r % 3)
        elif kind == "add":
            replica.add("cards", cid, "labels", WORDS[r % 5])
        elif kind == "remove" and current["labels"]:
            replica.remove("cards", cid, "labels", current["labels"][r % len(current["labels"])])
        elif kind == "delete":
            replica.delete("cards", cid)
    except InvalidMutation:
        pass  # not possible from this replica's view


async def run_program(n_clients: int, steps: list[tuple[str, int, Any]]) -> None:
    engine = await seed_engine()
    clients: list[SimClient] = []
    for i in range(n_clients):
        replica = Replica(BOARD, f"client-{i}")
        queries = {"q": Query.parse(QUERY_SETS[i % len(QUERY_SETS)], BOARD)}
        replica.load_snapshot((await engine.snapshot("user", queries)).to_wire())
        clients.append(SimClient(replica))
    applied: dict[tuple[str, int], Mutation] = {}  # first applied ack per mutation

    async def deliver(c: SimClient, m: Mutation, lose_ack: bool) -> None:
        ack = await engine.apply("user", c.replica.client_id, m)
        note(f"{c.replica.client_id} #{m.id} -> {ack.status} seq={ack.seq} replay={ack.replay}")
        key = (c.replica.client_id, m.id)
        if ack.status == "applied" and ack.seq is not None:
            if key in applied:
                assert ack.replay, f"{key} applied twice"
            applied[key] = m
        c.delivered.append(m)
        if not lose_ack:
            c.replica.apply_ack(ack.to_wire())

    async def sync(c: SimClient) -> None:
        assert c.replica.cursor is not None
        changes = await engine.changes_since("user", c.replica.cursor, c.replica.queries)
        c.replica.apply_changes(changes.to_wire())

    for kind, who, arg in steps:
        c = clients[who % n_clients]
        if kind == "edit":
            make_edit(c.replica, arg)
        elif not c.connected:
            if kind == "reconnect":
                c.connected, c.sent_upto = True, 0  # resend everything unacked, from the start
                await sync(c)
        elif kind == "send":
            unsent = [m for m in c.replica.unacked() if m.id > c.sent_upto]
            if unsent:
                await deliver(c, unsent[0], arg)
                c.sent_upto = unsent[0].id
        elif kind == "dup" and c.delivered:
            await deliver(c, c.delivered[arg % len(c.delivered)], False)
        elif kind == "sync":
            await sync(c)
        elif kind == "drop":
            c.connected = False

    # Everyone reconnects and goes idle.
    for _ in range(10):
        for c in clients:
            c.connected, c.sent_upto = True, 0
            for m in c.replica.unacked():
                await deliver(c, m, False)
            await sync(c)
        if all(not c.replica.pending for c in clients):
            break
    for c in clients:  # a last pull: others may have committed after this one synced
        await sync(c)
    for c in clients:
        assert c.replica.pending == [], f"{c.replica.client_id} still has pending mutations"
        snap = await engine.snapshot("user", c.replica.queries)
        for qid, query in c.replica.queries.items():
            expected = sorted((r["id"], r["data"]) for r in snap.results[qid])
            held = sorted((r.pop("id"), r) for r in c.replica.query(query))
            assert held == expected, f"{c.replica.client_id} diverged on {qid}"

    # No mutation applied twice: every counter equals the sum of applied increments.
    expected_votes = dict.fromkeys(CARD_IDS, 0)
    alive = await dump(engine)
    for m in applied.values():
        for op in m.ops:
            if isinstance(op, Increment):
                expected_votes[op.id] += op.by
    for record in alive["records"]["cards"]:
        # A card deleted and re-inserted restarts at 0: compare only never-deleted ones.
        if record["inc"] == 1 and record["id"] in CARD_IDS[:3]:
            assert record["data"]["votes"] == expected_votes[record["id"]], record["id"]


@given(st.integers(3, 5), st.lists(step, min_size=20, max_size=150))
def test_replicas_converge_under_interleavings_duplicates_lost_acks_and_disconnects(
    n_clients: int, steps: list[tuple[str, int, Any]]
) -> None:
    asyncio.run(run_program(n_clients, steps))


async def replay_prefix(edits: list[tuple[str, int, int]], prefix: int) -> None:
    engine = await seed_engine()
    replica = Replica(BOARD, "solo")
    replica.load_snapshot(
        (await engine.snapshot("u", {"q": Query.parse({"c": "cards"}, BOARD)})).to_wire()
    )
    for action in edits:
        make_edit(replica, action)
    sent = list(replica.unacked())
    acks = [(await engine.apply("u", "solo", m)).to_wire() for m in sent]
    before = await dump(engine)
    for m, ack in zip(sent[:prefix], acks, strict=False):
        again = (await engine.apply("u", "solo", m)).to_wire()
        assert again == {**ack, "replay": True}
    assert await dump(engine) == before


@given(st.lists(edit, min_size=1, max_size=25), st.integers(0, 25))
def test_replaying_any_prefix_of_mutations_changes_nothing(
    edits: list[tuple[str, int, int]], prefix: int
) -> None:
    asyncio.run(replay_prefix(edits, prefix))


json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
plausible_op = st.fixed_dictionaries(
    {
        "op": st.sampled_from(["insert", "update", "delete", "incr", "add", "remove", "nope"]),
        "c": st.sampled_from(["cards", "lists", "ghosts"]) | json_values,
        "id": st.sampled_from(["c1", "c2", ""]) | json_values,
    },
    optional={
        "fields": json_values,
        "set": st.dictionaries(st.sampled_from(["title", "votes", "labels", "zzz"]), json_values),
        "base": json_values,
        "prev": json_values,
        "field": st.sampled_from(["votes", "labels", "title"]) | json_values,
        "by": json_values,
        "values": json_values,
        "inc": json_values,
    },
)
garbage_mutation = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "id": st.integers(1, 3) | json_values,
            "ops": st.lists(plausible_op, max_size=3) | json_values,
        }
    ),
)


async def feed_garbage(payloads: list[Any]) -> None:
    engine = await seed_engine()
    before = await dump(engine)
    for payload in payloads:
        try:
            ack = await engine.apply("u", "fuzz", payload)
        except SynclineError as exc:
            assert isinstance(exc, MutationRefused) and str(exc)
            continue
        if ack.status == "rejected":
            assert ack.error is not None and ack.error["message"]
        elif ack.status == "applied" and ack.seq is not None:
            before = await dump(engine)  # a valid mutation slipped through: new baseline
    assert await dump(engine) == before


@given(st.lists(garbage_mutation, min_size=1, max_size=8))
def test_garbage_and_wrongly_typed_ops_are_refused_and_leave_the_store_unchanged(
    payloads: list[Any],
) -> None:
    asyncio.run(feed_garbage(payloads))
