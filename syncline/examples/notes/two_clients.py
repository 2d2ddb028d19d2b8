"""Two Python clients syncing through a running server.

syncline serve syncline.examples.notes.app:app --db notes.sqlite3 --port 8000 &
python -m syncline.examples.notes.two_clients ws://127.0.0.1:8000/sync
"""

from __future__ import annotations

import asyncio
import sys

from syncline import new_id
from syncline.client import Client

from .app import schema

NOTES = {"notes": {"c": "notes"}}


async def main(url: str) -> None:
    async with Client(url, schema) as ann, Client(url, schema) as bob:
        await ann.subscribe(NOTES)
        await bob.subscribe(NOTES)
        bob.on(
            "*",
            lambda e: print(f"  bob sees: {e.kind}") if e.kind in ("changed", "merged") else None,
        )

        note = new_id()
        ann.insert("notes", note, text="Hello from Ann")
        print("ann wrote a note (shown to ann at once, before the server answers)")
        await bob.wait_for(lambda: bob.get("notes", note) is not None, timeout=10)
        print(f"bob got it: {bob.get('notes', note)['text']!r}")  # type: ignore[index]

        ann.update("notes", note, text="Hello from Ann, edited")
        bob.update("notes", note, text="Hi! Hello from Ann")  # concurrent: merged as text
        bob.increment("notes", note, "likes")
        ann.increment("notes", note, "likes")
        await ann.wait_synced(timeout=10)
        await bob.wait_synced(timeout=10)
        await ann.wait_for(lambda: ann.get("notes", note) == bob.get("notes", note), timeout=10)
        print(f"both converged on: {ann.get('notes', note)}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8000/sync"))
