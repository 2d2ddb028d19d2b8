"""Declaring a schema: markers, validation errors that name the place, the schema hash."""

from __future__ import annotations

import re
import uuid
from typing import Annotated

import pytest
from pydantic import BaseModel

from syncline import (
    Collection,
    Counter,
    InvalidMutation,
    Queryable,
    QueryError,
    Ref,
    Schema,
    SchemaError,
    Set,
    Text,
    new_id,
)

from .schemas import BOARD, Board, Card, List


def test_markers_become_field_policies() -> None:
    cards = BOARD["cards"]
    kinds = {name: spec.kind for name, spec in cards.fields.items()}
    assert kinds == {
        "list_id": "lww",
        "title": "lww",
        "description": "text",
        "votes": "counter",
        "labels": "set",
        "status": "manual",
        "slug": "custom",
        "rank": "lww",
        "done": "lww",
    }
    assert cards.fields["list_id"].ref == "lists"
    assert cards.queryable == {"list_id", "status", "rank", "done"}
    assert cards.fields["list_id"].required and not cards.fields["title"].required


def test_validate_normalizes_defaults_and_sets() -> None:
    data = BOARD["cards"].validate("c1", {"list_id": "l1", "labels": ["b", "a", "b"]})
    assert data["labels"] == ["a", "b"]
    assert data["votes"] == 0 and data["status"] == "todo"


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"list_id": 5}, "list_id", "string"),
        ({"list_id": "l1", "votes": "3"}, "votes", "integer"),
        ({"list_id": "l1", "colour": "red"}, "colour", "unknown field"),
        ({}, "list_id", "required"),
    ],
)
def test_invalid_data_names_collection_id_and_field(
    data: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(InvalidMutation, match=message) as info:
        BOARD["cards"].validate("c1", data)
    assert (info.value.collection, info.value.record_id, info.value.field) == ("cards", "c1", field)
    assert str(info.value).startswith(f"cards/'c1'.{field}: ")


def test_a_model_may_not_declare_id() -> None:
    class Bad(BaseModel):
        id: str

    with pytest.raises(SchemaError, match="must not declare 'id'"):
        Collection("bad", Bad)


def test_wrong_marker_types_are_refused() -> None:
    class BadCounter(BaseModel):
        n: Annotated[str, Counter()]

    class BadText(BaseModel):
        t: Annotated[int, Text()]

    class BadSet(BaseModel):
        s: Annotated[str, Set()]

    class BadQuery(BaseModel):
        q: Annotated[list[str], Queryable()]

    for model, message in [
        (BadCounter, "Counter"),
        (BadText, "Text"),
        (BadSet, "Set"),
        (BadQuery, "Queryable"),
    ]:
        with pytest.raises(SchemaError, match=message):
            Collection("x", model)


def test_references_must_name_a_declared_collection() -> None:
    class Orphan(BaseModel):
        parent: Annotated[str, Ref("nowhere")]

    with pytest.raises(SchemaError, match="unknown collection 'nowhere'"):
        Schema([Collection("orphans", Orphan)])


def test_duplicate_collections_are_refused() -> None:
    with pytest.raises(SchemaError, match="declared twice"):
        Schema([Collection("boards", Board), Collection("boards", Board)])


def test_unknown_collection_is_a_clear_error() -> None:
    with pytest.raises(QueryError, match=r"unknown collection 'nope'; declared: \['boards'"):
        BOARD["nope"]


class TestSchemaHash:
    def test_is_stable(self) -> None:
        assert (
            Schema([Collection("boards", Board)]).hash == Schema([Collection("boards", Board)]).hash
        )

    def test_ignores_a_new_optional_field(self) -> None:
        class Board2(Board):
            colour: str = "blue"

        assert (
            Schema([Collection("boards", Board2)]).hash
            == Schema([Collection("boards", Board)]).hash
        )

    def test_ignores_a_new_collection_whose_fields_have_defaults(self) -> None:
        class Note(BaseModel):
            text: str = ""

        before = Schema([Collection("boards", Board)])
        after = Schema([Collection("boards", Board), Collection("notes", Note)])
        assert before.hash == after.hash

    def test_changes_with_a_new_required_field(self) -> None:
        class Board2(Board):
            colour: str

        assert (
            Schema([Collection("boards", Board2)]).hash
            != Schema([Collection("boards", Board)]).hash
        )

    def test_changes_with_a_required_field_type_or_policy(self) -> None:
        class A(BaseModel):
            n: int

        class B(BaseModel):
            n: str

        class C(BaseModel):
            n: Annotated[int, Counter()]

        hashes = {Schema([Collection("x", m)]).hash for m in (A, B, C)}
        assert len(hashes) == 3

    def test_changes_with_the_revision(self) -> None:
        assert Schema(
            [Collection("lists", List), Collection("boards", Board)], revision=1
        ).hash != (Schema([Collection("lists", List), Collection("boards", Board)]).hash)


def test_new_id_is_a_sortable_uuid7() -> None:
    ids = [new_id() for _ in range(200)]
    assert len(set(ids)) == 200
    for i in ids:
        parsed = uuid.UUID(i)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert re.fullmatch(r"[0-9a-f-]{36}", i)
    assert ids[0][:8] <= ids[-1][:8]


def test_card_model_is_plain_pydantic() -> None:
    card = Card(list_id="l1", labels=frozenset({"x"}))
    assert card.votes == 0 and "x" in card.labels


def test_describe_gives_clients_each_fields_policy_and_default() -> None:
    cards = BOARD.describe()["cards"]
    assert cards["list_id"] == {
        "kind": "lww",
        "type": "str",
        "queryable": True,
        "required": True,
        "ref": "lists",
    }
    assert cards["description"] == {"kind": "text", "type": "str", "default": ""}
    assert cards["labels"] == {"kind": "set", "type": "frozenset[str]", "default": []}
    assert cards["status"]["kind"] == "manual" and cards["votes"]["default"] == 0
