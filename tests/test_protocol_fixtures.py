"""Every conformance fixture in tests/fixtures/protocol/ (format: its README.md), run
against the Python client protocol. A client in another language runs the same files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from syncline import Replica
from syncline.client import ClientEvent, ClientProtocol

from .schemas import BOARD

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "protocol").glob("*.json"))

# Events a fixture checks; the others ("changed", "ack", "status") are this client's own.
CHECKED_EVENTS = frozenset(
    {"conflict", "overwritten", "merged", "rejected", "dropped", "reset", "reload", "error"}
)


def test_there_are_fixtures() -> None:
    assert len(FIXTURES) >= 9


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixture(path: Path) -> None:
    fixture = json.loads(path.read_text(encoding="utf-8"))
    Runner(fixture).run()


def subset(expected: Any, actual: Any) -> bool:
    """Objects match when every expected key matches; anything else must be equal."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and subset(v, actual[k]) for k, v in expected.items()
        )
    return bool(expected == actual)


class Runner:
    def __init__(self, fixture: dict[str, Any]) -> None:
        assert fixture["schema"] == BOARD.hash, "the fixture was written for another BOARD schema"
        self.steps: list[dict[str, Any]] = fixture["steps"]
        self.replica = Replica(BOARD, fixture["client"])
        self.protocol = ClientProtocol(self.replica, credentials=fixture.get("auth"))
        self.now = 0.0
        self.out: list[dict[str, Any]] = []
        self.events: list[ClientEvent] = []

    def run(self) -> None:
        for i, step in enumerate(self.steps):
            ((kind, arg),) = step.items()
            try:
                getattr(self, f"do_{kind}")(arg)
                self.out += self.protocol.data_to_send(self.now)
            except AssertionError as exc:
                raise AssertionError(f"step {i} {kind}: {exc}") from None
        self.out += self.protocol.data_to_send(self.now)
        assert self.out == [], f"frames sent that no step expected: {self.out}"
        unchecked = [e for e in self.events if e.kind in CHECKED_EVENTS]
        assert unchecked == [], f"events that no step expected: {unchecked}"

    # --- inputs -------------------------------------------------------------------------

    def do_hydrate(self, state: dict[str, Any]) -> None:
        self.events += self.protocol.hydrate(state)

    def do_subscribe(self, queries: dict[str, Any]) -> None:
        self.protocol.subscribe(queries)

    def do_connect(self, _: object) -> None:
        self.protocol.connection_made()

    def do_disconnect(self, _: object) -> None:
        self.protocol.connection_lost()

    def do_in(self, frame: dict[str, Any]) -> None:
        self.events += self.protocol.receive(frame, self.now)

    def do_advance(self, seconds: float) -> None:
        self.now += seconds

    def do_local(self, op: dict[str, Any]) -> None:
        if "batch" in op:
            with self.replica.batch(op.get("mode", "whole")) as b:
                for one in op["batch"]:
                    self._apply(b, one)
        else:
            self._apply(self.replica, op)

    def _apply(self, target: Any, op: dict[str, Any]) -> None:
        kind, c, rid = op["op"], op["c"], op["id"]
        if kind == "insert":
            target.insert(c, rid, **op["fields"])
        elif kind == "update":
            target.update(c, rid, **op["set"])
        elif kind == "delete":
            target.delete(c, rid)
        elif kind == "incr":
            target.increment(c, rid, op["field"], op.get("by", 1))
        elif kind in ("add", "remove"):
            getattr(target, kind)(c, rid, op["field"], *op["values"])
        else:
            raise AssertionError(f"unknown local op {kind!r}")

    def do_resolve(self, arg: dict[str, Any]) -> None:
        self.replica.resolve(self.replica.drafts[arg["draft"]], arg["choices"])

    # --- expectations -------------------------------------------------------------------

    def do_expect_out(self, frames: list[dict[str, Any]]) -> None:
        self.out += self.protocol.data_to_send(self.now)
        sent, self.out = self.out, []
        assert sent == frames, f"sent {sent}"

    def do_expect_view(self, view: dict[str, dict[str, Any]]) -> None:
        for collection, records in view.items():
            for rid, fields in records.items():
                actual = self.replica.get(collection, rid)
                if fields is None:
                    assert actual is None, f"{collection}/{rid} is visible: {actual}"
                else:
                    assert actual is not None, f"{collection}/{rid} is not visible"
                    assert subset(fields, actual), f"{collection}/{rid} is {actual}"

    def do_expect_pending(self, ids: list[int]) -> None:
        assert [p.mutation.id for p in self.replica.pending] == ids

    def do_expect_cursor(self, cursor: str) -> None:
        assert str(self.replica.cursor) == cursor

    def do_expect_state(self, state: str) -> None:
        assert self.protocol.state.value == state

    def do_expect_synced(self, synced: bool) -> None:
        assert self.protocol.synced is synced

    def do_expect_drafts(self, drafts: list[dict[str, Any]]) -> None:
        actual = [
            {"mutation_id": d.mutation_id, "conflicts": [c.to_wire() for c in d.conflicts]}
            for d in self.replica.drafts
        ]
        assert actual == drafts, f"drafts are {actual}"

    def do_expect_events(self, expected: list[dict[str, Any]]) -> None:
        got = [_event_wire(e) for e in self.events if e.kind in CHECKED_EVENTS]
        self.events = []
        assert len(got) == len(expected) and all(
            subset(e, g) for e, g in zip(expected, got, strict=True)
        ), f"events were {got}"


def _event_wire(event: ClientEvent) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": event.kind}
    if event.mutation_id is not None:
        out["mutation_id"] = event.mutation_id
    if event.fields:
        out["fields"] = list(event.fields)
    if event.error is not None:
        out["error"] = dict(event.error)
    if event.reason is not None:
        out["reason"] = event.reason
    return out
