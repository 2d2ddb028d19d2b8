"""syncline: keep a Python server's data in sync with every client, from SSR pages on.

The public names below load on first use (PEP 562), so ``import syncline.model`` or
any other pure module loads no event loop, socket or database driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_names as _lazy_names

if TYPE_CHECKING:
    from .cursor import Cursor
    from .engine import Engine, ServerTransaction
    from .exceptions import (
        ClientIdTaken,
        CursorAhead,
        CursorError,
        CursorReset,
        CursorTooOld,
        Forbidden,
        InvalidMutation,
        MissingReference,
        MutationGap,
        MutationRefused,
        PolicyViolation,
        QueryError,
        RecordExists,
        RecordNotFound,
        RetryLater,
        SchemaError,
        StoreError,
        SynclineError,
    )
    from .model import (
        LWW,
        Collection,
        Conflict,
        Counter,
        Manual,
        Merge,
        Queryable,
        Ref,
        Schema,
        Set,
        Text,
        new_id,
    )
    from .ops import Delete, Increment, Insert, Mutation, SetAdd, SetRemove, Update
    from .query import Query
    from .replica import Draft, Event, Replica
    from .results import Ack, Changes, FieldConflict, OpResult, Snapshot
    from .store import MemoryStore, Store

__version__ = "0.1.0.dev0"

__all__ = [
    "LWW",
    "Ack",
    "Changes",
    "ClientIdTaken",
    "Collection",
    "Conflict",
    "Counter",
    "Cursor",
    "CursorAhead",
    "CursorError",
    "CursorReset",
    "CursorTooOld",
    "Delete",
    "Draft",
    "Engine",
    "Event",
    "FieldConflict",
    "Forbidden",
    "Increment",
    "Insert",
    "InvalidMutation",
    "Manual",
    "MemoryStore",
    "Merge",
    "MissingReference",
    "Mutation",
    "MutationGap",
    "MutationRefused",
    "OpResult",
    "PolicyViolation",
    "Query",
    "QueryError",
    "Queryable",
    "RecordExists",
    "RecordNotFound",
    "Ref",
    "Replica",
    "RetryLater",
    "Schema",
    "SchemaError",
    "ServerTransaction",
    "Set",
    "SetAdd",
    "SetRemove",
    "Snapshot",
    "Store",
    "StoreError",
    "SynclineError",
    "Text",
    "Update",
    "__version__",
    "new_id",
]

_HOMES = {
    "Ack": ".results",
    "Changes": ".results",
    "ClientIdTaken": ".exceptions",
    "Collection": ".model",
    "Conflict": ".model",
    "Counter": ".model",
    "Cursor": ".cursor",
    "CursorAhead": ".exceptions",
    "CursorError": ".exceptions",
    "CursorReset": ".exceptions",
    "CursorTooOld": ".exceptions",
    "Delete": ".ops",
    "Draft": ".replica",
    "Engine": ".engine",
    "Event": ".replica",
    "FieldConflict": ".results",
    "Forbidden": ".exceptions",
    "Increment": ".ops",
    "Insert": ".ops",
    "InvalidMutation": ".exceptions",
    "LWW": ".model",
    "Manual": ".model",
    "MemoryStore": ".store",
    "Merge": ".model",
    "MissingReference": ".exceptions",
    "Mutation": ".ops",
    "MutationGap": ".exceptions",
    "MutationRefused": ".exceptions",
    "OpResult": ".results",
    "PolicyViolation": ".exceptions",
    "Query": ".query",
    "QueryError": ".exceptions",
    "Queryable": ".model",
    "RecordExists": ".exceptions",
    "RecordNotFound": ".exceptions",
    "Ref": ".model",
    "Replica": ".replica",
    "RetryLater": ".exceptions",
    "Schema": ".model",
    "SchemaError": ".exceptions",
    "ServerTransaction": ".engine",
    "Set": ".model",
    "SetAdd": ".ops",
    "SetRemove": ".ops",
    "Snapshot": ".results",
    "Store": ".store",
    "StoreError": ".exceptions",
    "SynclineError": ".exceptions",
    "Text": ".model",
    "Update": ".ops",
    "new_id": ".model",
}


__getattr__, __dir__ = _lazy_names(__name__, globals(), _HOMES)
