"""Where the conformance kit lives (``tests/fixtures/protocol/``, format: its README.md)
and how its generated files are written, for the runners and the ``gen_*`` scripts.

The kit holds scenario files (every ``*.json`` but the data files below) and three data
files: the schema every scenario uses, the text-merge cases and the query cases. The
data files are generated from the Python implementation (``python -m tests.gen_*``), and
a test per file checks the committed copy is still what Python computes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

KIT = Path(__file__).parent / "fixtures" / "protocol"
SCHEMA_PATH = KIT / "schema.json"
TEXTMERGE_PATH = KIT / "textmerge.json"
QUERY_PATH = KIT / "query.json"
DATA_FILES = frozenset(p.name for p in (SCHEMA_PATH, TEXTMERGE_PATH, QUERY_PATH))


def scenarios() -> list[Path]:
    """The scenario files, in name order."""
    return sorted(p for p in KIT.glob("*.json") if p.name not in DATA_FILES)


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="ascii"))


def render(fixture: dict[str, Any], listed: str = "cases") -> str:
    """ASCII JSON (every other character escaped, so no tool can normalize a combining
    mark away), keys sorted, one item of the ``listed`` list per line."""
    head = {k: v for k, v in fixture.items() if k != listed}
    lines = [json.dumps(item, ensure_ascii=True, sort_keys=True) for item in fixture[listed]]
    body = ",\n".join(f"    {line}" for line in lines)
    opening = json.dumps(head, ensure_ascii=True, sort_keys=True, indent=2)[:-2]
    return f'{opening},\n  "{listed}": [\n{body}\n  ]\n}}\n'


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="ascii")
    print(f"wrote {path}")
