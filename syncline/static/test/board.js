// The test schema BOARD (tests/schemas.py), as the browser client describes it, with
// what the schema hash covers (required fields: name, Python type name, policy, ref), so
// a test can check that this copy hashes like the Python one.

import { createHash } from "node:crypto";

import { canonicalJson } from "../json.js";

/** @typedef {import("../schema.js").SchemaSpec} SchemaSpec */
/** @typedef {import("../schema.js").FieldSpec} FieldSpec */

const STR = "<class 'str'>";

/** @type {SchemaSpec} */
export const BOARD = {
  boards: {
    name: { required: true, type: STR },
    owner: { queryable: true, default: "" },
  },
  lists: {
    board_id: { required: true, type: STR, ref: "boards", queryable: true },
    name: { default: "" },
    position: { queryable: true, default: 0 },
  },
  cards: {
    list_id: { required: true, type: STR, ref: "lists", queryable: true },
    title: { default: "" },
    description: { kind: "text", default: "" },
    votes: { kind: "counter", default: 0 },
    labels: { kind: "set", default: [] },
    status: { kind: "manual", queryable: true, default: "todo" },
    slug: { kind: "custom", default: "" },
    rank: { queryable: true, default: 0.0 },
    done: { queryable: true, default: null },
  },
};

/**
 * model.py Schema._hash, over a spec that names each required field's Python type.
 * @param {SchemaSpec} spec
 * @param {number} [revision]
 * @returns {string}
 */
export function schemaHash(spec, revision = 0) {
  /** @type {Record<string, unknown[]>} */
  const collections = {};
  for (const [name, fields] of Object.entries(spec)) {
    const required = Object.entries(fields)
      .map(
        ([field, raw]) =>
          /** @type {[string, FieldSpec]} */ ([
            field,
            typeof raw === "string" ? { kind: raw } : raw,
          ]),
      )
      .filter(([, f]) => f.required)
      .map(([field, f]) => [field, f.type ?? "", f.kind ?? "lww", f.ref ?? null])
      .sort((a, b) => (canonicalJson(a) < canonicalJson(b) ? -1 : 1));
    if (required.length) collections[name] = required;
  }
  const core = canonicalJson({ revision, collections });
  return createHash("sha256").update(core, "utf8").digest("hex").slice(0, 16);
}
