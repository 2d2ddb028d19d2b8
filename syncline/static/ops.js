// Records, operations, and the optimistic (client-side) application of an op: a port of
// syncline/record.py (client part) and syncline/ops.py (apply_local, op wire form).
//
// On the wire each op is an object tagged by `op` (docs/protocol.md, Ops):
//   {"op": "insert", "c", "id", "fields"}
//   {"op": "update", "c", "id", "set", "base", "prev", "inc"?}
//   {"op": "delete", "c", "id", "inc"?}
//   {"op": "incr", "c", "id", "field", "by"}
//   {"op": "add", "c", "id", "field", "values"}
//   {"op": "remove", "c", "id", "field", "values", "base"}
// `update.base` holds each field's confirmed version, `update.prev` the value the user
// saw; the server's merge (syncline/merge.py) is the authority, this is the guess.

import { cloneDict, dict, getOwn, hasOwn, isObject } from "./json.js";
import { fieldKind, insertData, setKey, sortSet } from "./schema.js";
import { merge3 } from "./textmerge.js";

/** @typedef {import("./json.js").Dict} Dict */
/** @typedef {import("./schema.js").Collection} Collection */

/**
 * A record as the client holds it (record.py Record, without the server-only parts).
 * @typedef {object} Rec
 * @property {string} id
 * @property {Dict} data  null-prototype: keys are data
 * @property {number} inc  incarnation
 * @property {number} v  seq of its last change
 * @property {Record<string, number>} fv  seq at which each field last changed
 * @property {boolean} deleted
 */

/** @typedef {string | number} SetValue */
/** @typedef {{op: "insert", c: string, id: string, fields: Dict}} InsertOp */
/** @typedef {{op: "update", c: string, id: string, set: Dict, base: Record<string, number>, prev: Dict, inc?: number | null}} UpdateOp */
/** @typedef {{op: "delete", c: string, id: string, inc?: number | null}} DeleteOp */
/** @typedef {{op: "incr", c: string, id: string, field: string, by: number}} IncrOp */
/** @typedef {{op: "add", c: string, id: string, field: string, values: SetValue[]}} AddOp */
/** @typedef {{op: "remove", c: string, id: string, field: string, values: SetValue[], base: number}} RemoveOp */
/** @typedef {InsertOp | UpdateOp | DeleteOp | IncrOp | AddOp | RemoveOp} Op */

/**
 * One mutation: applied whole or not at all; `id` counts 1, 2, 3 … per client id.
 * @typedef {object} Mutation
 * @property {number} id
 * @property {Op[]} ops
 * @property {number} base  the seq of the client's cursor when it was made
 * @property {"whole" | "partial"} mode
 */

/**
 * A record from the wire (`{"id", "inc", "v", "fv", "data"}`), in fresh objects.
 * Throws a TypeError when a required part is missing.
 * @param {unknown} obj
 * @returns {Rec}
 */
export function recordFromWire(obj) {
  const id = getOwn(obj, "id");
  const data = getOwn(obj, "data");
  const inc = getOwn(obj, "inc");
  const v = getOwn(obj, "v");
  const fv = getOwn(obj, "fv");
  if (typeof id !== "string" || !isObject(data) || typeof inc !== "number") {
    throw new TypeError("a record needs id, inc, v, fv and data");
  }
  if (typeof v !== "number" || !isObject(fv)) throw new TypeError("a record needs v and fv");
  return {
    id,
    data: cloneDict(data),
    inc,
    v,
    fv: /** @type {Record<string, number>} */ (cloneDict(fv)),
    deleted: false,
  };
}

/**
 * The record as sent to clients (record.py to_wire).
 * @param {Rec} r
 * @returns {{id: string, inc: number, v: number, fv: Record<string, number>, data: Dict}}
 */
export function recordToWire(r) {
  return { id: r.id, inc: r.inc, v: r.v, fv: r.fv, data: r.data };
}

/**
 * A deep copy (record.py copy).
 * @param {Rec} r
 * @returns {Rec}
 */
export function copyRecord(r) {
  return {
    id: r.id,
    data: cloneDict(r.data),
    inc: r.inc,
    v: r.v,
    fv: /** @type {Record<string, number>} */ (cloneDict(r.fv)),
    deleted: r.deleted,
  };
}

/**
 * Apply `op` optimistically to a replica's view of a record (ops.py apply_local).
 *
 * Mine wins locally; the server's answer replaces this later. An op that no longer makes
 * sense locally (its record has gone) is skipped; the server will say why. Never changes
 * its arguments: a changed record is a copy.
 * @param {Collection | null} coll
 * @param {Rec | null} record
 * @param {Op} op
 * @returns {Rec | null}
 */
export function applyLocal(coll, record, op) {
  if (op.op === "insert") {
    if (record !== null && !record.deleted) return record;
    const data = insertData(coll, op.fields);
    const inc = record !== null ? record.inc + 1 : 1;
    return {
      id: op.id,
      data,
      inc,
      v: 0,
      fv: /** @type {Record<string, number>} */ (dict()),
      deleted: false,
    };
  }
  if (record === null || record.deleted) return record;
  if (op.op === "delete") {
    const out = copyRecord(record);
    out.deleted = true;
    return out;
  }
  const out = copyRecord(record);
  const data = out.data;
  if (op.op === "update") {
    if (op.inc !== undefined && op.inc !== null && op.inc !== record.inc) return record;
    for (const name of Object.keys(op.set)) {
      const mine = op.set[name];
      const kind = fieldKind(coll, name);
      if (kind === "counter" || kind === "set") continue;
      const current = getOwn(data, name);
      if (kind === "text" && typeof mine === "string" && typeof current === "string") {
        const prev = hasOwn(op.prev, name) ? op.prev[name] : current;
        data[name] = merge3(typeof prev === "string" ? prev : current, mine, current);
      } else {
        data[name] = mine;
      }
    }
  } else if (op.op === "incr") {
    const current = getOwn(data, op.field);
    data[op.field] = (Number.isInteger(current) ? /** @type {number} */ (current) : 0) + op.by;
  } else if (op.op === "add") {
    data[op.field] = sortSet([...asList(getOwn(data, op.field)), ...op.values]);
  } else if (op.op === "remove") {
    const drop = new Set(op.values.map(setKey));
    data[op.field] = asList(getOwn(data, op.field)).filter((e) => !drop.has(setKey(e)));
  }
  return out;
}

/** @param {unknown} value @returns {unknown[]} */
function asList(value) {
  return Array.isArray(value) ? value : [];
}

/**
 * An op as it travels (protocol/client.py op_wire): `inc` left out when unknown.
 * @param {Op} op
 * @returns {Record<string, unknown>}
 */
export function opWire(op) {
  /** @type {Record<string, unknown>} */
  const out = {};
  for (const [key, value] of Object.entries(op)) {
    if (value !== null && value !== undefined) out[key] = value;
  }
  return out;
}

/**
 * The `mut` frame of a mutation.
 * @param {Mutation} m
 * @returns {{t: "mut", id: number, base: number, mode: "whole" | "partial", ops: Record<string, unknown>[]}}
 */
export function mutFrame(m) {
  return { t: "mut", id: m.id, base: m.base, mode: m.mode, ops: m.ops.map(opWire) };
}

/**
 * The (collection, id) key of a record: "collection:id", as in `data-sl-id`. Collection
 * names are letters, digits and `_`, so the first ":" separates them.
 * @param {string} collection
 * @param {string} id
 * @returns {string}
 */
export function recordKey(collection, id) {
  return `${collection}:${id}`;
}

/**
 * @param {string} key
 * @returns {[string, string]}
 */
export function splitKey(key) {
  const i = key.indexOf(":");
  return [key.slice(0, i), key.slice(i + 1)];
}
