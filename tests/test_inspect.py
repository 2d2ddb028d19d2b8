"""The inspector (``SynclineServer(inspect=guard)``) over real uvicorn: off by default,
refused by the guard without a byte of data, names not values unless the guard says
so, connections, rejects and conflicts as they happen, and bounded output."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.requests import Request

from syncline import Insert
from syncline.server.app import SynclineServer

from .live import RawClient
from .schemas import BOARD
from .test_backup import run_cli
from .test_server import running as server_running

SECRET = "launch code 0000"
CARDS = {"cards": {"c": "cards"}}
PATHS = ("/sync/inspect", "/sync/inspect/summary", "/sync/inspect/inspect.js")


def admin_header(request: Request) -> bool:
    return request.headers.get("x-admin") == "yes"


@contextlib.asynccontextmanager
async def running(tmp_path: Path, **server_kw: Any) -> AsyncIterator[tuple[str, SynclineServer]]:
    """tests/test_server.py's server, with a card whose title no refused request sees."""
    async with server_running(tmp_path, **server_kw) as (host, engine, sync):
        async with engine.transaction("admin") as tx:
            tx.apply(Insert(c="cards", id="c0", fields={"list_id": "l1", "title": SECRET}))
        yield host, sync


async def summary(host: str, **headers: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        r = await http.get(f"http://{host}/sync/inspect/summary", headers=headers)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


async def wait_for(host: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first summary that passes ``check`` (polled, up to 10 s)."""
    async with asyncio.timeout(10):
        while True:
            s = await summary(host, **{"x-admin": "yes"})
            if check(s):
                return s
            await asyncio.sleep(0.05)


async def test_off_by_default_every_inspector_path_is_404(tmp_path: Path) -> None:
    async with running(tmp_path) as (host, sync):
        assert sync.inspector is None
        async with httpx.AsyncClient() as http:
            for path in PATHS:
                r = await http.get(f"http://{host}{path}", headers={"x-admin": "yes"})
                assert r.status_code == 404, (path, r.status_code)
                assert SECRET not in r.text


@pytest.mark.parametrize(
    "guard",
    [
        admin_header,
        lambda request: None,
        lambda request: "yes",  # not an answer the inspector knows: refused, logged
        lambda request: 1 / 0,  # a guard that fails refuses
    ],
    ids=["false", "none", "unknown-answer", "raises"],
)
async def test_a_guard_that_says_no_gets_403_and_no_data(
    tmp_path: Path, guard: Callable[[Request], Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with running(tmp_path, inspect=guard) as (host, _):
        async with RawClient.connect(host, BOARD, client_id="watched-client") as c:
            await c.subscribe(CARDS)
            async with httpx.AsyncClient() as http:
                for path in (*PATHS, "/sync/inspect/inspect.css", "/sync/inspect/nothing"):
                    r = await http.get(f"http://{host}{path}")
                    assert r.status_code == 403, (path, r.status_code)
                    assert r.json() == {
                        "t": "error",
                        "code": "forbidden",
                        "message": "not allowed to inspect this server",
                    }
                    assert r.headers["cache-control"] == "no-store"


async def test_async_guard_lets_in_and_the_page_and_assets_are_served(tmp_path: Path) -> None:
    async def guard(request: Request) -> bool:
        await asyncio.sleep(0)
        return request.cookies.get("session") == "operator"

    async with running(tmp_path, inspect=guard) as (host, _):
        cookies = {"session": "operator"}
        async with httpx.AsyncClient(cookies=cookies) as http:
            page = await http.get(f"http://{host}/sync/inspect")
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert "script-src 'self'" in page.headers["content-security-policy"]
            assert '<script type="module" src="inspect/inspect.js">' in page.text
            script = await http.get(f"http://{host}/sync/inspect/inspect.js")
            assert script.status_code == 200
            assert script.headers["content-type"].startswith("text/javascript")
            style = await http.get(f"http://{host}/sync/inspect/inspect.css")
            assert style.headers["content-type"].startswith("text/css")
            missing = await http.get(f"http://{host}/sync/inspect/secrets.txt")
            assert missing.status_code == 404
            assert missing.json()["message"] == "no inspector file 'secrets.txt'"


async def test_connections_subscriptions_rejects_and_changes(tmp_path: Path) -> None:
    async with running(tmp_path, inspect=admin_header) as (host, _):
        async with RawClient.connect(host, BOARD, client_id="tab-0001") as c:
            await c.subscribe(CARDS)
            rename = {"op": "update", "c": "cards", "id": "c1", "set": {"title": "renamed"}}
            ack = await c.mutate([{**rename, "base": {"title": 1}}], 1)
            assert ack["t"] == "ack", ack
            missing = {"op": "update", "c": "cards", "id": "nope", "set": {"title": "x"}}
            reject = await c.mutate([{**missing, "base": {"title": 1}}], 2)
            assert reject["t"] == "reject"
            s = await wait_for(
                host, lambda s: any(x["cursor"] == ack["seq"] for x in s["connections"]["shown"])
            )
        [conn] = s["connections"]["shown"]
        assert conn["client_id"] == "tab-0001"
        assert conn["principal"] == "anonymous"
        assert conn["subscriptions"] == 1
        query_key = conn["queries"]["cards"]
        assert "cards" in query_key
        assert s["queries"]["shown"] == [{"key": query_key, "connections": 1}]
        assert s["mutations"] == {"applied": 1, "rejected": 1}
        [event] = s["events"]
        assert event["kind"] == "reject"
        assert (event["client_id"], event["mid"], event["code"]) == ("tab-0001", 2, reject["code"])
        assert (event["collection"], event["id"], event["permanent"]) == ("cards", "nope", True)
        log = s["log"]
        assert log["head"] == ack["seq"]
        newest = log["changes"][0]
        assert (newest["seq"], newest["id"], newest["kind"]) == (ack["seq"], "c1", "update")
        assert (newest["client_id"], newest["mid"]) == ("tab-0001", 1)
        assert newest["fields"] == ["title"]
        body = orjson.dumps(s).decode()
        assert "renamed" not in body and SECRET not in body  # names, not values
        assert "values" not in newest


async def test_values_only_when_the_guard_says_values(tmp_path: Path) -> None:
    def guard(request: Request) -> bool | str:
        return "values" if request.headers.get("x-admin") == "values" else True

    status = {"op": "update", "c": "cards", "id": "c1", "base": {"status": 1}}
    async with running(tmp_path, inspect=guard) as (host, _):
        async with RawClient.connect(host, BOARD) as a, RawClient.connect(host, BOARD) as b:
            moved = {**status, "set": {"status": "doing"}, "prev": {"status": "todo"}}
            theirs = await a.mutate([moved], 1)
            assert theirs["status"] == "applied"
            mine = {**status, "set": {"status": "done-by-b"}, "prev": {"status": "todo"}}
            assert (await b.mutate([mine], 1))["status"] == "conflict"
        names = await summary(host)
        values = await summary(host, **{"x-admin": "values"})
    assert names["access"] == "names" and values["access"] == "values"
    [conflict] = names["events"]
    assert conflict["kind"] == "conflict" and conflict["client_id"] == b.client_id
    assert conflict["conflicts"] == [
        {"collection": "cards", "id": "c1", "field": "status", "theirs_v": theirs["seq"]}
    ]
    assert "done-by-b" not in orjson.dumps(names).decode()
    assert SECRET not in orjson.dumps(names).decode()
    [shown] = values["events"]
    assert shown["conflicts"][0]["values"] == {
        "base": '"todo"',
        "mine": '"done-by-b"',
        "theirs": '"doing"',
    }
    assert values["log"]["changes"][0]["values"] == {"status": '"doing"'}
    assert any(
        f'"{SECRET}"' in c.get("values", {}).get("title", "") for c in values["log"]["changes"]
    )


async def test_output_is_bounded(tmp_path: Path) -> None:
    long_principal = "p" * 5000  # clipped wherever it shows

    def authenticate(conn: Any, credentials: Any) -> str:
        return long_principal

    async with running(tmp_path, inspect=admin_header, authenticate=authenticate) as (host, sync):
        assert sync.inspector is not None
        sync.inspector.max_rows = 3
        long_id = "x" * 128
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(RawClient.connect(host, BOARD)) for _ in range(5)
            ]
            for i, c in enumerate(clients):
                queries = {
                    f"q{n}": {"c": "cards", "where": {"list_id": f"l{i}-{n}"}} for n in range(30)
                }
                assert (await c.subscribe(queries))["t"] == "snapshot"
            writer = clients[0]
            insert = {"op": "insert", "c": "cards", "fields": {"list_id": "l1", "title": "t"}}
            for mid in range(1, 8):
                assert (await writer.mutate([{**insert, "id": f"k{mid}"}], mid))["t"] == "ack"
            missing = {"op": "update", "c": "cards", "set": {"title": "y" * 5000}}
            for mid in range(8, 8 + 150):
                answer = await writer.mutate(
                    [{**missing, "id": long_id, "base": {"title": 1}}], mid
                )
                assert answer["t"] == "reject"
            s = await wait_for(host, lambda s: s["connections"]["total"] == 5)
    assert len(s["connections"]["shown"]) == 3
    for conn in s["connections"]["shown"]:
        assert conn["subscriptions"] == 30
        assert len(conn["queries"]) == sync.inspector.max_queries_per_connection
    assert s["queries"]["total"] == 150 and len(s["queries"]["shown"]) == 3
    assert len(s["log"]["changes"]) == 3
    assert [c["id"] for c in s["log"]["changes"]] == ["k7", "k6", "k5"]
    assert len(s["events"]) == 3 and len(sync.inspector.events) == sync.inspector.max_events
    assert s["events"][0]["mid"] == 157  # newest first
    for event in s["events"]:
        assert (event["code"], event["id"]) == ("not_found", long_id)
        assert event["principal"] == long_principal[:199] + "…"
    assert all(c["principal"] == long_principal[:199] + "…" for c in s["connections"]["shown"])
    assert s["mutations"] == {"applied": 7, "rejected": 150}
    assert len(orjson.dumps(s)) < 20_000


async def test_syncline_inspect_prints_the_summary_as_tables(tmp_path: Path) -> None:
    async with running(tmp_path, inspect=admin_header) as (host, _):
        async with RawClient.connect(host, BOARD, client_id="cli-watched-1") as c:
            await c.subscribe(CARDS)
            missing = {"op": "update", "c": "cards", "id": "gone", "set": {"title": "x"}}
            assert (await c.mutate([{**missing, "base": {"title": 1}}], 1))["t"] == "reject"
            code, out, err = await run_cli("inspect", f"http://{host}", "-H", "X-Admin: yes")
            assert code == 0, err
            assert "connections (1)" in out and "cli-watched-1" in out
            assert "not_found" in out and "gone" in out
            assert SECRET not in out
            code, out, err = await run_cli(
                "inspect", f"{host}/sync/inspect", "-H", "X-Admin: yes", "--json"
            )
            assert code == 0, err
            assert json.loads(out)["connections"]["shown"][0]["client_id"] == "cli-watched-1"
            code, out, err = await run_cli("inspect", f"http://{host}/sync")
            assert code == 1 and "refused (403)" in err and "--header" in err and not out
            code, _, err = await run_cli("inspect", f"http://{host}", "-H", "nocolon")
            assert code == 2 and "is not 'NAME: VALUE'" in err
    (tmp_path / "off").mkdir()
    async with running(tmp_path / "off") as (host, _):
        code, _, err = await run_cli("inspect", f"http://{host}")
        assert code == 1 and "no inspector at" in err and "(404)" in err


async def test_a_rebound_name_cannot_reach_a_guard_that_trusts_loopback(tmp_path: Path) -> None:
    """DNS rebinding: a page on evil.example re-pointed at 127.0.0.1 is same-origin with
    it, so a guard that trusts the loopback address alone would let it read everything;
    the server's Host check refuses the request before the guard is asked."""

    def loopback(request: Request) -> bool:
        return request.client is not None and request.client.host == "127.0.0.1"

    async with running(tmp_path, inspect=loopback) as (host, _):
        port = host.split(":")[1]
        async with httpx.AsyncClient() as http:
            for path in PATHS:
                ok = await http.get(f"http://{host}{path}")
                assert ok.status_code == 200, path
                rebound = await http.get(
                    f"http://{host}{path}", headers={"host": f"evil.example:{port}"}
                )
                assert rebound.status_code == 403, path
                assert rebound.json()["code"] == "origin" and SECRET not in rebound.text
