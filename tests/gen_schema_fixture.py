"""Write the conformance kit's schema.json (tests/fixtures/protocol/): the test schema
``BOARD`` of ``tests/schemas.py`` in a language-neutral form (collections, fields, their
types, merge policies, queryable flags, references and defaults), its schema hash with
the exact bytes hashed, and further hash test vectors.

Every scenario of the kit runs against this schema; a runner in any language builds its
schema from the file rather than from Python. ``tests/test_protocol_fixtures.py`` checks
that the committed file is still what this script writes, so it cannot drift from
``tests/schemas.py``. Run ``python -m tests.gen_schema_fixture`` after changing
``tests/schemas.py`` on purpose.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import orjson
from pydantic import BaseModel

from syncline import Collection, Counter, Manual, Queryable, Ref, Schema, Set, Text
from syncline.model import Merge

from .kit import SCHEMA_PATH, write
from .schemas import BOARD, pick_longer

CUSTOM_MERGES = {
    "pick_longer": (
        pick_longer,
        "fn(base, mine, theirs): the longer of mine and theirs (length in code points); "
        "a conflict with reason 'same length' when they are as long. Only the server runs "
        "it: a client shows its own value until the ack says what won.",
    )
}


def kit_collections(schema: Schema) -> dict[str, Any]:
    """The schema's collections in the kit's form (README.md, schema.json)."""
    described = schema.describe()
    merges = {fn: name for name, (fn, _) in CUSTOM_MERGES.items()}
    out: dict[str, Any] = {}
    for coll in schema.collections.values():
        fields: dict[str, Any] = {}
        for spec in coll.fields.values():
            given = described[coll.name][spec.name]
            field: dict[str, Any] = {
                "kind": spec.kind,
                "type": given["type"],
                "type_name": spec.type_name,
                "required": spec.required,
                "queryable": spec.queryable,
                "ref": spec.ref,
            }
            if "default" in given:
                field["default"] = given["default"]
            if isinstance(spec.policy, Merge):
                field["merge"] = merges[spec.policy.fn]
            fields[spec.name] = field
        out[coll.name] = {"on_update_deleted": coll.on_update_deleted, "fields": fields}
    return out


def hash_input(kit: dict[str, Any]) -> str:
    """The text whose SHA-256 is the schema hash, computed from the kit's form as README.md
    specifies (``{"revision", "collections"}`` in the kit's form)."""
    collections = {}
    for name, coll in kit["collections"].items():
        required = [
            [field, spec["type_name"], spec["kind"], spec["ref"]]
            for field, spec in coll["fields"].items()
            if spec["required"]
        ]
        if required:
            collections[name] = sorted(required, key=lambda r: r[0])
    core = {"revision": kit["revision"], "collections": collections}
    return orjson.dumps(core, option=orjson.OPT_SORT_KEYS).decode()


class _Labels(BaseModel):
    nom: str
    couleur: str = ""


class _Optional(BaseModel):
    title: str = ""


class _Vector(BaseModel):
    ab: str
    a_b: int
    aB: Annotated[str, Ref("étiquettes"), Manual()]
    café: Annotated[list[str], Set()]
    note: Annotated[str | None, Text()]
    hits: Annotated[int, Counter(), Queryable()]
    optional: str = "not hashed"


def vector_schemas() -> list[Schema]:
    """Schemas that pin what the hash covers: the revision, a collection without required
    fields (left out), names sorted by code point (``aB`` < ``a_b`` < ``ab`` < ``café``),
    non-ASCII names written as UTF-8, a null and a non-null reference."""
    return [
        Schema([Collection("boards", BOARD["boards"].model)], revision=3),
        Schema(
            [
                Collection("étiquettes", _Labels),
                Collection("things", _Vector),
                Collection("optional", _Optional),
            ]
        ),
    ]


def _vector(schema: Schema) -> dict[str, Any]:
    kit = {"revision": schema.revision, "collections": kit_collections(schema)}
    return {"hash": schema.hash, "hash_input": hash_input(kit), **kit}


def generate() -> dict[str, Any]:
    return {
        "description": (
            "The schema every scenario of this kit uses (tests/schemas.py BOARD), its hash "
            "and further hash test vectors; format and hash algorithm: README.md. Written by "
            "python -m tests.gen_schema_fixture; do not edit by hand."
        ),
        "custom_merges": {name: text for name, (_, text) in CUSTOM_MERGES.items()},
        **_vector(BOARD),
        "hash_vectors": [_vector(s) for s in vector_schemas()],
    }


def render(fixture: dict[str, Any]) -> str:
    """ASCII JSON, indented, fields in their declaration order (the kit does not rely on
    the order of object keys; a reader does)."""
    return json.dumps(fixture, ensure_ascii=True, indent=2) + "\n"


def main() -> None:
    write(SCHEMA_PATH, render(generate()))


if __name__ == "__main__":
    main()
