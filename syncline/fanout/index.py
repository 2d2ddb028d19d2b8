"""Which subscriptions a range of the log may concern: an index by equality, so that a
change costs in proportion to the queries it concerns, not to every query held.

Each distinct query (by its key) is registered once, under one of its equality
conditions: collection -> field -> value -> queries (an ``in`` under each of its
values); of its equalities, the one with the fewest values, and among those the one
whose buckets hold the fewest queries when it is registered (so queries that share a
value, such as every list query of one board, are spread over the values that tell
them apart, and a change to that board does not make all of them candidates). A query
without an equality sits in its collection's *scan* bucket. For a range of the log,
the candidates are the scan buckets of the touched collections plus the queries found
by looking up, for each indexed field, its value in every *view* of every touched
record: each entry's before- and after-image, and the record as it is now (what
:func:`syncline.changes.query_items` looks at). A query that is not a candidate has a
condition that no view satisfies, so none of them matches its filter and
``query_items`` would answer nothing for it -- limited queries included. The index
never changes an answer; it only skips answers known to be empty.

Subscriptions are added by the reader when it hands a join over, and removed on
unsubscribe and leave; one removed from ``conn.queries`` behind the reader's back is
dropped the next time it is a candidate (each subscription remembers its query object).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..model import Schema
from ..query import Query, equality_constraints, equality_key
from ..record import LogEntry, Record

if TYPE_CHECKING:
    from .reader import Subscriber

__all__ = ["Registered", "SubscriptionIndex"]


class Registered:
    """One distinct query and every (connection, query id) subscribed to it."""

    __slots__ = ("field", "key", "keys", "query", "subs")

    def __init__(self, query: Query, key: str) -> None:
        self.query = query
        self.key = key  # Query.key, computed once
        self.subs: dict[tuple[Subscriber, str], Query] = {}
        self.field: str | None = None  # set by SubscriptionIndex._place (None: scan)
        self.keys: tuple[Hashable, ...] = ()


def _placements(query: Query) -> list[tuple[str, tuple[Hashable, ...]]]:
    """The fields and value keys ``query`` may be indexed under (none: a scan): its
    equalities with the fewest values, keys that no value has (NaN) left out."""
    options: list[tuple[str, tuple[Hashable, ...]]] = []
    for field, values in equality_constraints(query):
        keys: list[Hashable] = []
        for v in values:
            k = equality_key(v)
            if k is None:
                if v == v:  # unhashable: only a scan can test it
                    break
                continue  # NaN equals nothing
            keys.append(k)
        else:
            options.append((field, tuple(dict.fromkeys(keys))))
    fewest = min((len(keys) for _, keys in options), default=0)
    return [o for o in options if len(o[1]) == fewest]


class _Collection:
    __slots__ = ("fields", "scan")

    def __init__(self) -> None:
        self.fields: dict[str, dict[Hashable, set[Registered]]] = {}
        self.scan: set[Registered] = set()


class SubscriptionIndex:
    """Subscriptions by collection and equality values (see the module docstring)."""

    def __init__(self) -> None:
        self._queries: dict[str, Registered] = {}
        self._held: dict[Subscriber, dict[str, Registered]] = {}
        self._collections: dict[str, _Collection] = {}

    def __len__(self) -> int:
        """How many (connection, query id) subscriptions are indexed."""
        return sum(len(held) for held in self._held.values())

    # --- maintenance -------------------------------------------------------------------

    def add(self, conn: Subscriber, qid: str, query: Query) -> None:
        held = self._held.setdefault(conn, {})
        old = held.get(qid)
        if old is not None:
            if old.subs.get((conn, qid)) is query:
                return
            self._unlink(old, conn, qid)
        key = query.key
        reg = self._queries.get(key)
        if reg is None:
            reg = self._queries[key] = Registered(query, key)
            self._place(reg)
        reg.subs[(conn, qid)] = query
        held[qid] = reg

    def remove(self, conn: Subscriber, qid: str) -> None:
        held = self._held.get(conn)
        reg = held.pop(qid, None) if held is not None else None
        if reg is not None:
            self._unlink(reg, conn, qid)
        if held is not None and not held:
            del self._held[conn]

    def drop(self, conn: Subscriber) -> None:
        """Forget every subscription of ``conn`` (it left)."""
        for qid, reg in self._held.pop(conn, {}).items():
            self._unlink(reg, conn, qid)

    def _unlink(self, reg: Registered, conn: Subscriber, qid: str) -> None:
        reg.subs.pop((conn, qid), None)
        if reg.subs:
            return
        del self._queries[reg.key]
        coll = self._collections[reg.query.collection]
        if reg.field is None:
            coll.scan.discard(reg)
        else:
            table = coll.fields[reg.field]
            for k in reg.keys:
                regs = table[k]
                regs.discard(reg)
                if not regs:
                    del table[k]
            if not table:
                del coll.fields[reg.field]
        if not coll.scan and not coll.fields:
            del self._collections[reg.query.collection]

    def _place(self, reg: Registered) -> None:
        coll = self._collections.setdefault(reg.query.collection, _Collection())
        options = _placements(reg.query)
        if not options:
            coll.scan.add(reg)
            return

        def load(option: tuple[str, tuple[Hashable, ...]]) -> int:
            table = coll.fields.get(option[0], {})
            return sum(len(table.get(k, ())) for k in option[1])

        reg.field, reg.keys = min(options, key=load)  # the first of equal loads
        table = coll.fields.setdefault(reg.field, {})
        for k in reg.keys:
            table.setdefault(k, set()).add(reg)

    # --- matching ----------------------------------------------------------------------

    def candidates(
        self,
        schema: Schema,
        entries: Iterable[LogEntry],
        current: Mapping[tuple[str, str], Record | None],
    ) -> dict[Subscriber, list[tuple[str, Registered]]]:
        """Per connection, the (query id, query) pairs ``entries`` may concern; every
        other subscription's answer to them is empty."""
        touched: dict[str, dict[str, list[LogEntry]]] = {}
        for e in entries:
            touched.setdefault(e.collection, {}).setdefault(e.id, []).append(e)
        found: set[Registered] = set()
        for name, records in touched.items():
            coll = self._collections.get(name)
            if coll is None:
                continue
            found.update(coll.scan)
            if coll.fields:
                views = _views(schema, name, records, current)
                for field, table in coll.fields.items():
                    for view in views:
                        k = equality_key(view.get(field))
                        if k is not None:
                            hit = table.get(k)
                            if hit:
                                found.update(hit)
        out: dict[Subscriber, list[tuple[str, Registered]]] = {}
        for reg in found:
            for (conn, qid), query in list(reg.subs.items()):
                if conn.queries.get(qid) is not query:  # unsubscribed behind our back
                    self.remove(conn, qid)
                    continue
                out.setdefault(conn, []).append((qid, reg))
        return out


def _views(
    schema: Schema,
    collection: str,
    records: Mapping[str, list[LogEntry]],
    current: Mapping[tuple[str, str], Record | None],
) -> list[Mapping[str, Any]]:
    """Every view of the touched records a filter may be tested on."""
    coll = schema[collection]
    views: list[Mapping[str, Any]] = []
    for rid, touched in records.items():
        for e in touched:
            if e.before is not None:
                views.append(e.before)
            if e.after is not None:
                views.append(e.after)
        now = current.get((collection, rid))
        if now is not None and not now.deleted:
            views.append(coll.visible(rid, now.data))
    return views
