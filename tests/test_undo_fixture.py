"""The Python replica runs every case of the conformance kit's undo.json (written by
``tests/gen_undo_fixture.py``); ``syncline/static/test/undo_fixture.test.js`` runs the
same file against the browser's replica."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import pytest

from syncline import Replica
from syncline.protocol.client import mut_frame

from .gen_undo_fixture import apply_edit, generate
from .kit import UNDO_PATH, assert_current, load
from .schemas import BOARD

FIXTURE = load(UNDO_PATH)


def test_the_committed_undo_fixture_is_what_python_computes_now() -> None:
    assert_current(UNDO_PATH, generate(), "gen_undo_fixture")


def test_the_undo_fixture_covers_every_policy_insert_delete_and_redo() -> None:
    names = " ".join(c["name"] for c in FIXTURE["cases"])
    for word in ("lww", "custom", "counter", "set", "text", "manual", "insert", "delete", "typing"):
        assert word in names, word
    steps = [s for c in FIXTURE["cases"] for s in c["steps"]]
    assert any(s.get("redo") for s in steps)
    assert any(s.get("skipped") for s in steps)
    assert any(s.get("conflicts") for s in steps)


def _sent(replica: Replica, before: set[int]) -> list[dict[str, Any]]:
    out = []
    for m in replica.unacked():
        if m.id not in before:
            frame = mut_frame(m)
            frame.pop("t")
            out.append(frame)
    return out


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=lambda c: c["name"])
def test_undo_fixture_case(case: dict[str, Any]) -> None:
    now = [0.0]
    replica = Replica(BOARD, FIXTURE["client"], clock=lambda: now[0])
    for i, step in enumerate(case["steps"]):
        where = f"{case['name']} step {i}"
        now[0] = step.get("at", now[0])
        before = {m.id for m in replica.unacked()}
        if "hydrate" in step:
            replica.load_snapshot(step["hydrate"])
        elif "local" in step:
            with nullcontext() if step.get("typed") else replica.undo_group():
                for edit in step["local"]:
                    apply_edit(replica, edit)
            assert _sent(replica, before) == step["sent"], where
        elif "undo" in step or "redo" in step:
            outcome = replica.undo() if "undo" in step else replica.redo()
            assert _sent(replica, before) == step["sent"], where
            skipped = [s.to_wire() for s in outcome.skipped] if outcome else []
            conflicts = [c.to_wire() for c in outcome.conflicts] if outcome else []
            assert skipped == step["skipped"], where
            assert conflicts == step["conflicts"], where
        elif "ack" in step:
            replica.apply_ack(step["ack"])
        elif "changes" in step:
            replica.apply_changes(step["changes"])
        elif "expect" in step:
            expect = step["expect"]
            view = {rid: replica.get("cards", rid) for rid in expect["view"]}
            assert view == expect["view"], where
            assert replica.can_undo == expect["can_undo"], where
            assert replica.can_redo == expect["can_redo"], where
            drafts = [[c.to_wire() for c in d.conflicts] for d in replica.drafts]
            assert drafts == expect["drafts"], where
