"""Type errors ``mypy --strict`` must report in a script using the typed API
(tests/test_typed.py expects errors on exactly the lines whose comment says so)."""

from __future__ import annotations

from notes_app import Note

from syncline import Engine
from syncline.client import Client


def title(client: Client) -> str:
    return client.get(Note, "n1")  # error: a Note | None is not a str


def first_likes(client: Client) -> str:
    for _, note in client.query(Note):
        return note.likes  # error: likes is an int
    return ""


async def server_text(engine: Engine) -> int:
    async with engine.transaction("admin") as tx:
        note = await tx.get(Note, "n1")
        return note.text  # error: note may be None, and text is a str
