"""The core demo: two replicas, one engine, every merge policy, printed step by step."""

from __future__ import annotations

import random
from typing import Annotated, Any

from pydantic import BaseModel

from .engine import Engine
from .model import Collection, Counter, Manual, Schema, Set, Text
from .query import Query
from .replica import Replica
from .store.memory import MemoryStore


class Card(BaseModel):
    title: str = ""
    description: Annotated[str, Text()] = ""
    votes: Annotated[int, Counter()] = 0
    labels: Annotated[frozenset[str], Set()] = frozenset()
    status: Annotated[str, Manual()] = "todo"


SCHEMA = Schema([Collection("cards", Card)])


def _show(label: str, value: Any) -> None:
    print(f"  {label:<22} {value}")


async def run(seed: int) -> None:
    rng = random.Random(seed)
    engine = Engine(SCHEMA, MemoryStore())
    queries = {"cards": Query.parse({"c": "cards"}, SCHEMA)}
    alice, bob = Replica(SCHEMA, "alice-tab"), Replica(SCHEMA, "bob-tab")

    async def sync(replica: Replica) -> None:
        changes = await engine.changes_since("user", replica.cursor or "", queries)
        replica.apply_changes(changes.to_wire())

    snapshot = (await engine.snapshot("user", queries)).to_wire()
    for r in (alice, bob):
        r.load_snapshot(snapshot)
    print("1. Alice creates a card; both replicas sync.")
    m = alice.insert("cards", "card-1", title="Ship v1", description="We ship on Friday.")
    alice.apply_ack((await engine.apply("user", alice.client_id, m)).to_wire())
    await sync(alice)
    await sync(bob)
    _show("bob sees", bob.get("cards", "card-1"))

    print("\n2. Offline from each other, both edit the same card.")
    words = rng.sample(["carefully", "proudly", "finally"], 2)
    ma = alice.update(
        "cards",
        "card-1",
        title="Ship v1.0",
        status="doing",
        description=f"We {words[0]} ship on Friday.",
    )
    alice.increment("cards", "card-1", "votes")
    alice.add("cards", "card-1", "labels", "release")
    mb = bob.update(
        "cards",
        "card-1",
        title="Ship version 1",
        status="blocked",
        description="We ship on Friday, after review.",
    )
    bob.increment("cards", "card-1", "votes", 2)
    _show("alice sees (optimistic)", alice.get("cards", "card-1"))
    _show("bob sees (optimistic)", bob.get("cards", "card-1"))

    print("\n3. Alice's mutations reach the server first, then Bob's.")
    for replica in (alice, bob):
        for mutation in replica.unacked():
            ack = await engine.apply("user", replica.client_id, mutation)
            _show(f"ack {replica.client_id} #{mutation.id}", ack.to_wire())
            for event in replica.apply_ack(ack.to_wire()):
                if event.kind != "changed":
                    _show(f"event for {replica.client_id}", event.kind)
    del ma, mb

    print("\n4. Bob's status edit conflicted (manual policy): he keeps his choice.")
    draft = bob.drafts[0]
    for c in draft.conflicts:
        _show("conflict", f"{c.field}: base={c.base!r} mine={c.mine!r} theirs={c.theirs!r}")
    answer = bob.resolve(draft, {"status": "blocked"})
    assert answer is not None
    bob.apply_ack((await engine.apply("user", bob.client_id, answer)).to_wire())

    print("\n5. Everyone syncs; the replicas converge.")
    await sync(alice)
    await sync(bob)
    _show("alice", alice.get("cards", "card-1"))
    _show("bob", bob.get("cards", "card-1"))
    same = alice.server_data() == bob.server_data() and not alice.pending and not bob.pending
    print(f"\nconverged: {same}")
