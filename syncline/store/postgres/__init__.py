"""The PostgreSQL store: one schema of a PostgreSQL database, shared by every node.

Theory of operation
-------------------

**The cut.** The lifecycle, the write lock, the group-end rule and the settling of a
group's writers are :mod:`syncline.store._group`'s, shared with SQLite; row codecs,
the query compiler's walk and migration steps are :mod:`syncline.store._sql`'s. This
package holds what is PostgreSQL's: tables and statements (``_schema``), the
compiler's dialect (``_compile``), the transactions (``_tx``) and
:class:`PostgresStore` (``_store``).

**Commit-ordered seq (invariant 1).** PostgreSQL sequences are not commit-ordered: a
transaction may take 11 and commit before the one that took 10, and a reader that saw
11 would skip 10 forever. This store allocates no number from a sequence. Every write
transaction, on every node, takes one transaction-scoped advisory lock
(``pg_advisory_xact_lock``, keyed by the schema) *before it reads the head*, and
PostgreSQL releases that lock only after the commit is durable and visible (the commit
record is flushed, then the transaction leaves the proc array, then its locks are
released). So write transactions run one after another across all nodes; under READ
COMMITTED each statement after the lock sees every earlier commit, so ``head() + 1`` is
unique and dense, and commit order is ``seq`` order: a snapshot that sees ``seq`` N was
taken after N's commit, which followed N - 1's. The engine reads the head early (field
versions carry the ``seq``), which is why the lock is taken first rather than "last,
just before commit": a writer needs its ``seq`` before it writes records. A rolled back
transaction used no number: the next one reads the same head.

**Group commit.** A lock held across a COMMIT would allow one fsync per mutation in the
whole cluster, so the writers of one node share transactions, under the rules of
:mod:`syncline.store._group` (one at a time per store, an asyncio lock; the group
ends when nobody waits to join it). The first statement
of a group takes a pool connection and sends, in one round trip,
``BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock(k); SAVEPOINT w``.
Each writer's statements run inside savepoint ``w``. When a block exits normally, its
pending writes are sent and, if writers are waiting for the lock, ``RELEASE SAVEPOINT
w; SAVEPOINT w`` opens a clean savepoint for the next one, which joins the group; if
nobody waits (or :attr:`PostgresStore.max_group` writers have joined), the group ends
with ``COMMIT``: one transaction, one WAL flush for the whole group. A block that raises
is undone with ``ROLLBACK TO SAVEPOINT w``; the group's other writers keep theirs. The
asyncio lock is released as soon as COMMIT is sent: the next group starts on another
connection and waits in ``pg_advisory_xact_lock`` until that COMMIT is done. Every
writer leaves ``write()`` only after its group's COMMIT succeeded, so every ack follows
its commit (invariant 2; ``synchronous_commit = on`` is set on every connection). If
COMMIT fails, every writer of the group gets a :class:`StoreError`. A writer cancelled
while a statement is in flight (its client went away) lets the statement finish, then
leaves like a block that raised (its savepoint rolled back): the group goes on. Only a
statement that outlasts :attr:`PostgresStore.cancel_grace` (or a lost connection)
leaves the connection in an unknown state; then the whole group is rolled back and
fails. Errors name the condition when one is known (:class:`StorageFull` for
``disk_full``, :class:`StoreReadOnly` for ``read_only_sql_transaction``,
:class:`StoreUnavailable` for a lost or refused connection). Writers of one group see
each other's writes (one connection, one transaction), so ``seq`` stays dense; the
group reads the head once.

**Exactly-once (invariant 3).** ``advance_client`` is one conditional ``UPDATE ... WHERE
last = expected`` (an ``INSERT ... ON CONFLICT DO NOTHING`` for a new client), so even
without the advisory lock two nodes could never both advance a client from n - 1 to n.

**Reads.** ``read()`` takes a pool connection and, with its first statement, begins
``REPEATABLE READ READ ONLY``: one snapshot for the whole block.

**Round trips.** Writes that return nothing (``put``, ``append_log``, ``put_ack``) are
kept and sent together, as one statement of data-modifying CTEs over
``jsonb_to_recordset``, with the block's exit or before the next statement. An
``Engine.apply`` in a running group makes five: client, advance, get, pending writes,
and release-or-commit.

Tables (in the store's schema, version :data:`SCHEMA_VERSION`)
---------------------------------------------------------------

``meta(key, value)``
    ``epoch`` (random hex made once by the first migration, never changed), ``floor``
    and ``schema_version``, as text.
``records(collection, id, data, inc, v, fv, fw, adds, deleted)``
    ``data``, ``fv``, ``fw``, ``adds`` are JSONB; ``collection`` and ``id`` are
    ``COLLATE "C"`` (code point order, as Python sorts strings).
    :meth:`PostgresStore.ensure_indexes` adds an expression index on
    ``(data -> 'field')`` per queryable field, partial on its collection.
``log(pos, seq, collection, id, kind, inc, patch, before, after, client_id,
mutation_id, time)``
    ``pos`` is an identity column keeping insertion order within a ``seq``.
``clients(client_id, principal, last)`` and ``acks(client_id, mutation_id, ack)``
    As in :mod:`syncline.store.sqlite`.

:data:`MIGRATIONS` run on :meth:`PostgresStore.open` in one transaction under another
advisory lock, so several nodes may start at once: one migrates, the others wait and
find the tables up to date. A schema newer than this code is refused.

Queries
-------

:meth:`ReadTx.query` compiles a :class:`~syncline.query.Query` to SQL reproducing
:meth:`Query.matches` and :meth:`Query.sort` for JSON scalars. Equality compares JSONB
values (``data -> 'f' = $1::jsonb``: numbers numerically, never a boolean with a number,
strings by bytes), which the expression indexes serve; ranges check the JSON type
first; strings compare ``COLLATE "C"``. The reference compares an array or object in a
queried field through Python's ``str()`` of it, which SQL cannot reproduce: string
ranges let such rows through and a window column tells whether any matched row holds
one in a string-ranged or ordered field; only then the store re-reads the matching rows
without order or limit and finishes in Python with the reference functions, as it also
does where SQL cannot express a query at all (a NUL character, a non-finite float).

Limits of JSONB: numbers are stored as ``numeric``, so a float written without a
fraction by the encoder (``1e16`` and up) reads back as an integer and ``-0.0`` as
``0.0``; strings cannot hold U+0000 (such a write fails with a :class:`StoreError`);
object keys come back in JSONB's order.
"""

from __future__ import annotations

from ..._extras import missing_extra

try:  # every module of this package needs the driver: say which extra brings it
    import asyncpg  # type: ignore[import-untyped,unused-ignore]  # noqa: F401
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "asyncpg", "PostgreSQL support", "postgres") from None

from ._schema import MIGRATIONS, SCHEMA_VERSION, quote_ident
from ._store import PostgresStore

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "PostgresStore", "quote_ident"]
