"""Hand-written peers a Python developer would write without syncline.

- ``starlette-postgres-naive``: one HTTP request, one INSERT and one COMMIT per change,
  on an asyncpg pool, ``synchronous_commit=on``.
- ``ssr-naive``: Starlette + Jinja2 rendering the TodoMVC page's markup from rows read
  with ``sqlite3``, embedding them with ``json.dumps`` (escaped); its page script only
  ``JSON.parse``s the embedded rows and renders them (the ``hydrate-naive`` peer).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


def split_schema(url: str) -> tuple[str, str]:
    """``url`` without its ``schema=`` query parameter, and that schema ("" if none)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    schema = next((v for k, v in query if k == "schema"), "")
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def starlette_postgres_app(url: str) -> Any:
    """One INSERT and one COMMIT per ``POST /changes``, in the schema named in ``url``."""
    import asyncpg
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    dsn, schema = split_schema(url)
    schema = schema or "public"
    pool: Any = None

    async def change(request: Request) -> JSONResponse:
        body = (await request.body()).decode()
        async with pool.acquire() as conn, conn.transaction():
            rowid = await conn.fetchval("INSERT INTO changes (body) VALUES ($1) RETURNING id", body)
        return JSONResponse({"ok": True, "id": rowid})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal pool
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{schema}".changes'
                " (id BIGSERIAL PRIMARY KEY, body TEXT)"
            )
        finally:
            await conn.close()
        settings = {"search_path": schema, "synchronous_commit": "on"}
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=50, server_settings=settings)
        try:
            yield
        finally:
            await pool.close()

    return Starlette(routes=[Route("/changes", change, methods=["POST"])], lifespan=lifespan)


NAIVE_SESSION_TABLE = "todos"
_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}

# Replaces syncline's module script: on DOMContentLoaded (when the bench's probe starts
# its clock, as for syncline's page), parse the embedded rows, render them, say "live".
_NAIVE_SCRIPT = """<script>
document.addEventListener("DOMContentLoaded", () => {
  const rows = JSON.parse(document.getElementById("state").textContent);
  const list = document.querySelector(".todo-list");
  const items = rows.map((t) => {
    const li = document.createElement("li");
    li.dataset.id = t.id;
    if (t.completed) li.className = "completed";
    const view = document.createElement("div");
    view.className = "view";
    const toggle = document.createElement("input");
    toggle.className = "toggle";
    toggle.type = "checkbox";
    toggle.checked = !!t.completed;
    const label = document.createElement("label");
    label.textContent = t.title;
    const destroy = document.createElement("button");
    destroy.className = "destroy";
    view.append(toggle, label, destroy);
    li.append(view);
    return li;
  });
  list.replaceChildren(...items);
  document.documentElement.dataset.syncState = "live";
});
</script>"""


def seed_naive_todos(path: str, rows: list[dict[str, Any]]) -> None:
    """The naive page's table: one column per field, as a developer would make it."""
    db = sqlite3.connect(path)
    with db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS todos (id TEXT PRIMARY KEY, session TEXT,"
            ' title TEXT, completed INTEGER, "order" REAL)'
        )
        db.execute('CREATE INDEX IF NOT EXISTS todos_session ON todos (session, "order")')
        db.executemany(
            'INSERT OR REPLACE INTO todos (id, session, title, completed, "order")'
            " VALUES (:id, :session, :title, :completed, :order)",
            rows,
        )
    db.close()


def _naive_template_source() -> str:
    from .. import demo

    source = (Path(demo.__file__).parent / "todomvc" / "templates" / "index.html").read_text()
    state = "{{ state | syncline_state }}"
    script = '<script type="module" src="/todomvc-static/app.js"></script>'
    if state not in source or script not in source:
        raise RuntimeError("the TodoMVC template changed; update the ssr-naive peer")
    embedded = '<script type="application/json" id="state">{{ state_json }}</script>'
    return source.replace(state, embedded).replace(script, _NAIVE_SCRIPT)


def ssr_naive_app(path: str, session: str) -> Any:
    """``GET /``: the TodoMVC markup of ``session``'s rows read with ``sqlite3``."""
    from jinja2 import Environment, select_autoescape
    from markupsafe import Markup
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from .. import demo

    env = Environment(autoescape=select_autoescape(default_for_string=True))
    template = env.from_string(_naive_template_source())
    db = sqlite3.connect(path, check_same_thread=False)
    db.row_factory = sqlite3.Row

    def read() -> list[dict[str, Any]]:
        cur = db.execute(
            'SELECT id, title, completed, "order" FROM todos WHERE session = ? ORDER BY "order"',
            (session,),
        )
        return [
            {"id": r[0], "title": r[1], "completed": bool(r[2]), "order": r[3]}
            for r in cur.fetchall()
        ]

    async def index(_request: Any) -> HTMLResponse:
        todos = await asyncio.to_thread(read)
        state_json = Markup(json.dumps(todos).translate(_ESCAPES))
        html = template.render(
            todos=todos,
            remaining=sum(1 for t in todos if not t["completed"]),
            state_json=state_json,
        )
        return HTMLResponse(html)

    static = StaticFiles(directory=Path(demo.__file__).parent / "todomvc" / "static")
    return Starlette(routes=[Route("/", index), Mount("/todomvc-static", static)])
