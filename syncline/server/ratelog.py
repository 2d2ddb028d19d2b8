"""Log repeated events once per episode: a flood of bad frames from one connection, or
of refused logins from one peer, is one line and a count -- not a line per event, which
would let a client fill the server's disk.

An episode is keyed by (reason, who): who is a principal key, a peer address or a
connection. The first event of an episode is logged; the ones that follow within
``window`` seconds are counted; the count is logged by the next event after the window
(which begins a new episode), by :meth:`EpisodeLog.end` (the connection closed) or by
:meth:`EpisodeLog.flush` (the server stops).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Mapping
from typing import Any

__all__ = ["EpisodeLog"]


class EpisodeLog:
    """Rate-limited logging, keyed by (reason, who): see the module docs."""

    def __init__(
        self, logger: logging.Logger, *, window: float = 60.0, max_keys: int = 10_000
    ) -> None:
        self.logger = logger
        self.window = window
        self.max_keys = max_keys
        # who -> reason -> [first event's time, events since that were not logged, level]
        self._open: dict[Hashable, dict[str, list[Any]]] = {}

    def log(
        self,
        level: int,
        reason: str,
        who: Hashable,
        message: str,
        *args: object,
        extra: Mapping[str, Any] | None = None,
    ) -> bool:
        """Log ``message`` if it begins an episode of ``reason`` for ``who``; else count
        it. Returns whether a line was written."""
        if not self.logger.isEnabledFor(level):
            return False
        now = time.monotonic()
        reasons = self._open.get(who)
        if reasons is None:
            if len(self._open) >= self.max_keys:  # forget the oldest episode
                self._summarize(next(iter(self._open)), pop=True)
            reasons = self._open[who] = {}
        episode = reasons.get(reason)
        if episode is not None:
            if now - episode[0] < self.window:
                episode[1] += 1
                return False
            self._summary(reason, who, episode)
        reasons[reason] = [now, 0, level]
        fields = {"reason": reason, **(extra or {})}
        self.logger.log(level, message, *args, extra=fields, stacklevel=2)
        return True

    def end(self, who: Hashable) -> None:
        """``who`` is gone (a connection closed): log the counts of its open episodes."""
        self._summarize(who, pop=True)

    def flush(self) -> None:
        """Log the counts of every open episode (the server stops)."""
        for who in list(self._open):
            self._summarize(who, pop=True)

    def _summarize(self, who: Hashable, *, pop: bool) -> None:
        reasons = self._open.pop(who, None) if pop else self._open.get(who)
        for reason, episode in (reasons or {}).items():
            self._summary(reason, who, episode)

    def _summary(self, reason: str, who: Hashable, episode: list[Any]) -> None:
        if episode[1]:
            self.logger.log(
                episode[2],
                "%s: %d more like it over %.1fs (logged once per episode)",
                reason,
                episode[1],
                time.monotonic() - episode[0],
                extra={"reason": reason, "repeated": episode[1]},
            )
