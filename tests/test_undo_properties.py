"""Property tests of undo and redo (syncline.undo) against a real Engine (memory store)
with replicas in-process: my actions, others' concurrent actions and undos/redos
interleaved over every merge policy.

(a) undoing everything I did, with nobody else editing, returns every field to where
it started; (b) others' changes made after mine (and seen by me) are never lost by my
undo, but where the documented lww rule says so (it never does when they were seen);
(c) every replica converges with the server.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, note, settings
from hypothesis import strategies as st

from syncline import Engine, Insert, InvalidMutation, MemoryStore, Query, Replica
from syncline.model import set_key
from syncline.record import Record

from .schemas import BOARD

CARDS = ["c1", "c2"]
LABELS = ["bug", "ux", "ops"]

action = st.tuples(
    st.sampled_from(
        ["title", "text", "status", "slug", "incr", "add", "remove", "insert", "delete"]
    ),
    st.integers(0, len(CARDS) - 1),
    st.integers(0, 99),
)


async def seed() -> Engine:
    engine = Engine(BOARD, MemoryStore())
    async with engine.transaction("admin") as tx:
        tx.apply(
            Insert(c="boards", id="b1", fields={"name": "B"}),
            Insert(c="lists", id="l1", fields={"board_id": "b1"}),
            Insert(
                c="cards",
                id="c1",
                fields={"list_id": "l1", "title": "t", "description": "a b", "labels": ["bug"]},
            ),
        )
    return engine


async def replica(engine: Engine, name: str) -> Replica:
    # One entry per edit (no typing bursts): the properties are about entries, and a
    # fast machine would otherwise coalesce a run of edits into one.
    r = Replica(BOARD, name, undo_pause=0)
    queries = {"q": Query.parse({"c": "cards"}, BOARD)}
    r.load_snapshot((await engine.snapshot("user", queries)).to_wire())
    return r


def act(r: Replica, step: tuple[str, int, int], tag: str) -> None:
    kind, idx, n = step
    cid = CARDS[idx]
    cur = r.get("cards", cid)
    try:
        if kind == "insert":
            if cur is None:
                r.insert("cards", cid, list_id="l1", title=f"{tag}{n}")
        elif cur is None:
            return
        elif kind == "title":
            r.update("cards", cid, title=f"{tag}{n}")
        elif kind == "slug":
            r.update("cards", cid, slug=f"{tag}{n}")
        elif kind == "status":
            r.update("cards", cid, status=["todo", "doing", "done"][n % 3])
        elif kind == "text":
            words = cur["description"].split(" ")
            words.insert(n % (len(words) + 1), f"[{tag}{n}]")
            r.update("cards", cid, description=" ".join(words))
        elif kind == "incr":
            r.increment("cards", cid, "votes", 1 + n % 3)
        elif kind == "add":
            r.add("cards", cid, "labels", LABELS[n % 3])
        elif kind == "remove" and cur["labels"]:
            r.remove("cards", cid, "labels", cur["labels"][n % len(cur["labels"])])
        elif kind == "delete":
            r.delete("cards", cid)
    except InvalidMutation:
        pass


async def flush(engine: Engine, r: Replica) -> None:
    for m in r.unacked():
        ack = await engine.apply("user", r.client_id, m)
        note(f"{r.client_id} #{m.id} {ack.status} seq={ack.seq}")
        r.apply_ack(ack.to_wire())
    assert r.cursor is not None
    r.apply_changes((await engine.changes_since("user", r.cursor, r.queries)).to_wire())


async def stored(engine: Engine) -> dict[str, Record]:
    async with engine.store.read() as tx:
        out = {}
        for cid in CARDS:
            rec = await tx.get("cards", cid)
            if rec is not None and not rec.deleted:
                out[cid] = rec
        return out


# --- (a) ------------------------------------------------------------------------------


async def undo_all(actions: list[tuple[str, int, int]], syncs: list[bool], redo: bool) -> None:
    engine = await seed()
    start = {k: dict(v.data) for k, v in (await stored(engine)).items()}
    me = await replica(engine, "me")
    for i, a in enumerate(actions):
        act(me, a, "me")
        if syncs[i % len(syncs)]:
            await flush(engine, me)
    done: dict[str, Any] = {}
    if redo:  # where my edits led (else the undos may start with edits still pending)
        await flush(engine, me)
        done = {k: dict(v.data) for k, v in (await stored(engine)).items()}
    while me.can_undo:
        outcome = me.undo()
        assert outcome is not None and not outcome.partial, outcome
        if syncs[len(me.history.undo_stack) % len(syncs)]:
            await flush(engine, me)
    await flush(engine, me)
    end = {k: dict(v.data) for k, v in (await stored(engine)).items()}
    assert end == start
    if redo:  # and redoing everything brings back where my edits had led
        while me.can_redo:
            outcome = me.redo()
            assert outcome is not None and not outcome.partial, outcome
        await flush(engine, me)
        assert {k: dict(v.data) for k, v in (await stored(engine)).items()} == done
        return
    assert {k: me.get("cards", k) for k in CARDS} == {
        k: {**v, "id": k} if v is not None else None for k, v in ((c, start.get(c)) for c in CARDS)
    }


@settings(max_examples=600, deadline=None)
@given(
    st.lists(action, min_size=1, max_size=12), st.lists(st.booleans(), min_size=1), st.booleans()
)
def test_undo_everything_alone_returns_every_field_to_its_start(
    actions: list[tuple[str, int, int]], syncs: list[bool], redo: bool
) -> None:
    asyncio.run(undo_all(actions, syncs, redo))


# --- (b) and (c) ----------------------------------------------------------------------

step = st.one_of(
    st.tuples(st.just("me"), st.just(0), action),
    st.tuples(st.just("other"), st.integers(0, 1), action),
    st.tuples(st.just("undo"), st.just(0), st.booleans()),  # True: everyone synced first
    st.tuples(st.just("redo"), st.just(0), st.booleans()),
    st.tuples(st.just("sync"), st.integers(0, 2), st.just(None)),
)


def _tokens(text: str) -> set[str]:
    return {w for w in text.split(" ") if w.startswith("[o")}


async def check_undo_keeps_theirs(engine: Engine, me: Replica, redo: bool) -> None:
    """Undo with everything seen: no field another client wrote last is lost."""
    before = await stored(engine)
    outcome = me.redo() if redo else me.undo()
    await flush(engine, me)
    after = await stored(engine)
    if outcome is None:
        return
    for cid, rec in before.items():
        now = after.get(cid)
        if now is None:
            continue  # my undo deleted a record I had inserted
        for name, spec in BOARD.collections["cards"].fields.items():
            theirs = rec.fw.get(name) not in ("me", None) and rec.fv.get(name, 0) > 1
            if not theirs:
                continue
            if spec.kind in ("lww", "manual", "custom"):
                assert now.data[name] == rec.data[name], (cid, name)
            elif spec.kind == "text":
                assert _tokens(rec.data[name]) <= _tokens(now.data[name]), (cid, name)
        for key, (_, adder) in rec.adds.get("labels", {}).items():
            if adder not in ("me", None):
                assert key in {set_key(v) for v in now.data["labels"]}, (cid, key)


async def interleave(steps: list[tuple[str, int, Any]]) -> None:
    engine = await seed()
    me = await replica(engine, "me")
    others = [await replica(engine, "o1"), await replica(engine, "o2")]
    everyone = [me, *others]
    for kind, who, arg in steps:
        if kind == "me":
            act(me, arg, "me")
        elif kind == "other":
            act(others[who], arg, f"o{who + 1}.")
        elif kind == "sync":
            await flush(engine, everyone[who])
        elif arg:  # undo/redo with everything seen: check (b)
            for _ in range(2):
                for r in everyone:
                    await flush(engine, r)
            await check_undo_keeps_theirs(engine, me, kind == "redo")
        else:  # undo/redo with whatever this replica knows
            outcome = me.undo() if kind == "undo" else me.redo()
            note(f"{kind}: {outcome}")
    for _ in range(3):
        for r in everyone:
            await flush(engine, r)
    for r in everyone:
        assert r.pending == [], r.client_id
        snap = await engine.snapshot("user", r.queries)
        expected = sorted((x["id"], x["data"]) for x in snap.results["q"])
        held = sorted((x.pop("id"), x) for x in r.query(r.queries["q"]))
        assert held == expected, f"{r.client_id} diverged"


@settings(max_examples=600, deadline=None)
@given(st.lists(step, min_size=5, max_size=40))
def test_undo_redo_interleaved_with_others_keeps_theirs_and_converges(
    steps: list[tuple[str, int, Any]],
) -> None:
    asyncio.run(interleave(steps))
