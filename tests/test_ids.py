"""Names with U+0000 or a lone surrogate (record ids, collection and field names, client
and query ids) are refused where they are parsed, for good, naming the place, on every
store: PostgreSQL cannot hold U+0000, so without this a mutation naming one was answered
``retry`` forever and blocked its client's queue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from syncline import Engine, Insert, InvalidMutation
from syncline.protocol.frames import (
    Limits,
    ProtocolError,
    decode_client_frame,
    decode_mutate_body,
    peek,
)
from syncline.protocol.server import Mutate, ServerProtocol
from syncline.store import Store

from .live import RawClient
from .schemas import BOARD
from .test_auth import SCHEMA as NOTES_SCHEMA
from .test_auth import note, tenants_server

BOARD_INSERT = {"op": "insert", "c": "boards", "id": "b1", "fields": {"name": "B"}}

REFUSED_OPS: list[tuple[dict[str, Any], str]] = [
    ({**BOARD_INSERT, "id": "b\x00"}, "ops.0.insert.id"),
    ({**BOARD_INSERT, "id": "b\ud800"}, "ops.0.insert.id"),
    ({**BOARD_INSERT, "c": "boa\x00rds"}, "ops.0.insert.c"),
    ({**BOARD_INSERT, "fields": {"name\x00": "B"}}, "ops.0.insert.fields.name\\u0000"),
    (
        {"op": "update", "c": "boards", "id": "b1", "set": {"x\x00": 1}, "base": {"x\x00": 1}},
        "ops.0.update.set.x\\u0000",
    ),
    ({"op": "incr", "c": "boards", "id": "b1", "field": "v\x00"}, "ops.0.incr.field"),
    ({"op": "add", "c": "boards", "id": "b1", "field": "t\udfff", "values": []}, "ops.0.add.field"),
    # set elements are keys of the adds they remember; a lone surrogate used to crash
    ({"op": "add", "c": "cards", "id": "c1", "field": "labels", "values": ["a\ud800"]}, "values.0"),
    (
        {"op": "remove", "c": "cards", "id": "c1", "field": "labels", "values": ["\udc00"]},
        "values.0",
    ),
]


@pytest.mark.parametrize(("op", "where"), REFUSED_OPS)
async def test_a_name_with_nul_or_a_lone_surrogate_is_refused_for_good_on_every_store(
    store: Store, op: dict[str, Any], where: str
) -> None:
    engine = Engine(BOARD, store)
    async with engine.transaction("admin") as tx:  # a card for the set ops to reach
        tx.apply(
            Insert(c="boards", id="b0", fields={"name": "B"}),
            Insert(c="lists", id="l0", fields={"board_id": "b0"}),
            Insert(c="cards", id="c1", fields={"list_id": "l0"}),
        )
    refused = await engine.apply("alice", "tab-ids-1", {"id": 1, "ops": [op]})
    assert refused.status == "rejected" and refused.error is not None, refused
    assert refused.error["code"] == "invalid"
    assert where in refused.error["message"], refused.error
    kept = await engine.apply("alice", "tab-ids-1", {"id": 1, "ops": [op]})
    assert kept.replay and kept.error == refused.error  # the id is used up, the reason kept
    nxt = await engine.apply("alice", "tab-ids-1", {"id": 2, "ops": [BOARD_INSERT]})
    assert (nxt.status, nxt.seq) == ("applied", 2)  # the queue moves on


@pytest.mark.parametrize("client_id", ["tab\x00ids-1", "tab\ud800ids-1"])
async def test_a_client_id_with_nul_or_a_lone_surrogate_is_refused(
    store: Store, client_id: str
) -> None:
    engine = Engine(BOARD, store)
    with pytest.raises(InvalidMutation, match="client id may not contain"):
        await engine.apply("alice", client_id, {"id": 1, "ops": [BOARD_INSERT]})


@pytest.mark.parametrize(
    ("frame", "where"),
    [
        ({"t": "hello", "v": 1, "client": "tab\x00ids-1", "schema": "x"}, "hello frame: client"),
        ({"t": "sub", "queries": {"q\x00": {"c": "boards"}}}, "sub frame: queries"),
        ({"t": "unsub", "queries": ["q\x00"]}, "unsub frame: queries.0"),
    ],
)
def test_frames_refuse_client_and_query_ids_with_nul_naming_the_field(
    frame: dict[str, Any], where: str
) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client_frame(frame, Limits())
    assert info.value.code == "bad_frame"
    assert str(info.value).startswith(where) and "U+0000" in str(info.value), str(info.value)
    body = b'{"client": "tab\\u0000ids-1", "mut": {"id": 1, "ops": []}}'
    with pytest.raises(ProtocolError, match="client: may not contain the NUL"):
        decode_mutate_body(body)


LONE = '{"t":"mut","id":1,"ops":[{"op":"insert","c":"boards","id":"b\\ud800","fields":{}}]}'
"""A mutation as ``JSON.stringify`` writes a lone surrogate: an escape msgspec refuses."""


def test_a_mut_frame_with_a_lone_surrogate_escape_is_refused_for_its_id() -> None:
    assert peek(LONE.encode()) == ("mut", 1)
    p = ServerProtocol(Limits())
    p.receive(
        '{"t":"hello","v":1,"client":"tab-ids-1","schema":"%s"}' % BOARD.hash,  # noqa: UP031
        0.0,
    )
    event = p.receive(LONE, 0.0)
    assert isinstance(event, Mutate) and event.refusal is not None
    assert event.refusal.code == "bad_json" and "lone surrogate" in str(event.refusal)


async def test_over_a_live_server_bad_names_use_up_their_ids_and_the_queue_moves_on(
    tmp_path: Path,
) -> None:
    async with tenants_server(tmp_path) as (host, _, _):
        async with RawClient.connect(host, NOTES_SCHEMA, auth={"token": "alice-token"}) as alice:
            first = await alice.mutate([note("n\x00", "acme")], 1)
            assert first["t"] == "reject" and first["permanent"] is True, first
            assert "ops.0.insert.id" in first["message"]
            await alice.send(LONE.replace("boards", "notes").replace('"id":1', '"id":2'))
            second = await alice.expect("reject")
            assert (second["mid"], second["permanent"], second["code"]) == (2, True, "bad_json")
            third = await alice.mutate([note("n1", "acme")], 3)
            assert third["t"] == "ack" and third["status"] == "applied", third
        async with RawClient.connect(
            host, NOTES_SCHEMA, client_id="x\x00bad-tab", hello=False
        ) as c:
            answer = await c.hello(auth={"token": "alice-token"})
            assert answer["t"] == "error" and answer["code"] == "bad_frame", answer
            assert "client" in answer["message"]
        async with httpx.AsyncClient(
            base_url=f"http://{host}", headers={"authorization": "Bearer alice-token"}
        ) as http:
            pulled = await http.get(
                "/sync/pull", params={"queries": '{"q\\u0000": {"c": "notes"}}'}
            )
            assert pulled.status_code == 400 and "query id may not" in pulled.json()["message"]
