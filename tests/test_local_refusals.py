"""The Python client refuses, before any round trip, every edit of the conformance kit's
local_refusals.json (tests/fixtures/protocol/, written by
``tests/gen_local_refusals_fixture.py`` from the server's own refusals) with exactly the
server's error; the browser client runs the same file
(``syncline/static/test/local_refusals.test.js``)."""

from __future__ import annotations

from typing import Any

import pytest

from syncline import MutationRefused
from syncline.client import Client

from .gen_local_refusals_fixture import generate
from .kit import LOCAL_REFUSALS_PATH, assert_current, load
from .schemas import BOARD

FIXTURE = load(LOCAL_REFUSALS_PATH)


def test_the_committed_fixture_is_what_the_server_answers_now() -> None:
    assert_current(LOCAL_REFUSALS_PATH, generate(), "gen_local_refusals_fixture")


def test_the_fixture_covers_each_kind_of_refusal() -> None:
    messages = [c["refusal"]["message"] for c in FIXTURE["cases"]]
    for words in (
        "unknown collection",
        "unknown field",
        "incr needs a counter",
        "add needs a set",
        "remove needs a set",
        "a counter changes only by increments",
        "a set changes only by add and remove",
    ):
        assert any(words in m for m in messages), words
    ops = {c["local"]["op"] for c in FIXTURE["cases"]}
    assert ops == {"insert", "update", "delete", "incr", "add", "remove"}


def edit(client: Client, op: dict[str, Any]) -> None:
    kind, c, rid = op["op"], op["c"], op["id"]
    if kind == "insert":
        client.insert(c, rid, **op["fields"])
    elif kind == "update":
        client.update(c, rid, **op["set"])
    elif kind == "delete":
        client.delete(c, rid)
    elif kind == "incr":
        client.increment(c, rid, op["field"], op["by"])
    else:
        getattr(client, kind)(c, rid, op["field"], *op["values"])


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=lambda c: c["refusal"]["message"][:70])
async def test_the_client_refuses_it_locally_with_the_servers_error(case: dict[str, Any]) -> None:
    # Port 9 (discard) never answers: nothing here may need the server.
    client = Client("ws://127.0.0.1:9/sync", BOARD, client_id="kit-refusals-py")
    client.hydrate(FIXTURE["hydrate"])
    before = client.replica.view().copy()
    with pytest.raises(MutationRefused) as info:
        edit(client, case["local"])
    assert info.value.to_wire() == case["refusal"]
    assert client.pending == [] and client.replica.next_mutation_id == 1
    assert client.replica.view() == before
    await client.close()
