"""A subscriber as the log reader sees it, for the in-process benchmarks: it only
counts the parts handed to it."""

from __future__ import annotations

from typing import Any

from syncline import Query
from syncline.fanout.reader import ChangesPart


class Sink:
    def __init__(self, principal: str = "bench") -> None:
        self.principal = principal
        self.read_key: object = principal
        self.queries: dict[str, Query] = {}
        self.cursor: int | None = None
        self.awaiting_seq = 0
        self.left = False
        self.resync = False
        self.parts = 0

    def send_changes(self, part: ChangesPart) -> None:
        self.parts += 1

    def send_frame(self, frame: Any) -> None:
        pass
