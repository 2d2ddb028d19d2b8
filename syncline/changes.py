"""Which changes concern which query (pure): the matching behind resume and fan-out.

For each record touched in a range of the log, a query's view before the range comes
from the first entry's before-image and the view after it from the record as it is
now (read in the same transaction as the range's end), so the result is the net effect:
``enter`` (whole record), ``patch`` (fields changed in the range), ``remove`` (left the
view, not necessarily deleted), or nothing. Read rules are applied to both sides, so a
record the principal may no longer read leaves its view (invariant 10).

A query with a limit cannot be patched item by item (one record entering pushes another
out), so when any touched record is or was in its filter, the caller resends the whole
window: :func:`query_items` returns None.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .model import Principal, Schema
from .query import Query
from .record import LogEntry, Record

__all__ = ["query_items", "touched_keys"]

Key = tuple[str, str]


def touched_keys(entries: Iterable[LogEntry]) -> dict[str, set[str]]:
    """Record ids touched per collection."""
    out: dict[str, set[str]] = {}
    for e in entries:
        out.setdefault(e.collection, set()).add(e.id)
    return out


def query_items(
    schema: Schema,
    principal: Principal,
    query: Query,
    entries: list[LogEntry],
    current: Mapping[Key, Record | None],
) -> list[dict[str, Any]] | None:
    """The net effect of ``entries`` on ``query`` for ``principal``, or None: reset it."""
    coll = schema[query.collection]

    def in_view(view: Mapping[str, Any] | None) -> bool:
        return view is not None and query.matches(view) and schema.may_read(principal, coll, view)

    mine = [e for e in entries if e.collection == query.collection]
    if not mine:
        return []
    if query.limit is not None:
        return None if any(in_view(e.before) or in_view(e.after) for e in mine) else []
    first: dict[str, LogEntry] = {}
    touched: dict[str, set[str]] = {}
    reborn: set[str] = set()
    for e in mine:
        first.setdefault(e.id, e)
        touched.setdefault(e.id, set()).update(e.patch)
        if e.kind == "insert":
            reborn.add(e.id)
    out: list[dict[str, Any]] = []
    for rid, entry in first.items():
        now = current.get((query.collection, rid))
        was_in = in_view(entry.before)
        is_in = now is not None and not now.deleted and in_view(coll.visible(rid, now.data))
        if is_in and now is not None:
            if not was_in or rid in reborn:
                out.append({"k": "enter", "c": query.collection, **now.to_wire()})
            else:
                fields = sorted(f for f in touched[rid] if f in now.data)
                out.append(
                    {
                        "k": "patch",
                        "c": query.collection,
                        "id": rid,
                        "inc": now.inc,
                        "v": now.v,
                        "fv": {f: now.fv.get(f, 0) for f in fields},
                        "data": {f: now.data[f] for f in fields},
                    }
                )
        elif was_in:
            out.append({"k": "remove", "c": query.collection, "id": rid})
    return out
