"""Server-side rendering: safe embedding, the demo page, and a gapless handoff from the
page's cursor to live changes under racing writes (invariant 6)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2 import Environment
from starlette.applications import Starlette

from syncline import Engine, Query, Replica
from syncline.demo.app import COOKIE, SCHEMA, create_app
from syncline.ssr import Row, embed_json, install_jinja, read_page
from syncline.store.sqlite import SQLiteStore

from .live import RawClient, serve

STATE = re.compile(r'<script type="application/json" id="syncline-state">(.*?)</script>', re.S)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=15,
)


@given(json_values)
def test_embedded_json_has_no_markup_characters_and_parses_back(value: Any) -> None:
    embedded = embed_json(value)
    assert not set(embedded) & {"<", ">", "&", "\u2028", "\u2029"}
    assert orjson.loads(embedded) == value


def test_a_script_closing_payload_cannot_escape_the_tag() -> None:
    payload = {"title": "</script><script>window.__xss=1</script><!--", "sep": "a\u2028b"}
    embedded = embed_json(payload)
    assert "</script" not in embedded and "<!--" not in embedded
    assert embedded.count("\\u003c") == 4 and "\\u2028" in embedded


async def test_the_jinja_filter_embeds_the_same_snapshot_the_page_renders(tmp_path: Path) -> None:
    async with demo_app(tmp_path) as (_, engine):
        state = await read_page(engine, "reader", {"cards": {"c": "cards"}})
        env = Environment(autoescape=True)
        install_jinja(env)
        template = "{% for c in state.rows('cards') %}<li>{{ c.title }}</li>{% endfor %}"
        html = env.from_string(template + "{{ state | syncline_state }}").render(state=state)
        embedded = orjson.loads(STATE.search(html).group(1))  # type: ignore[union-attr]
        assert embedded["schema"] == SCHEMA.hash and embedded["cursor"] == state.cursor
        titles = [r["data"]["title"] for r in embedded["records"]["cards"]]
        assert html.count("<li>") == len(titles) == 6  # the seeded board
        for title in titles:
            assert f"<li>{title}</li>" in html


def test_a_row_reads_its_fields_as_attributes_even_one_named_like_a_dict_method() -> None:
    env = Environment(autoescape=True)
    install_jinja(env)
    row = Row({"title": "<b>", "items": 3}, id="c1")
    html = env.from_string("{{ r.id }} {{ r.title }} {{ r.items }} {{ r['items'] }}").render(r=row)
    assert html == "c1 &lt;b&gt; 3 3"
    assert row.title == "<b>"  # in Python code too; there row.items stays the dict method
    assert env.from_string("{{ r.missing is undefined }}").render(r=row) == "True"
    with pytest.raises(AttributeError, match="no field 'missing'"):
        _ = row.missing


async def test_the_server_indexes_queryable_fields_when_it_starts(tmp_path: Path) -> None:
    async with demo_app(tmp_path) as (_, engine):
        async with engine.store.read() as tx:
            plan = await tx._run(  # type: ignore[attr-defined]
                lambda db: db.execute(
                    "EXPLAIN QUERY PLAN SELECT id FROM records WHERE collection = 'cards' "
                    "AND json_extract(data, '$.board_id') = 'demo'"
                ).fetchall()
            )
    assert "records_cards_board_id" in str(plan)


@contextlib.asynccontextmanager
async def demo_app(tmp_path: Path) -> AsyncIterator[tuple[Starlette, Engine]]:
    store = SQLiteStore(tmp_path / "demo.sqlite3")
    app = create_app(store)
    async with app.router.lifespan_context(app):
        yield app, app.state.engine


async def test_the_demo_page_is_rendered_from_its_embedded_state(tmp_path: Path) -> None:
    app = create_app(SQLiteStore(tmp_path / "demo.sqlite3"))
    async with serve(app) as host, httpx.AsyncClient(base_url=f"http://{host}") as http:
        response = await http.get("/")
        assert response.status_code == 200
        assert response.headers["cache-control"] == "private, no-store"
        state = orjson.loads(STATE.search(response.text).group(1))  # type: ignore[union-attr]
        for card in state["records"]["cards"]:
            assert f'data-sl-id="cards:{card["id"]}"' in response.text
            title = card["data"]["title"]
            assert f'data-sl-field="title">{title}</h3>' in response.text


async def test_the_handoff_is_gapless_under_racing_writes(tmp_path: Path) -> None:
    """Writers commit without pause while pages render; every client that hydrates from
    a page and subscribes since its cursor ends with exactly the server's data, and its
    stream of changes continues the page's cursor with no gap and no overlap."""
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    app = create_app(SQLiteStore(tmp_path / "race.sqlite3"))
    engine: Engine = app.state.engine
    async with serve(app) as host, httpx.AsyncClient(base_url=f"http://{host}") as http:
        stop = asyncio.Event()

        async def writer(n: int) -> None:
            mid = 0
            while not stop.is_set():
                mid += 1
                card = f"card-{rng.randint(1, 3)}"
                ops: list[dict[str, Any]] = rng.choice(
                    [
                        [{"op": "incr", "c": "cards", "id": card, "field": "votes", "by": 1}],
                        [
                            {
                                "op": "insert",
                                "c": "cards",
                                "id": f"w{n}-{mid}",
                                "fields": {
                                    "board_id": "demo",
                                    "list_id": "product",
                                    "title": f"new {mid}",
                                },
                            }
                        ],
                        [
                            {
                                "op": "add",
                                "c": "cards",
                                "id": card,
                                "field": "labels",
                                "values": [f"l{mid % 5}"],
                            }
                        ],
                    ]
                )
                await engine.apply("demo", f"race-writer-{n}", {"id": mid, "ops": ops})
                await asyncio.sleep(0)

        writers = [asyncio.create_task(writer(n)) for n in range(3)]
        clients: list[tuple[Replica, str, list[dict[str, Any]]]] = []
        stack = contextlib.AsyncExitStack()
        async with stack:
            for _ in range(8):
                page = await http.get("/")
                state = orjson.loads(STATE.search(page.text).group(1))  # type: ignore[union-attr]
                session = {"cookie": f"{COOKIE}={http.cookies[COOKIE]}"}  # the page's visitor
                c = await stack.enter_async_context(
                    RawClient.connect(host, SCHEMA, additional_headers=session)
                )
                c.replica.load_snapshot(state)
                await c.send({"t": "sub", "queries": state["queries"], "since": state["cursor"]})
                clients.append((c.replica, state["cursor"], c.frames))
                c.frames.clear()
                c._pump = asyncio.create_task(_follow(c))
                await asyncio.sleep(rng.random() * 0.05)
            stop.set()
            await asyncio.gather(*writers)
            final = await engine.head()
            assert final.seq > 20, "the writers should have raced the page renders"
            snap = await engine.snapshot(
                "demo", {q: Query.parse(w, SCHEMA) for q, w in state["queries"].items()}
            )
            truth = {(q, r["id"]): r["data"] for q, rs in snap.results.items() for r in rs}
            for replica, page_cursor, frames in clients:
                async with asyncio.timeout(10):
                    while replica.cursor is None or replica.cursor.seq < final.seq:
                        await asyncio.sleep(0.01)
                chain = [f for f in frames if f["t"] == "changes"]
                assert chain[0]["from"] == page_cursor
                for before, after in itertools.pairwise(chain):
                    assert after["from"] == before["to"], "a gap or an overlap in the stream"
                held = {
                    (q, r["id"]): {k: v for k, v in r.items() if k != "id"}
                    for q, query in replica.queries.items()
                    for r in replica.query(query)
                }
                assert held == truth


async def _follow(c: RawClient) -> None:
    with contextlib.suppress(Exception):
        while True:
            c.feed(await c.recv(timeout=30))
