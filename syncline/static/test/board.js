// The test schema BOARD (tests/schemas.py), read from the conformance kit's schema.json
// (tests/fixtures/protocol/, format: its README.md), so the JS tests and the Python ones
// run against one description, and the schema hash computed from the kit's form of a
// schema as the kit's README specifies.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";

import { canonicalJson, compareCodePoints } from "../json.js";

/** @typedef {import("../schema.js").SchemaSpec} SchemaSpec */
/** @typedef {import("../schema.js").FieldSpec} FieldSpec */
/** @typedef {import("../schema.js").FieldKind} FieldKind */

/**
 * A field in the kit's form (README.md, schema.json).
 * @typedef {object} KitField
 * @property {FieldKind} kind
 * @property {string} type  the type label ("str", "frozenset[str]", ...)
 * @property {string} type_name  the server's name for the type, which the hash covers
 * @property {boolean} required
 * @property {boolean} queryable
 * @property {string | null} ref
 * @property {unknown} [default]
 */

/**
 * A schema in the kit's form.
 * @typedef {object} KitSchema
 * @property {number} revision
 * @property {Record<string, {on_update_deleted: string, fields: Record<string, KitField>}>} collections
 * @property {string} hash
 * @property {string} hash_input
 */

/** The conformance kit's folder. */
export const KIT_DIR = new URL("../../../tests/fixtures/protocol/", import.meta.url);

/** @type {KitSchema & {hash_vectors: KitSchema[]}} */
export const KIT_SCHEMA = JSON.parse(readFileSync(new URL("schema.json", KIT_DIR), "utf8"));

/**
 * The browser client's description of a kit schema: each field's policy, flags,
 * reference and default, and the type name of required fields.
 * @param {KitSchema} kit
 * @returns {SchemaSpec}
 */
export function specFromKit(kit) {
  /** @type {SchemaSpec} */
  const spec = {};
  for (const [name, coll] of Object.entries(kit.collections)) {
    /** @type {Record<string, FieldSpec>} */
    const fields = {};
    for (const [field, f] of Object.entries(coll.fields)) {
      /** @type {FieldSpec} */
      const out = {};
      if (f.required) Object.assign(out, { required: true, type: f.type_name });
      if (f.kind !== "lww") out.kind = f.kind;
      if (f.ref !== null) out.ref = f.ref;
      if (f.queryable) out.queryable = true;
      if ("default" in f) out.default = f.default;
      fields[field] = out;
    }
    spec[name] = fields;
  }
  return spec;
}

/** @type {SchemaSpec} */
export const BOARD = specFromKit(KIT_SCHEMA);

/**
 * The text the schema hash is the SHA-256 of (the kit's README.md, "Schema hash").
 * @param {KitSchema} kit
 * @returns {string}
 */
export function hashInput(kit) {
  /** @type {Record<string, unknown[]>} */
  const collections = {};
  for (const [name, coll] of Object.entries(kit.collections)) {
    const required = Object.entries(coll.fields)
      .filter(([, f]) => f.required)
      .sort(([a], [b]) => compareCodePoints(a, b))
      .map(([field, f]) => [field, f.type_name, f.kind, f.ref]);
    if (required.length) collections[name] = required;
  }
  return canonicalJson({ revision: kit.revision, collections });
}

/**
 * The schema hash of a schema in the kit's form: 16 hex digits.
 * @param {KitSchema} kit
 * @returns {string}
 */
export function schemaHash(kit) {
  return createHash("sha256").update(hashInput(kit), "utf8").digest("hex").slice(0, 16);
}
