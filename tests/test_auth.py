"""Authentication and authorization over a real server: two tenants never see each
other's records, forbidden writes change nothing, sessions end, grants change."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import pytest
import websockets
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from syncline import Collection, Engine, Queryable, Schema
from syncline.server.app import SynclineServer
from syncline.server.origins import OriginConfigError
from syncline.store.sqlite import SQLiteStore

from .live import RawClient, serve


@dataclass(frozen=True)
class User:
    name: str
    tenant: str


USERS = {"alice-token": User("alice", "acme"), "bob-token": User("bob", "globex")}
EXTRA_GRANTS: dict[str, set[str]] = {}  # user name -> other tenants it may read


class Note(BaseModel):
    tenant: Annotated[str, Queryable()]
    text: str = ""


def may_read(user: User, note: Mapping[str, Any]) -> bool:
    return note["tenant"] == user.tenant or note["tenant"] in EXTRA_GRANTS.get(user.name, set())


def may_write(
    user: User, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> bool:
    return all(r is None or r["tenant"] == user.tenant for r in (before, after))


SCHEMA = Schema([Collection("notes", Note, read=may_read, write=may_write)])
NOTES = {"notes": {"c": "notes"}}


def authenticate(conn: HTTPConnection, credentials: Mapping[str, Any] | None) -> User | None:
    token = (credentials or {}).get("token") or conn.headers.get("authorization", "").removeprefix(
        "Bearer "
    )
    return USERS.get(token)


@contextlib.asynccontextmanager
async def tenants_server(tmp_path: Path) -> AsyncIterator[tuple[str, Engine, SynclineServer]]:
    EXTRA_GRANTS.clear()
    store = SQLiteStore(tmp_path / "tenants.sqlite3")
    await store.open()
    engine = Engine(SCHEMA, store, principal_key=lambda u: u.name)
    sync = SynclineServer(engine, authenticate=authenticate)
    try:
        async with serve(Starlette(routes=sync.routes, lifespan=sync.lifespan)) as host:
            yield host, engine, sync
    finally:
        await store.close()


def note(rid: str, tenant: str, text: str = "") -> dict[str, Any]:
    return {"op": "insert", "c": "notes", "id": rid, "fields": {"tenant": tenant, "text": text}}


def ids(frame: dict[str, Any], qid: str = "notes") -> list[str]:
    if frame["t"] == "snapshot":
        return [r["id"] for r in frame["records"][qid]]
    return [i.get("id", "") for i in frame["q"].get(qid, [])]


async def test_a_hello_without_valid_credentials_is_refused(tmp_path: Path) -> None:
    async with tenants_server(tmp_path) as (host, _, _):
        async with RawClient.connect(host, SCHEMA, hello=False) as c:
            await c.send(
                {
                    "t": "hello",
                    "v": 1,
                    "client": "intruder-01",
                    "schema": SCHEMA.hash,
                    "auth": {"token": "forged"},
                }
            )
            error = await c.expect("error")
            assert error["code"] == "unauthorized"
            with pytest.raises(websockets.ConnectionClosed) as info:
                await c.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 4001


async def test_no_record_of_one_tenant_ever_reaches_the_other(tmp_path: Path) -> None:
    async with tenants_server(tmp_path) as (host, _, _):
        async with (
            RawClient.connect(host, SCHEMA, auth={"token": "alice-token"}) as alice,
            RawClient.connect(host, SCHEMA, auth={"token": "bob-token"}) as bob,
        ):
            assert (await alice.mutate([note("a1", "acme", "alice's")], 1))["t"] == "ack"
            assert (await bob.mutate([note("b1", "globex", "bob's")], 1))["t"] == "ack"
            # Whatever alice subscribes to, she gets acme's notes only.
            snap = await alice.subscribe(
                {
                    "notes": {"c": "notes"},
                    "theirs": {"c": "notes", "where": {"tenant": "globex"}},
                    "byid": {"c": "notes", "where": {"id": "b1"}},
                }
            )
            assert (ids(snap), ids(snap, "theirs"), ids(snap, "byid")) == (["a1"], [], [])
            cursor = str(alice.replica.cursor)
            # Live: bob's new note reaches bob's subscription, and nothing reaches alice.
            await bob.subscribe(NOTES)
            await bob.mutate([note("b2", "globex")], 2)
            bob_frame = await bob.expect("changes")
            assert ids(bob_frame) == ["b2"]
            await alice.mutate([note("a2", "acme")], 2)
            frames = []
            while alice.replica.cursor is None or alice.replica.cursor.seq < 4:
                frame = await alice.recv()
                alice.feed(frame)
                frames.append(frame)
            # Compare quoted ids: a cursor's random epoch may hold the letters "b2".
            assert '"b2"' not in orjson.dumps(frames).decode()
        # Resume: the changes since her old cursor hold acme's only.
        async with RawClient.connect(host, SCHEMA, auth={"token": "alice-token"}) as again:
            await again.send({"t": "sub", "queries": NOTES, "since": cursor})
            frame = await again.expect("changes")
            assert frame["from"] == cursor and ids(frame) == ["a2"]
        # HTTP pull, snapshot and long poll, likewise.
        async with httpx.AsyncClient(
            base_url=f"http://{host}", headers={"authorization": "Bearer alice-token"}
        ) as http:
            queries = orjson.dumps(NOTES).decode()
            pulled = (await http.get("/sync/pull", params={"queries": queries})).json()
            assert ids(pulled) == ["a1", "a2"]
            since = (
                await http.get(
                    "/sync/pull", params={"queries": queries, "since": cursor, "wait": 0}
                )
            ).json()
            assert ids(since) == ["a2"]
            async with httpx.AsyncClient(base_url=f"http://{host}") as anonymous:
                refused = await anonymous.get("/sync/pull", params={"queries": queries})
                assert refused.status_code == 401


async def test_forbidden_writes_are_refused_clearly_and_change_nothing(tmp_path: Path) -> None:
    async with tenants_server(tmp_path) as (host, engine, _):
        async with (
            RawClient.connect(host, SCHEMA, auth={"token": "bob-token"}) as bob,
            RawClient.connect(host, SCHEMA, auth={"token": "alice-token"}) as alice,
        ):
            await bob.mutate([note("b1", "globex", "original")], 1)
            head = (await engine.head()).seq
            attempts = [
                [
                    {
                        "op": "update",
                        "c": "notes",
                        "id": "b1",
                        "set": {"text": "defaced"},
                        "base": {"text": 1},
                    }
                ],
                [
                    {
                        "op": "update",
                        "c": "notes",
                        "id": "b1",
                        "set": {"tenant": "acme"},
                        "base": {"tenant": 1},
                    }
                ],
                [{"op": "delete", "c": "notes", "id": "b1"}],
                [note("a9", "globex")],  # writing into another tenant
            ]
            # alice may not read b1: those answers are a missing record's (invariant 10)
            expected = [("not_found", "no such record")] * 3
            expected.append(("forbidden", "the write rule refused this change"))
            for mid, (ops, (code, message)) in enumerate(
                zip(attempts, expected, strict=True), start=1
            ):
                frame = await alice.mutate(ops, mid)
                assert frame["t"] == "reject" and frame["permanent"] is True
                assert frame["code"] == code and message in frame["message"], frame
            assert (await engine.head()).seq == head
            snap = await bob.subscribe(NOTES)
            assert snap["records"]["notes"][0]["data"]["text"] == "original"


async def test_a_client_id_cannot_be_taken_over_by_another_principal(tmp_path: Path) -> None:
    async with tenants_server(tmp_path) as (host, _, _):
        async with RawClient.connect(
            host, SCHEMA, client_id="shared-tab-01", auth={"token": "alice-token"}
        ) as a:
            await a.mutate([note("a1", "acme")], 1)
        async with RawClient.connect(host, SCHEMA, client_id="shared-tab-01", hello=False) as b:
            await b.hello(auth={"token": "bob-token"})
            assert b.frames[-1]["code"] == "client_id_taken"


async def test_http_refuses_a_client_id_of_another_principal_with_403(tmp_path: Path) -> None:
    async with tenants_server(tmp_path) as (host, _, _):
        async with RawClient.connect(
            host, SCHEMA, client_id="shared-tab-02", auth={"token": "alice-token"}
        ) as a:
            await a.mutate([note("a1", "acme")], 1)
        async with httpx.AsyncClient(
            base_url=f"http://{host}", headers={"authorization": "Bearer bob-token"}
        ) as http:
            malformed = {"acked": 1, "mut": {"id": 2, "ops": "not a list"}}
            for extra in ({}, {"acked": 1}, malformed):  # acked is checked against the owner too
                body = {"client": "shared-tab-02", "mut": {"id": 2, "ops": []}, **extra}
                refused = await http.post("/sync/mutate", json=body)
                assert refused.status_code == 403, refused.text
                assert refused.json()["code"] == "client_id_taken"


async def test_ending_a_session_closes_its_connections(tmp_path: Path) -> None:
    async with tenants_server(tmp_path) as (host, _, sync):
        async with (
            RawClient.connect(host, SCHEMA, auth={"token": "alice-token"}) as alice,
            RawClient.connect(host, SCHEMA, auth={"token": "bob-token"}) as bob,
        ):
            assert sync.revoke(USERS["alice-token"], "logged out") == 1
            with pytest.raises(websockets.ConnectionClosed) as info:
                await alice.recv()
            assert info.value.rcvd is not None and (
                info.value.rcvd.code,
                info.value.rcvd.reason,
            ) == (4004, "logged out")
            await bob.send({"t": "ping", "n": 2})
            assert (await bob.expect("pong"))["n"] == 2


async def test_changed_grants_are_rechecked_on_live_subscriptions(tmp_path: Path) -> None:
    async with tenants_server(tmp_path) as (host, _, sync):
        async with (
            RawClient.connect(host, SCHEMA, auth={"token": "bob-token"}) as bob,
            RawClient.connect(host, SCHEMA, auth={"token": "alice-token"}) as alice,
        ):
            await bob.mutate([note("b1", "globex")], 1)
            EXTRA_GRANTS["alice"] = {"globex"}
            snap = await alice.subscribe(NOTES)
            assert ids(snap) == ["b1"]
            EXTRA_GRANTS["alice"] = set()
            assert await sync.recheck(USERS["alice-token"]) == 1
            fresh = await alice.expect("snapshot")
            assert ids(fresh) == []


async def test_one_identity_in_two_tenants_gets_each_tenants_records_only(tmp_path: Path) -> None:
    """Principals that share an identity (principal_key) but not read rights never share
    a fanned-out answer."""
    USERS.update({"alice-acme": User("alice", "acme"), "alice-globex": User("alice", "globex")})
    try:
        async with tenants_server(tmp_path) as (host, _, _):
            async with (
                RawClient.connect(host, SCHEMA, auth={"token": "alice-acme"}) as acme,
                RawClient.connect(host, SCHEMA, auth={"token": "alice-globex"}) as globex,
                RawClient.connect(host, SCHEMA, auth={"token": "bob-token"}) as bob,
            ):
                await acme.subscribe(NOTES)
                await globex.subscribe(NOTES)
                await bob.mutate([note("g1", "globex", "globex only")], 1)
                assert ids(await globex.expect("changes")) == ["g1"]
                with pytest.raises(TimeoutError):
                    await acme.recv(timeout=0.3)
    finally:
        USERS.pop("alice-acme")
        USERS.pop("alice-globex")


async def test_http_mutations_authenticate_before_reading_and_cap_the_body(tmp_path: Path) -> None:
    async with tenants_server(tmp_path) as (host, engine, _):
        before = await engine.head()
        async with httpx.AsyncClient(base_url=f"http://{host}") as http:
            huge = b"{" + b" " * 2_000_000 + b"}"
            anonymous = await http.post(
                "/sync/mutate", content=huge, headers={"content-type": "application/json"}
            )
            assert anonymous.status_code == 401
            too_big = await http.post(
                "/sync/mutate",
                content=huge,
                headers={"content-type": "application/json", "authorization": "Bearer alice-token"},
            )
            assert too_big.status_code == 413 and "body exceeds 1048576 bytes" in too_big.text
            bad_wait = await http.get(
                "/sync/pull",
                params={
                    "queries": orjson.dumps(NOTES).decode(),
                    "since": str(before),
                    "wait": "nan",
                },
                headers={"authorization": "Bearer alice-token"},
            )
            assert bad_wait.status_code == 400
            assert "wait must be a number of seconds from 0 to 25" in bad_wait.text
        assert await engine.head() == before


# --- Origin and Host checks (docs/security.md, "Origin checks and proxies") ---------------

OPEN = Schema([Collection("notes", Note)])  # no rules: what a rebound page could read


@contextlib.asynccontextmanager
async def open_server(tmp_path: Path, **options: Any) -> AsyncIterator[str]:
    engine = Engine(OPEN, SQLiteStore(tmp_path / "open.sqlite3"))
    sync = SynclineServer(engine, **options)
    async with serve(sync.app) as host:
        yield host


async def upgrade(host: str, **headers: str) -> int:
    """The HTTP status of a WebSocket upgrade of ``/sync`` sent with exactly these
    headers (``Host`` included: a browser after DNS rebinding sends the attacker's)."""
    address, port = host.split(":")
    reader, writer = await asyncio.open_connection(address, int(port))
    try:
        lines = [
            "GET /sync HTTP/1.1",
            *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items()),
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
            "Sec-WebSocket-Version: 13",
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        status_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)
        return int(status_line.split()[1])
    finally:
        writer.close()


async def test_an_origin_of_the_other_scheme_is_refused_and_default_ports_are_one(
    tmp_path: Path,
) -> None:
    async with open_server(tmp_path) as host:
        port = host.split(":")[1]
        assert await upgrade(host, Host=host, Origin=f"http://{host}") == 101
        assert await upgrade(host, Host=host, Origin=f"https://{host}") == 403
        async with httpx.AsyncClient(base_url=f"http://{host}") as http:
            body = {"client": "scheme-client-1", "mut": {"id": 1, "ops": [note("n1", "a")]}}
            refused = await http.post(
                "/sync/mutate", json=body, headers={"origin": f"https://{host}"}
            )
            assert refused.status_code == 403 and refused.json()["code"] == "origin"
        # Behind a TLS proxy that uvicorn trusts (127.0.0.1 by default), the scheme is
        # X-Forwarded-Proto's: now only the https page is this server's own origin.
        https = {"Host": f"127.0.0.1:{port}", "X_Forwarded_Proto": "https"}
        assert await upgrade(host, **https, Origin=f"https://127.0.0.1:{port}") == 101
        assert await upgrade(host, **https, Origin=f"http://127.0.0.1:{port}") == 403
        # A default port is the same origin written or not.
        default = {"Host": "127.0.0.1", "X_Forwarded_Proto": "https"}
        assert await upgrade(host, **default, Origin="https://127.0.0.1:443") == 101
        assert await upgrade(host, **default, Origin="https://127.0.0.1:8443") == 403


async def test_an_allow_list_compares_scheme_host_and_port(tmp_path: Path) -> None:
    async with open_server(tmp_path, allowed_origins=["https://app.example"]) as host:
        for origin in ("https://app.example", "https://app.example:443", "HTTPS://App.Example"):
            assert await upgrade(host, Host=host, Origin=origin) == 101, origin
        for origin in ("http://app.example", "https://app.example:8443", "null", f"http://{host}"):
            assert await upgrade(host, Host=host, Origin=origin) == 403, origin
    with pytest.raises(OriginConfigError, match=r"'app\.example' is not an origin"):
        SynclineServer(
            Engine(OPEN, SQLiteStore(tmp_path / "x.sqlite3")), allowed_origins=["app.example"]
        )


async def test_a_rebound_name_reaches_nothing_on_a_loopback_server(tmp_path: Path) -> None:
    """DNS rebinding: the attacker's name now points at 127.0.0.1, so its page's Origin
    and Host agree; neither the WebSocket nor a plain GET of /sync/pull gets through."""
    queries = '{"notes": {"c": "notes"}}'
    async with open_server(tmp_path) as host:
        port = host.split(":")[1]
        rebound = f"rebind.attacker.example:{port}"
        assert await upgrade(host, Host=rebound, Origin=f"http://{rebound}") == 403
        for name in (f"localhost:{port}", f"app.localhost:{port}", host, f"[::1]:{port}"):
            assert await upgrade(host, Host=name, Origin=f"http://{name}") == 101, name
        async with httpx.AsyncClient(base_url=f"http://{host}") as http:
            ok = await http.get("/sync/pull", params={"queries": queries})
            assert ok.status_code == 200 and ok.json()["t"] == "snapshot"
            read = await http.get(
                "/sync/pull", params={"queries": queries}, headers={"host": rebound}
            )
            assert read.status_code == 403 and read.json()["code"] == "origin"
            assert "rebind.attacker.example" in read.json()["message"]
    # Behind a proxy (which connects from loopback with the public Host), name the hosts.
    async with open_server(tmp_path, allowed_hosts=["app.example"]) as host:
        port = host.split(":")[1]
        assert (
            await upgrade(host, Host=f"app.example:{port}", Origin=f"http://app.example:{port}")
            == 101
        )
        assert await upgrade(host, Host=host, Origin=f"http://{host}") == 403
