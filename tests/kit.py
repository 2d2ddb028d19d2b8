"""Where the conformance kit lives (``tests/fixtures/protocol/``, format: its README.md)
and how its generated files are written, for the runners and the ``gen_*`` scripts.

The kit holds scenario files (every ``*.json`` but the data files below) and four data
files: the schema every scenario uses, the text-merge cases, the query cases and the
local refusals. The data files are generated from the Python implementation
(``python -m tests.gen_*``), and a test per file checks the committed copy is still
what Python computes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

KIT = Path(__file__).parent / "fixtures" / "protocol"
SCHEMA_PATH = KIT / "schema.json"
TEXTMERGE_PATH = KIT / "textmerge.json"
QUERY_PATH = KIT / "query.json"
LOCAL_REFUSALS_PATH = KIT / "local_refusals.json"
UNDO_PATH = KIT / "undo.json"
DATA_FILES = frozenset(
    p.name for p in (SCHEMA_PATH, TEXTMERGE_PATH, QUERY_PATH, LOCAL_REFUSALS_PATH, UNDO_PATH)
)


def scenarios() -> list[Path]:
    """The scenario files, in name order."""
    return sorted(p for p in KIT.glob("*.json") if p.name not in DATA_FILES)


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="ascii"))


def render(fixture: dict[str, Any]) -> str:
    """ASCII JSON (every other character escaped, so no tool can normalize a combining
    mark away): the top-level keys in the generator's order, and each item of a list (or
    of a list under an object) on a line of its own, keys sorted."""
    return _block(fixture, 0) + "\n"


def _block(value: Any, depth: int) -> str:
    pad, inner = "  " * depth, "  " * (depth + 1)
    if isinstance(value, list) and value:
        items = ",\n".join(inner + _compact(item) for item in value)
        return f"[\n{items}\n{pad}]"
    if isinstance(value, dict) and (depth == 0 or all(isinstance(v, list) for v in value.values())):
        items = ",\n".join(
            f"{inner}{_compact(k)}: {_block(v, depth + 1)}" for k, v in value.items()
        )
        return f"{{\n{items}\n{pad}}}"
    return _compact(value)


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=True, sort_keys=True)


def assert_current(
    path: Path, fresh: dict[str, Any], generator: str, rendered: Callable[[Any], str] = render
) -> None:
    """The committed file holds what the generator computes now, written as it writes it."""
    rerun = f"tests/fixtures/protocol/{path.name} is stale: run python -m tests.{generator}"
    assert load(path) == fresh, rerun
    assert path.read_text(encoding="ascii") == rendered(fresh), rerun


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="ascii")
    print(f"wrote {path}")
