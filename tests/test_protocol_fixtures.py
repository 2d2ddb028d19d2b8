"""Every conformance fixture in tests/fixtures/protocol/ (format: its README.md), run
against the Python client protocol. A client in another language runs the same files.

The runner builds its schema from the kit's schema.json, as a runner in another language
must; the tests below check that file against ``tests/schemas.py`` and the hash algorithm
the README specifies against ``Schema.hash``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import create_model

from syncline import (
    LWW,
    Collection,
    Counter,
    Manual,
    Merge,
    Queryable,
    Ref,
    Replica,
    Schema,
    Set,
    Text,
)
from syncline.client import ClientEvent, ClientProtocol

from .gen_schema_fixture import CUSTOM_MERGES, generate, hash_input, render
from .kit import SCHEMA_PATH, assert_current, load, scenarios
from .schemas import BOARD

FIXTURES = scenarios()

# The kit's type labels (schema.json "type") as Python annotations.
TYPES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool | None": bool | None,
    "str | None": str | None,
    "frozenset[str]": frozenset[str],
    "list[str]": list[str],
}
POLICIES = {"lww": LWW, "counter": Counter, "text": Text, "set": Set, "manual": Manual}


def schema_from_kit(kit: dict[str, Any]) -> Schema:
    """A Schema built from the kit's form of one (README.md, schema.json)."""
    return Schema(
        [
            Collection(name, _model(name, c["fields"]), on_update_deleted=c["on_update_deleted"])
            for name, c in kit["collections"].items()
        ],
        revision=kit["revision"],
    )


def _model(collection: str, fields: dict[str, Any]) -> Any:
    declared: dict[str, Any] = {}
    for name, spec in fields.items():
        markers: list[Any] = []
        if spec["kind"] == "custom":
            markers.append(Merge(CUSTOM_MERGES[spec["merge"]][0]))
        else:
            markers.append(POLICIES[spec["kind"]]())
        if spec["queryable"]:
            markers.append(Queryable())
        if spec["ref"] is not None:
            markers.append(Ref(spec["ref"]))
        default = spec.get("default", ...)
        if spec["type"].startswith("frozenset"):
            default = frozenset(default)
        declared[name] = (Annotated[TYPES[spec["type"]], *markers], default)
    return create_model(collection.capitalize(), **declared)


KIT_SCHEMA = schema_from_kit(load(SCHEMA_PATH))

# Events a fixture checks; the others ("changed", "ack", "status") are this client's own.
CHECKED_EVENTS = frozenset(
    {"conflict", "overwritten", "merged", "rejected", "dropped", "reset", "reload", "error"}
)


def test_there_are_fixtures() -> None:
    assert len(FIXTURES) >= 9


def test_the_kit_schema_is_what_tests_schemas_declares() -> None:
    assert_current(SCHEMA_PATH, generate(), "gen_schema_fixture", render)


def test_the_schema_built_from_the_kit_is_board() -> None:
    assert KIT_SCHEMA.hash == BOARD.hash
    assert KIT_SCHEMA.describe() == BOARD.describe()
    for name, coll in BOARD.collections.items():
        built = KIT_SCHEMA[name]
        assert built.on_update_deleted == coll.on_update_deleted
        assert built.fields == coll.fields, name  # names, policies (custom fn too), types


def test_the_readme_gives_the_kit_schema_hash_as_its_test_vector() -> None:
    readme = (SCHEMA_PATH.parent / "README.md").read_text(encoding="utf-8")
    kit = load(SCHEMA_PATH)
    assert f"hash_input = {kit['hash_input']}\nhash       = {kit['hash']}\n" in readme
    assert all(f"`{v['hash']}`" in readme for v in kit["hash_vectors"])


@pytest.mark.parametrize("index", range(1 + len(load(SCHEMA_PATH)["hash_vectors"])))
def test_the_schema_hash_is_computed_as_the_kit_specifies(index: int) -> None:
    kit = load(SCHEMA_PATH)
    vector = [kit, *kit["hash_vectors"]][index]
    assert hash_input(vector) == vector["hash_input"]
    digest = hashlib.sha256(vector["hash_input"].encode("utf-8")).hexdigest()[:16]
    assert digest == vector["hash"] == schema_from_kit(vector).hash


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
        assert fixture["schema"] == KIT_SCHEMA.hash, "the fixture was written for another schema"
        self.steps: list[dict[str, Any]] = fixture["steps"]
        self.replica = Replica(KIT_SCHEMA, fixture["client"])
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

    def do_join(self, arg: dict[str, Any]) -> None:
        self.protocol.join(arg["room"], arg["state"])

    def do_presence(self, arg: dict[str, Any]) -> None:
        self.protocol.presence(arg["room"], arg["state"])

    def do_leave(self, room: str) -> None:
        self.protocol.leave(room)

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

    def do_expect_members(self, rooms: dict[str, dict[str, Any] | None]) -> None:
        for room, members in rooms.items():
            view = self.protocol.rooms.get(room)
            if members is None:
                assert view is None, f"room {room} is still joined"
                continue
            assert view is not None, f"room {room} is not joined"
            actual = {k: {"user": m.user, "state": m.state} for k, m in view.members.items()}
            assert actual == members, f"members of {room} are {actual}"

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
