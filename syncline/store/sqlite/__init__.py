"""The SQLite store: one database file, durable, the embedded default.

Theory of operation
-------------------

**The cut.** What the SQL stores share lives once: the lifecycle, the write lock, the
group-end rule and the settling of a group's writers in :mod:`syncline.store._group`;
row codecs, the query compiler's walk and migration steps in
:mod:`syncline.store._sql`. This package holds what is SQLite's: connections and
their threads (``_conn``), statements run on a thread (``_statements``), the
thread side of group commit (``_commit``), the transactions (``_tx``), the write
cache (:mod:`.writecache`), the tables (``_schema``), the compiler's dialect
(``_compile``) and :class:`SQLiteStore` (``_store``).

**Connections and threads.** One *writer* connection lives in one dedicated thread (a
one-thread executor), so every write statement runs in submission order and none ever
runs on the event loop. ``read()`` transactions each take their own *reader*
connection from a pool of at most :attr:`SQLiteStore.max_readers` (8 by default);
a ``read()`` beyond them waits for one to come back, first come first served, so a
reconnect storm queues instead of opening a connection and a thread per waiting
read. Every reader owns a one-thread executor, so a cleanup queued after a
cancelled call still runs after it. A read's first call opens
it with ``BEGIN`` plus its first ``SELECT``, which pins a WAL snapshot: from then on
the transaction sees one committed state, whatever commits meanwhile, until its block
exits (``ROLLBACK`` releases the snapshot before the connection goes back to the pool).

**Durability.** ``journal_mode=WAL`` and ``synchronous=FULL``: a COMMIT returns only
after the WAL is on disk, and ``write()`` exits only after its COMMIT, so every ack
follows its commit (invariants 2 and 3).

**Group commit.** ``write()`` blocks run one at a time (an asyncio lock), and every
statement runs on the writer thread in order. The first statement of a group issues
``BEGIN IMMEDIATE``; each writer's statements run inside ``SAVEPOINT w``. When a
block exits, one trip to the thread sends its pending writes and ``RELEASE w`` (or,
if the block raised, ``ROLLBACK TO w`` + ``RELEASE w``: its effects vanish, the
group's other writers keep theirs, and its exception goes to it alone); if nobody is
waiting for the lock (or :attr:`SQLiteStore.max_group` writers have joined: the rule
of :mod:`syncline.store._group`), the same trip ends with ``COMMIT`` -- one
transaction, one fsync for the whole group. The lock
is released as soon as that trip is queued: the next writer's statements run after it.
A writer that never called the thread (the write cache answered all its reads) makes
no trip of its own: its writes are *carried* with the group's next trip, ahead of the
next writer's savepoint (a block that raised had sent nothing: it just drops them).
Every successful writer leaves ``write()`` only after its group's COMMIT, so each ack
follows its commit. If COMMIT fails, every writer of the group gets a
:class:`StoreError` and none is acknowledged; so does the whole group if a savepoint
cannot be rolled back. Writers of one group see each other's writes (same
connection), so ``seq`` stays dense. Group bookkeeping never waits on the cancelled:
a writer cancelled while its group commits may still be committed. SQLite errors name
the condition when one is known (:class:`StorageFull` for ``SQLITE_FULL``,
:class:`StoreReadOnly` for ``SQLITE_READONLY``, :class:`StoreUnavailable` for
``SQLITE_BUSY``, ``SQLITE_IOERR`` and the like).

**Round trips.** Each thread hand-off costs tens of microseconds (more on a busy
machine), more than most statements, and writers make them one after another inside
the write lock, so they bound the mutations per second. A write transaction makes
few: its first call also fetches the head, and writes that return nothing (``put``,
``append_log``, ``put_ack``, ``confirm_acks``) travel with the next call or with the
block's exit. Reads of records and clients, and ``advance_client``, are answered from
the write cache (:mod:`syncline.store.sqlite.writecache`) once the group's first trip
has checked ``PRAGMA data_version``: the writer connection is the only one that writes,
so what it read or wrote stays true until another connection commits. A write that
fails on the thread therefore fails its whole group (later writers may have read it
from the cache). An ``Engine.apply`` takes one trip (its exit) when its client and
record are cached, and one more to begin a group.

Tables (schema version :data:`SCHEMA_VERSION`)
----------------------------------------------

``meta(key, value)``
    ``epoch`` (random hex made once when the file is created, never changed: a new
    database gives old cursors "reset", invariant 1), ``floor`` (the oldest cursor
    ``seq`` the log continues from) and ``schema_version`` (of the tables below).
``records(collection, id, data, inc, v, fv, fw, adds, deleted)``
    One row per record, tombstones included; ``data``, ``fv``, ``fw``, ``adds`` are
    JSON text. ``PRIMARY KEY (collection, id)``. :meth:`SQLiteStore.ensure_indexes`
    adds an expression index per queryable field.
``log(pos, seq, collection, id, kind, inc, patch, before, after, client_id,
mutation_id, time)``
    The change log. One mutation writes one entry per record at one ``seq``, so
    ``seq`` is indexed rather than the key; ``pos`` (the rowid) keeps insertion order.
    Indexed on ``seq`` and on ``(time, seq)`` for :meth:`ReadTx.seq_at`.
``clients(client_id, principal, last)``
    Each client id's principal and last mutation id (invariants 3, 4).
``acks(client_id, mutation_id, ack)``
    Acks kept until the client confirms it holds them.

Migrations of these tables are :data:`MIGRATIONS`, applied in order inside one
transaction on :meth:`SQLiteStore.open`; a file newer than this code is refused.

Queries
-------

:meth:`ReadTx.query` compiles (``_compile``) a :class:`~syncline.query.Query` to SQL over
``json_extract(data, '$.field')`` and ``json_type`` (which tells ``true`` from ``1``),
reproducing :meth:`Query.matches` and :meth:`Query.sort` exactly for JSON scalars:
equality is numeric between integers and reals but never between booleans and
numbers, ``None`` satisfies no range, and the sort orders types ``None`` < booleans <
numbers < strings, then by value (UTF-8 byte order is code point order), ties by id.
An array or object in a queried field is compared through Python's ``str()`` of it,
as the reference does. Where SQL cannot express a query (a field name that is not an
identifier, an integer beyond 64 bits, a non-scalar operand), the store filters in
SQL what it can and finishes filtering and sorting in Python with the reference
functions. Filters use the indexes of :meth:`SQLiteStore.ensure_indexes`; the
type-aware ORDER BY sorts the filtered rows rather than walking an index.
"""

from __future__ import annotations

from ._schema import MIGRATIONS, SCHEMA_VERSION
from ._store import SQLiteStore

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SQLiteStore"]
