"""What a store's failure tells clients and the operator: the refusal code that names
its condition (``storage_full``, ``read_only``, ``unavailable``, else ``retry``), and a
log line when an episode of refused writes begins and one when writes succeed again --
not one per refused mutation, which would bury the log while a disk is full."""

from __future__ import annotations

import logging
import time

from ..exceptions import StoreError

__all__ = ["StoreEpisodes"]

log = logging.getLogger("syncline.server")


class StoreEpisodes:
    """The store's current episode of refused writes, if any (one per server)."""

    def __init__(self) -> None:
        self.condition: str | None = None  # the refusal code while an episode lasts
        self.refused = 0  # writes refused in this episode
        self._since = 0.0

    def failed(self, exc: StoreError, doing: str) -> str:
        """A write failed while ``doing`` something: count it, log it if it begins an
        episode (or changes its condition), and return the refusal code."""
        code = exc.condition or "retry"
        if code != self.condition:
            if self.condition is not None:
                log.warning(
                    "the store's refusals change from %s to %s after %d refusals",
                    self.condition,
                    code,
                    self.refused,
                )
            self.condition, self.refused, self._since = code, 0, time.monotonic()
            log.error(
                "the store refuses writes (%s) while %s: %s; clients retry, and this is "
                "logged again only when writes succeed or the condition changes",
                code,
                doing,
                exc,
                exc_info=exc if exc.condition is None else None,  # unknown: the traceback
            )
        self.refused += 1
        return code

    def succeeded(self) -> None:
        """A write succeeded: end the episode, if one lasts."""
        if self.condition is None:
            return
        log.warning(
            "the store takes writes again: %d refused (%s) over %.1fs",
            self.refused,
            self.condition,
            time.monotonic() - self._since,
        )
        self.condition, self.refused = None, 0
