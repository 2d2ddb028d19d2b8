// What the browser knows of the application's schema (syncline/model.py): each field's
// merge policy, so optimistic edits show as the server will merge them.
//
// The page's embedded state carries only the schema hash, so the policies come from the
// application: connect({ schema: { cards: { description: "text", votes: "counter",
// labels: "set", status: { kind: "manual", queryable: true } } } }). The description may
// be partial: a field it does not list is "lww" locally, and a collection it does not
// list is accepted with every field lww (the server decides; its answer corrects the
// view once it arrives). A strict schema (makeSchema(spec, hash, { strict: true }))
// refuses collections it does not list, as the Python replica does.

import { canonicalJson, compareCodePoints, dict, hasOwn, toJson } from "./json.js";

/** @typedef {import("./json.js").Dict} Dict */
/** @typedef {"lww" | "counter" | "text" | "set" | "manual" | "custom"} FieldKind */

/**
 * @typedef {object} FieldSpec
 * @property {FieldKind} [kind]  the merge policy ("lww" when left out)
 * @property {boolean} [queryable]  clients may filter and order on it
 * @property {unknown} [default]  the value a local insert fills in when the field is missing
 * @property {boolean} [required]  a local insert without it is shown as typed
 * @property {string} [ref]  the collection it references
 * @property {string} [type]  the Python type name (what the schema hash covers)
 */

/** @typedef {Record<string, Record<string, FieldKind | FieldSpec>>} SchemaSpec */

/**
 * @typedef {object} Collection
 * @property {string} name
 * @property {Map<string, FieldSpec & {kind: FieldKind}>} fields
 * @property {boolean} checksQueryable  some field says whether it is queryable
 */

/**
 * @typedef {object} Schema
 * @property {boolean} open  collections the schema does not list are accepted
 * @property {Map<string, Collection>} collections
 * @property {string | null} hash  the schema hash, when known
 */

const KINDS = new Set(["lww", "counter", "text", "set", "manual", "custom"]);

/**
 * Normalize the application's schema description (null: nothing declared).
 * @param {SchemaSpec | Schema | null | undefined} spec
 * @param {string | null} [hash]
 * @param {{strict?: boolean}} [options]  strict: refuse collections the spec does not list
 * @returns {Schema}
 */
export function makeSchema(spec, hash = null, options = {}) {
  if (spec && spec.collections instanceof Map) {
    const schema = /** @type {Schema} */ (spec);
    return hash === null || schema.hash === hash ? schema : { ...schema, hash };
  }
  /** @type {Map<string, Collection>} */
  const collections = new Map();
  const open = !options.strict;
  for (const [name, fieldSpecs] of Object.entries(/** @type {SchemaSpec} */ (spec ?? {}))) {
    /** @type {Map<string, FieldSpec & {kind: FieldKind}>} */
    const fields = new Map();
    let checksQueryable = false;
    for (const [field, raw] of Object.entries(fieldSpecs)) {
      const fs = typeof raw === "string" ? { kind: raw } : { ...raw };
      const kind = fs.kind ?? "lww";
      if (!KINDS.has(kind)) throw new TypeError(`${name}.${field}: unknown kind ${String(kind)}`);
      if (fs.queryable !== undefined) checksQueryable = true;
      fields.set(field, { ...fs, kind });
    }
    collections.set(name, { name, fields, checksQueryable });
  }
  return { open, collections, hash };
}

/**
 * The collection named `name`: declared, or (open schema) one with no declared fields.
 * Null when the schema is declared and does not have it.
 * @param {Schema} schema
 * @param {string} name
 * @returns {Collection | null}
 */
export function collectionOf(schema, name) {
  const coll = schema.collections.get(name);
  if (coll) return coll;
  return schema.open ? { name, fields: new Map(), checksQueryable: false } : null;
}

/**
 * The merge policy of a field; "lww" for a field the schema does not list.
 * @param {Collection | null} coll
 * @param {string} field
 * @returns {FieldKind}
 */
export function fieldKind(coll, field) {
  return coll?.fields.get(field)?.kind ?? "lww";
}

/**
 * The canonical key of a set element (model.py set_key: its JSON, keys sorted).
 * @param {unknown} element
 * @returns {string}
 */
export function setKey(element) {
  return canonicalJson(element);
}

/**
 * A set's elements, each once (the last of equal ones), ordered by key (model.py sort_set).
 * @param {Iterable<unknown>} values
 * @returns {unknown[]}
 */
export function sortSet(values) {
  /** @type {Map<string, unknown>} */
  const unique = new Map();
  for (const v of values) unique.set(setKey(v), v);
  return [...unique.keys()].sort(compareCodePoints).map((k) => unique.get(k));
}

/**
 * The data a local insert shows: defaults filled in and sets sorted, as the server's
 * validation would give (Collection.validate); the fields as typed when a required field
 * is missing (the server's refusal will follow).
 * @param {Collection | null} coll
 * @param {Dict} fields  null-prototype JSON data
 * @returns {Dict}
 */
export function insertData(coll, fields) {
  const out = dict();
  for (const key of Object.keys(fields)) out[key] = fields[key];
  if (coll === null) return out;
  for (const [name, spec] of coll.fields) {
    if (hasOwn(fields, name)) continue;
    if (spec.required) return out;
    if (hasOwn(spec, "default")) out[name] = toJson(spec.default);
  }
  for (const [name, spec] of coll.fields) {
    const value = out[name];
    if (spec.kind === "set" && Array.isArray(value)) out[name] = sortSet(value);
  }
  return out;
}
