"""Typed records: ``client.get(Model, id)``, ``client.query(Model, where)`` and
``tx.get(Model, id)`` give the application's own models, so ``mypy --strict`` accepts a
user's script (``tests/typed_usage/``) and reports its type errors; the scripts also
run, against a real engine and client."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from mypy import api
from pydantic import BaseModel

from syncline import (
    Collection,
    Engine,
    InvalidMutation,
    MemoryStore,
    Query,
    QueryError,
    Replica,
    Schema,
    SchemaError,
)
from syncline.client import Client
from syncline.replica import Entry
from syncline.ssr import read_page

from .schemas import BOARD, Board, Card

USAGE = Path(__file__).parent / "typed_usage"
sys.path.insert(0, str(USAGE))
import notes_app  # noqa: E402  (the user's script, importable as the user runs it)


def mypy_strict(script: Path, tmp_path: Path) -> tuple[int, list[str]]:
    """mypy --strict on ``script`` as a user would run it: no plugin, none of this
    project's settings; the scripts' folder on the path."""
    config = tmp_path / "mypy.ini"
    config.write_text(f"[mypy]\nmypy_path = {USAGE}\n")
    cache = Path(__file__).parent.parent / ".mypy_cache" / "typed_usage"
    out, err, status = api.run(
        ["--strict", "--config-file", str(config), "--cache-dir", str(cache), str(script)]
    )
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert not err, err
    return status, errors


def test_mypy_strict_accepts_a_script_using_the_typed_api(tmp_path: Path) -> None:
    status, errors = mypy_strict(USAGE / "notes_app.py", tmp_path)
    assert errors == [] and status == 0


def test_mypy_strict_reports_the_type_errors_of_a_script(tmp_path: Path) -> None:
    script = USAGE / "mistakes.py"
    marked = {
        n for n, line in enumerate(script.read_text().splitlines(), start=1) if "# error:" in line
    }
    status, errors = mypy_strict(script, tmp_path)
    lines = {int(m.group(1)) for e in errors if (m := re.search(r"mistakes\.py:(\d+): ", e))}
    assert status == 1 and len(marked) == 3
    assert lines == marked, errors
    assert any('got "Note | None", expected "str"' in e for e in errors), errors


async def test_the_script_runs_in_a_client_and_on_the_server() -> None:
    engine = Engine(notes_app.schema, MemoryStore())
    await notes_app.seed(engine)
    assert await notes_app.like(engine, "n2") == 1
    with pytest.raises(LookupError):
        await notes_app.like(engine, "nope")
    page = await read_page(engine, "user", {"general": {"c": "notes"}})
    client = Client("ws://127.0.0.1:9/sync", notes_app.schema, client_id="typed-client")
    client.hydrate(page.to_wire())
    assert notes_app.headlines(client, "general") == ["n2:  ['a'] 1", "n1: hi [] 0"]
    client.increment("notes", "n1", "likes", 2)  # pending edits show in typed reads too
    assert notes_app.likes(client, "n1") == 2 and notes_app.likes(client, "nope") == 0
    await client.close()


async def test_typed_reads_are_model_instances_and_string_reads_stay_dicts() -> None:
    engine = Engine(BOARD, MemoryStore())
    async with engine.transaction("admin") as tx:
        tx.apply(*notes_seed())
        card = await tx.get(Card, "c1")  # sees this transaction's own ops
        assert isinstance(card, Card) and card.labels == frozenset({"x"})
        assert await tx.get("cards", "c1") == {**card.model_dump(mode="json"), "id": "c1"}
        assert await tx.get(Card, "nope") is None
    replica = Replica(BOARD, "typed-replica")
    queries = {"cards": Query.parse({"c": "cards"}, BOARD)}
    replica.load_snapshot((await engine.snapshot("admin", queries)).to_wire())
    assert replica.get(Card, "c1") == card
    rows = replica.query(Card, {"order": [["rank", "desc"]]})
    assert [r.id for r in rows] == ["c2", "c1"] and all(isinstance(r, Entry) for r in rows)
    assert rows[1] == ("c1", card) and rows[1].record.title == "Ship"
    assert (
        replica.query(Card, Query.parse({"c": "cards", "where": {"rank": 2}}, BOARD))[0].id == "c2"
    )
    replica.delete("cards", "c1")
    assert replica.get(Card, "c1") is None and [r.id for r in replica.query(Card)] == ["c2"]


def notes_seed() -> list[Any]:
    from syncline import Insert

    return [
        Insert(c="boards", id="b1", fields={"name": "B"}),
        Insert(c="lists", id="l1", fields={"board_id": "b1"}),
        Insert(c="cards", id="c1", fields={"list_id": "l1", "title": "Ship", "labels": ["x"]}),
        Insert(c="cards", id="c2", fields={"list_id": "l1", "rank": 2}),
    ]


def test_a_model_must_be_the_model_of_exactly_one_collection() -> None:
    class Stray(BaseModel):
        name: str = ""

    replica = Replica(BOARD, "typed-replica")
    with pytest.raises(SchemaError, match=r"no collection of this schema holds Stray records"):
        replica.get(Stray, "x")
    twice = Schema([Collection("boards", Board), Collection("archive", Board)])
    with pytest.raises(SchemaError, match=r"Board is the model of several collections"):
        Replica(twice, "typed-replica").query(Board)
    assert Replica(twice, "typed-replica").get("archive", "x") is None  # by name: fine


def test_a_typed_query_reads_its_models_collection_only() -> None:
    replica = Replica(BOARD, "typed-replica")
    with pytest.raises(QueryError, match=r"the query reads 'boards' but Card is the model"):
        replica.query(Card, {"c": "boards"})
    with pytest.raises(QueryError, match="not queryable"):
        replica.query(Card, {"where": {"title": "x"}})


def test_a_local_view_that_is_not_the_model_is_refused_by_name() -> None:
    replica = Replica(BOARD, "typed-replica")
    replica.insert("cards", "c1", list_id="l1", rank="high")  # the server will refuse it
    with pytest.raises(InvalidMutation, match=r"cards/'c1'\.rank: does not read as Card"):
        replica.get(Card, "c1")
