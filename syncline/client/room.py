"""A presence room as the asyncio client shows it: its members, live, and this
client's own state in it (``docs/protocol.md``, Presence)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..exceptions import PresenceRefused
from ..presence import Member, RoomView
from ..protocol.client import ClientEvent

if TYPE_CHECKING:
    from .client import Client

__all__ = ["Room", "RoomCallback"]

log = logging.getLogger("syncline.client")

RoomCallback = Callable[[str, Member], None]
"""``(kind, member)``: kind ``join``, ``update`` or ``leave``."""


class Room:
    """A room this client joined (:meth:`Client.join`); rejoined after a reconnect."""

    def __init__(self, client: Client, view: RoomView) -> None:
        self._client = client
        self._view = view
        self._callbacks: list[RoomCallback] = []
        self.error: Mapping[str, Any] | None = None
        self.left = False

    @property
    def name(self) -> str:
        return self._view.name

    @property
    def members(self) -> dict[str, Member]:
        """Every member by key (this client's own included: :attr:`me`)."""
        return dict(self._view.members)

    @property
    def me(self) -> str | None:
        return self._view.me

    @property
    def state(self) -> dict[str, Any]:
        return dict(self._view.state)

    @property
    def answered(self) -> bool:
        """The server answered the join on the current connection."""
        return self._view.answered

    def on(self, callback: RoomCallback) -> Callable[[], None]:
        """Call ``callback(kind, member)`` for each join, update and leave."""
        self._callbacks.append(callback)

        def off() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return off

    def update(self, state: Mapping[str, Any]) -> None:
        """Replace this client's state in the room (sent at once when live)."""
        if self.left:
            raise PresenceRefused(f"room {self.name!r} was left")
        self._client._protocol.presence(self.name, state)
        self._client._kick()

    async def leave(self) -> None:
        if not self.left:
            self.left = True
            self._client._leave(self)

    async def wait_for(
        self, predicate: Callable[[Room], bool], timeout: float | None = None
    ) -> None:
        """Wait until ``predicate(room)`` holds (checked after every change)."""
        await self._client.wait_for(lambda: predicate(self), timeout)

    def _event(self, event: ClientEvent) -> None:
        if event.error is not None:
            self.error, self.left = event.error, True
        for kind, member in event.changes:
            for callback in list(self._callbacks):
                try:
                    callback(kind, member)
                except Exception:
                    log.exception("a presence callback failed")
