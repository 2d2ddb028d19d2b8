"""A process for the crash test in ``test_store_sqlite.py``: it is killed (SIGKILL) at
a random moment while it applies mutations, and the test checks the file afterwards.

Usage: ``python sqlite_crash_worker.py DB_FILE CLIENTS``. It opens the store, makes
sure the shared tally exists, prints ``READY``, then runs one task per client id
(``w0``, ``w1``, ...) concurrently, so group commit is in play when the kill comes.
Each client continues from the last mutation id the store holds for it; each
mutation inserts the card ``<client>-<n>`` AND increments the shared tally, so a
half-applied mutation would show as a tally that differs from the number of cards.
After each ack it prints ``ACK <client> <mutation id> <seq>`` and flushes.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated, Any

from pydantic import BaseModel

from syncline import Collection, Counter, Engine, Insert, Queryable, Schema
from syncline.store.sqlite import SQLiteStore

PRINCIPAL = "crash-worker"
TALLY = "shared"


class Card(BaseModel):
    owner: Annotated[str, Queryable()] = ""
    n: int = 0


class Tally(BaseModel):
    count: Annotated[int, Counter()] = 0


SCHEMA = Schema([Collection("cards", Card), Collection("tallies", Tally)])


def mutation(client_id: str, n: int) -> dict[str, Any]:
    return {
        "id": n,
        "ops": [
            {
                "op": "insert",
                "c": "cards",
                "id": f"{client_id}-{n}",
                "fields": {"owner": client_id, "n": n},
            },
            {"op": "incr", "c": "tallies", "id": TALLY, "field": "count", "by": 1},
        ],
    }


async def ensure_tally(engine: Engine) -> None:
    async with engine.transaction(PRINCIPAL) as stx:
        if await stx.get("tallies", TALLY) is None:
            stx.apply(Insert(c="tallies", id=TALLY, fields={}))


async def run_client(engine: Engine, store: SQLiteStore, client_id: str) -> None:
    async with store.read() as tx:
        state = await tx.client(client_id)
    n = state.last if state is not None else 0
    while True:
        n += 1
        ack = await engine.apply(PRINCIPAL, client_id, mutation(client_id, n))
        if ack.status != "applied" or ack.seq is None:
            raise SystemExit(f"mutation {client_id}/{n} was not applied: {ack.to_wire()}")
        sys.stdout.write(f"ACK {client_id} {n} {ack.seq}\n")
        sys.stdout.flush()


async def main(path: str, clients: int) -> None:
    store = SQLiteStore(path)
    await store.open()
    engine = Engine(SCHEMA, store)
    await ensure_tally(engine)
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    await asyncio.gather(*(run_client(engine, store, f"w{i}") for i in range(clients)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
