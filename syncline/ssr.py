"""Server-side rendering handoff: one snapshot renders the HTML and is embedded with its
cursor, so the client hydrates without a second fetch and subscribes with no gap
(invariant 6).

In a request handler::

    state = await read_page(engine, principal, {"cards": {"c": "cards", "where": {...}}})
    html = templates.get_template("board.html").render(state=state)
    return HTMLResponse(html, headers=SSR_HEADERS)

and in the Jinja2 template, render from ``state.rows("cards")`` and embed with
``{{ state | syncline_state }}``. Mark elements with ``data-sl-id`` (a record) and
``data-sl-field`` (one of its fields) so the browser client can patch the server's HTML
in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import orjson
from markupsafe import Markup

from .engine import Engine
from .exceptions import SetupError
from .model import Principal
from .protocol import PROTOCOL_VERSION
from .query import Query
from .results import Snapshot

__all__ = ["SSR_HEADERS", "PageState", "Row", "embed_json", "install_jinja", "read_page"]

SSR_HEADERS = {"Cache-Control": "private, no-store"}
"""A rendered page holds one principal's data: never cache it in shared caches."""

_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def embed_json(value: Any) -> str:
    """JSON safe to place inside ``<script type="application/json">``: no ``</script>``,
    no ``<!--``, no line separators a JavaScript parser would trip on."""
    return orjson.dumps(value).decode().translate(_ESCAPES)


class Row(dict[str, Any]):
    """One record for a template: ``id`` plus its fields, read as ``row.title`` or
    ``row["title"]``. In a template (see :func:`install_jinja`) a field wins over a
    dict method of the same name (``row.items``); in Python code the method does."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"this record has no field {name!r}") from None


@dataclass(frozen=True)
class PageState:
    """What one page was rendered from: the records of its queries and their cursor."""

    schema_hash: str
    snapshot: Snapshot
    fields: dict[str, dict[str, dict[str, Any]]]
    """Each queried collection's field policies (:meth:`Schema.describe`)."""

    @property
    def cursor(self) -> str:
        return str(self.snapshot.cursor)

    def rows(self, query_id: str) -> list[Row]:
        """The query's records as flat :class:`Row` dicts (``id`` plus fields)."""
        return [Row(r["data"], id=r["id"]) for r in self.snapshot.results[query_id]]

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": PROTOCOL_VERSION,
            "schema": self.schema_hash,
            "fields": self.fields,
            **self.snapshot.to_wire(),
        }

    def script_tag(self) -> Markup:
        payload = embed_json(self.to_wire())
        return Markup(f'<script type="application/json" id="syncline-state">{payload}</script>')


async def read_page(
    engine: Engine, principal: Principal, queries: Mapping[str, Query | Mapping[str, Any]]
) -> PageState:
    """Read every query the page needs, with their cursor, in one transaction."""
    parsed = {
        qid: q if isinstance(q, Query) else Query.parse(q, engine.schema)
        for qid, q in queries.items()
    }
    described = engine.schema.describe()
    fields = {q.collection: described[q.collection] for q in parsed.values()}
    return PageState(engine.schema.hash, await engine.snapshot(principal, parsed), fields)


def install_jinja(env: Any) -> None:
    """Add the ``syncline_state`` filter to a Jinja2 environment, and read ``row.field``
    of a :class:`Row` straight from the dict: Jinja tries the attribute first, and a
    failed attribute lookup per field made that the slowest part of a large page."""
    env.filters["syncline_state"] = lambda state: state.script_tag()
    generic = env.getattr

    def getattr_(obj: Any, attribute: str) -> Any:
        if type(obj) is Row:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return generic(obj, attribute)

    env.getattr = getattr_


def _not_installed(_state: object) -> NoReturn:
    raise SetupError(
        "the syncline_state filter is not installed in this Jinja environment: call "
        "syncline.ssr.install_jinja(env) once where you create it (with Starlette's "
        "Jinja2Templates: install_jinja(templates.env))"
    )


# Every Jinja environment made from now on knows the filter's name, so a template that
# uses it without install_jinja fails saying what to call, not "No filter named
# 'syncline_state'"; install_jinja replaces it with the real one.
# Jinja2 is the application's (an extra for syncline): without it there is nothing to do.
try:
    import jinja2.filters
except ModuleNotFoundError:  # pragma: no cover - the core install has no jinja2
    pass
else:
    jinja2.filters.FILTERS.setdefault("syncline_state", _not_installed)
