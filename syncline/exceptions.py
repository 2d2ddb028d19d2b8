"""Every error syncline raises, under one root.

The tree::

    SynclineError
    ├── SchemaError              the application declared its model wrongly (local misuse)
    ├── MissingExtra             an optional dependency is not installed (also an
    │                            ``ImportError``); the message names the extra
    ├── QueryError               a query names an unknown collection or a non-queryable field
    ├── ReadLimitExceeded        a snapshot or pull would cost more than a limit allows
    ├── MutationRefused          a mutation was not applied; ``permanent`` says whether to retry
    │   ├── InvalidMutation      malformed op, wrong type, unknown or missing field
    │   ├── RecordNotFound       update/delete/increment of a record that never existed
    │   ├── RecordExists         insert of an id that is live
    │   ├── MissingReference     a reference field names a record that does not exist
    │   ├── PolicyViolation      an op the field's merge policy forbids (plain update of a counter)
    │   ├── Forbidden            a write rule refused the principal
    │   ├── MutationGap          mutation ids must go 1, 2, 3 ...; one was skipped
    │   ├── ClientIdTaken        the client id belongs to another principal (invariant 4)
    │   └── RetryLater           temporary: overload or rate limit; nothing was used up
    ├── CursorError              a cursor the server cannot continue from
    │   ├── CursorTooOld         older than the retained log: take a fresh snapshot
    │   ├── CursorReset          from another database epoch: drop local state and reload
    │   └── CursorAhead          above the database head: the client is confused
    ├── StoreError               the storage backend failed or was misused
    │   ├── StorageFull          the disk (or the database's quota) is full
    │   ├── StoreReadOnly        the database refuses writes (read-only file or transaction)
    │   ├── StoreUnavailable     the database cannot be reached or lost the connection
    │   └── LogOrderError        (syncline.store) log entries not at head + 1
    ├── PresenceRefused          a presence room refused this client (rule or limit)
    ├── BackplaneError           the backplane between nodes could not start
    ├── SetupError               the application or its command line wired syncline wrongly
    │                            (no lifespan, no install_jinja, a port in use)
    ├── ProtocolError            (syncline.protocol) a peer sent a frame the protocol
    │                            does not allow; its ``error`` frame names the problem
    ├── ProtocolMisuse           (syncline.protocol) local code called the protocol
    │                            out of turn (a bug here, not the peer's)
    └── ClientFailed             (syncline.client) the server refused this client for
                                 good: reload, unauthorized, client id taken

Errors that concern a record carry ``collection``, ``record_id`` and ``field`` so a
message can say exactly where the problem is.  ``code`` is a stable, short string
that travels on the wire; the message is for people.
"""

from __future__ import annotations

__all__ = [
    "BackplaneError",
    "ClientIdTaken",
    "CursorAhead",
    "CursorError",
    "CursorReset",
    "CursorTooOld",
    "Forbidden",
    "InvalidMutation",
    "MissingExtra",
    "MissingReference",
    "MutationGap",
    "MutationRefused",
    "PolicyViolation",
    "PresenceRefused",
    "QueryError",
    "ReadLimitExceeded",
    "RecordExists",
    "RecordNotFound",
    "RetryLater",
    "SchemaError",
    "SetupError",
    "StorageFull",
    "StoreError",
    "StoreReadOnly",
    "StoreUnavailable",
    "SynclineError",
]


class SynclineError(Exception):
    """Root of every error syncline raises."""

    code = "error"


class SchemaError(SynclineError):
    """The schema declaration is wrong; fix the application's model."""

    code = "schema"


class MissingExtra(SynclineError, ImportError):
    """A module needs an optional dependency that is not installed: ``pip install
    syncline`` is the core only, and the message names the extra that brings it
    (``syncline[postgres]``). ``name`` is the missing module, as for any ImportError."""

    code = "missing_extra"

    def __init__(self, message: str, *, name: str, extra: str) -> None:
        super().__init__(message)
        self.name = name
        self.extra = extra


class QueryError(SynclineError):
    """A query cannot be run as written."""

    code = "query"


class ReadLimitExceeded(SynclineError):
    """A snapshot or pull would send more bytes, or scan more rows under a callable read
    rule, than a limit allows; the message names the limit. ``ref`` is the query id
    whose answer passed it (None when no single query did)."""

    code = "limit"

    def __init__(self, message: str, *, ref: str | None = None) -> None:
        super().__init__(message)
        self.ref = ref


def _where(collection: str | None, record_id: str | None, field: str | None) -> str:
    parts = []
    if collection is not None:
        parts.append(collection)
    if record_id is not None:
        parts.append(repr(record_id))
    where = "/".join(parts)
    if field is not None:
        where = f"{where}.{field}" if where else field
    return where


class MutationRefused(SynclineError):
    """A mutation was not applied.

    ``permanent`` refusals use up the mutation id (the client drops the mutation);
    temporary ones do not (the client retries after ``retry_after`` seconds).
    """

    code = "refused"
    permanent = True

    def __init__(
        self,
        message: str,
        *,
        collection: str | None = None,
        record_id: str | None = None,
        field: str | None = None,
    ) -> None:
        self.collection = collection
        self.record_id = record_id
        self.field = field
        self.reason = message
        where = _where(collection, record_id, field)
        super().__init__(f"{where}: {message}" if where else message)

    def to_wire(self) -> dict[str, object]:
        """The refusal as the client sees it: code, message and location, nothing internal."""
        out: dict[str, object] = {"code": self.code, "message": str(self)}
        if self.collection is not None:
            out["collection"] = self.collection
        if self.record_id is not None:
            out["id"] = self.record_id
        if self.field is not None:
            out["field"] = self.field
        return out


class InvalidMutation(MutationRefused):
    code = "invalid"


class RecordNotFound(MutationRefused):
    code = "not_found"


class RecordExists(MutationRefused):
    code = "exists"


class MissingReference(MutationRefused):
    code = "missing_reference"


class PolicyViolation(MutationRefused):
    code = "policy"


class Forbidden(MutationRefused):
    code = "forbidden"


class MutationGap(MutationRefused):
    """The client skipped a mutation id. Nothing is used up: resend from ``expected``."""

    code = "gap"
    permanent = False

    def __init__(self, client_id: str, got: int, expected: int) -> None:
        self.expected = expected
        super().__init__(
            f"client {client_id!r} sent mutation {got} but the next expected is {expected}; "
            f"resend pending mutations starting at {expected}"
        )

    def to_wire(self) -> dict[str, object]:
        return {**super().to_wire(), "expected": self.expected}


class ClientIdTaken(MutationRefused):
    code = "client_id_taken"

    def __init__(self, client_id: str) -> None:
        super().__init__(
            f"client id {client_id!r} belongs to another principal; generate a new client id"
        )


class RetryLater(MutationRefused):
    code = "retry"
    permanent = False

    def __init__(self, message: str, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"{message}; retry after {retry_after:g}s")

    def to_wire(self) -> dict[str, object]:
        return {**super().to_wire(), "retry_after": self.retry_after}


class CursorError(SynclineError):
    code = "cursor"


class CursorTooOld(CursorError):
    code = "cursor_too_old"


class CursorReset(CursorError):
    code = "cursor_reset"


class CursorAhead(CursorError):
    code = "cursor_ahead"


class StoreError(SynclineError):
    """The store failed. ``condition`` names a known state of the database that refuses
    writes for a while (its subclasses); a mutation refused by it is retryable, and the
    refusal's code is the condition (``retry`` when there is none)."""

    code = "store"
    condition: str | None = None


class StorageFull(StoreError):
    """The disk, or the database's size limit, is full: writes fail until space is made."""

    code = condition = "storage_full"


class StoreReadOnly(StoreError):
    """The database refuses writes (a read-only file or mount, a read-only transaction
    or replica); reads go on."""

    code = condition = "read_only"


class StoreUnavailable(StoreError):
    """The database cannot be reached, or the connection to it was lost."""

    code = condition = "unavailable"


class PresenceRefused(SynclineError):
    """A presence room refused this client (not allowed, or past a limit)."""

    code = "room_refused"


class BackplaneError(SynclineError):
    """The backplane could not start (its server cannot be reached, a bad URL)."""

    code = "backplane"


class SetupError(SynclineError):
    """syncline is wired wrongly: the message says what to change (pass
    ``lifespan=sync.lifespan``, call ``install_jinja``, choose another port)."""

    code = "setup"
