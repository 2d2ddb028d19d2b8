"""The schemas tests share: a small board (every policy, references, rules)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel

from syncline import Collection, Counter, Manual, Merge, Queryable, Ref, Schema, Set, Text
from syncline.model import Conflict


class Board(BaseModel):
    name: str
    owner: Annotated[str, Queryable()] = ""


class List(BaseModel):
    board_id: Annotated[str, Ref("boards"), Queryable()]
    name: str = ""
    position: Annotated[int, Queryable()] = 0


def pick_longer(base: Any, mine: Any, theirs: Any) -> Any:
    if len(mine) == len(theirs):
        return Conflict("same length")
    return mine if len(mine) > len(theirs) else theirs


class Card(BaseModel):
    list_id: Annotated[str, Ref("lists"), Queryable()]
    title: str = ""
    description: Annotated[str, Text()] = ""
    votes: Annotated[int, Counter()] = 0
    labels: Annotated[frozenset[str], Set()] = frozenset()
    status: Annotated[str, Manual(), Queryable()] = "todo"
    slug: Annotated[str, Merge(pick_longer)] = ""
    rank: Annotated[float, Queryable()] = 0.0
    done: Annotated[bool | None, Queryable()] = None


def board_schema(**card_options: Any) -> Schema:
    return Schema(
        [
            Collection("boards", Board),
            Collection("lists", List),
            Collection("cards", Card, **card_options),
        ]
    )


BOARD = board_schema()
