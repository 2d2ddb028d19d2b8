"""The demos' sessions over real HTTP: each visitor its own principal, ids only the
server issues (a planted, forged or foreign-secret cookie is replaced, never honoured),
and ``Secure`` cookies when the request came over HTTPS through a trusted proxy.
(Chromium's side of it: tests/e2e/test_todomvc.py.)"""

from __future__ import annotations

import asyncio
import time
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest

from syncline.demo import app as board
from syncline.demo.sessions import Sessions
from syncline.demo.todomvc import app as todomvc
from syncline.store.sqlite import SQLiteStore

from .live import serve

CARDS = '{"cards": {"c": "cards", "where": {"board_id": "demo"}}}'


def set_cookies(response: httpx.Response) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.get_list("set-cookie"):
        jar.load(header)
    return jar


async def test_two_board_visitors_holding_the_most_polls_do_not_lock_each_other_out(
    tmp_path: Path,
) -> None:
    app = board.create_app(SQLiteStore(tmp_path / "board.sqlite3"))
    sync = app.state.sync
    most = sync.max_polls_per_principal
    async with serve(app) as host:
        visitors = [httpx.AsyncClient(base_url=f"http://{host}", timeout=60) for _ in range(2)]
        polls: list[asyncio.Task[httpx.Response]] = []
        try:
            for http in visitors:
                assert (await http.get("/")).status_code == 200  # the page issues the session
                assert board.COOKIE in http.cookies
            for n, http in enumerate(visitors, 1):
                cursor = (await http.get("/sync/pull", params={"queries": CARDS})).json()["cursor"]
                params = {"queries": CARDS, "since": cursor, "wait": "20"}
                polls += [
                    asyncio.create_task(http.get("/sync/pull", params=params)) for _ in range(most)
                ]
                deadline = time.monotonic() + 20
                while sum(sync.http._polls.values()) < n * most:  # every one of them waiting
                    done = [p.result() for p in polls if p.done()]
                    assert not done, (
                        f"visitor {n}'s polls were answered at once: {[r.json() for r in done]}"
                    )
                    assert time.monotonic() < deadline, "the long polls never started waiting"
                    await asyncio.sleep(0.01)
            # The limit still holds per visitor: a fifth poll of the first is refused.
            extra = await visitors[0].get("/sync/pull", params=params)
            assert extra.status_code == 429 and extra.json()["code"] == "rate"
            async with app.state.engine.transaction("test") as tx:
                tx.apply(board._card("card-new", "product", 9, "wakes every poll"))
            answers = await asyncio.wait_for(asyncio.gather(*polls), 20)
            assert [a.status_code for a in answers] == [200] * (2 * most)
            assert all(a.json()["t"] == "changes" for a in answers)
        finally:
            for p in polls:
                p.cancel()
            for http in visitors:
                await http.aclose()


@pytest.mark.parametrize(
    "planted",
    [
        "a" * 32,  # an attacker-chosen id (the old demo honoured any 32 alphanumerics)
        "forged.value.signature",
        Sessions(todomvc.COOKIE, secret="another-secret").sign("attacker-session"),
    ],
)
async def test_a_cookie_the_server_did_not_issue_is_replaced_and_refused(
    tmp_path: Path, planted: str
) -> None:
    app = todomvc.create_app(SQLiteStore(tmp_path / "todomvc.sqlite3"), secret="s3cret")
    async with serve(app) as host:
        cookie = {"cookie": f"{todomvc.COOKIE}={planted}"}
        async with httpx.AsyncClient(base_url=f"http://{host}") as http:
            page = await http.get("/", headers=cookie)
            issued = set_cookies(page)[todomvc.COOKIE].value
            assert issued != planted
            sid = Sessions(todomvc.COOKIE, secret="s3cret").verify(issued)
            assert sid is not None and planted not in (sid, issued)
            # The sync endpoints do not take the planted value as anyone.
            pull = await http.get(
                "/sync/pull",
                params={"queries": '{"t": {"c": "todos"}}'},
                headers=cookie,
            )
            assert pull.status_code == 401 and pull.json()["code"] == "unauthorized"
            # The issued cookie is honoured, and the same id comes back on the next visit.
            again = await http.get("/", headers={"cookie": f"{todomvc.COOKIE}={issued}"})
            reissued = set_cookies(again)[todomvc.COOKIE].value
            assert Sessions(todomvc.COOKIE, secret="s3cret").verify(reissued) == sid


async def test_the_cookie_is_secure_and_host_only_when_a_trusted_proxy_says_https(
    tmp_path: Path,
) -> None:
    https = {"x-forwarded-proto": "https"}
    app = todomvc.create_app(SQLiteStore(tmp_path / "todomvc.sqlite3"))
    async with serve(app) as host, httpx.AsyncClient(base_url=f"http://{host}") as http:
        plain = set_cookies(await http.get("/"))[todomvc.COOKIE]
        assert not plain["secure"] and plain["httponly"] and plain["samesite"] == "lax"
        secure = set_cookies(await http.get("/", headers=https))
        assert todomvc.COOKIE not in secure
        morsel = secure[f"__Host-{todomvc.COOKIE}"]
        assert morsel["secure"] and morsel["path"] == "/" and not morsel["domain"]
        # A session issued over HTTPS is read back over HTTPS (under its __Host- name).
        again = await http.get(
            "/", headers={**https, "cookie": f"__Host-{todomvc.COOKIE}={morsel.value}"}
        )
        assert set_cookies(again)[f"__Host-{todomvc.COOKIE}"].value != ""
    # A proxy uvicorn does not trust cannot make a request HTTPS.
    app = todomvc.create_app(SQLiteStore(tmp_path / "todomvc2.sqlite3"))
    async with (
        serve(app, forwarded_allow_ips="192.0.2.1") as host,
        httpx.AsyncClient(base_url=f"http://{host}") as http,
    ):
        untrusted = set_cookies(await http.get("/", headers=https))
        assert f"__Host-{todomvc.COOKIE}" not in untrusted
        assert not untrusted[todomvc.COOKIE]["secure"]
