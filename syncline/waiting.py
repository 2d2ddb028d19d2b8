"""Waiting for an event with a timeout, safely on Python 3.11.

``asyncio.wait_for(event.wait(), t)`` on 3.11 swallows a cancellation that arrives in
the same loop turn as the event (python/cpython#86296): a background loop built on it
can then outlive its ``cancel()``, and a server's shutdown hangs. ``asyncio.timeout``
does not have that flaw.
"""

from __future__ import annotations

import asyncio

__all__ = ["wait_event"]


async def wait_event(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; True if it was set."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
