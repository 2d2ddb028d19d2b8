"""A user's script as ``mypy --strict`` sees it (tests/test_typed.py checks it and runs
it): records read as the application's own models, in a client and on the server."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel

from syncline import Collection, Counter, Engine, Increment, Insert, Queryable, Schema, Set
from syncline.client import Client


class Note(BaseModel):
    topic: Annotated[str, Queryable()]
    text: str = ""
    likes: Annotated[int, Counter()] = 0
    tags: Annotated[frozenset[str], Set()] = frozenset()


schema = Schema([Collection("notes", Note)])


async def seed(engine: Engine) -> None:
    async with engine.transaction("admin") as tx:
        tx.apply(Insert(c="notes", id="n1", fields={"topic": "general", "text": "hi"}))
        tx.apply(Insert(c="notes", id="n2", fields={"topic": "general", "tags": ["a"]}))


async def like(engine: Engine, note_id: str) -> int:
    """Server side: read a note as a Note, write on top of it, read it back."""
    async with engine.transaction("admin") as tx:
        note = await tx.get(Note, note_id)
        if note is None:
            raise LookupError(note_id)
        tx.apply(Increment(c="notes", id=note_id, field="likes", by=1))
        again = await tx.get(Note, note_id)
        assert again is not None and again.likes == note.likes + 1
        return again.likes


def headlines(client: Client, topic: str) -> list[str]:
    """Client side: a query's rows as (id, Note) pairs, in the query's order."""
    rows = client.query(Note, {"where": {"topic": topic}, "order": [["id", "desc"]]})
    return [f"{note_id}: {note.text} {sorted(note.tags)} {note.likes}" for note_id, note in rows]


def likes(client: Client, note_id: str) -> int:
    note = client.get(Note, note_id)
    return 0 if note is None else note.likes
