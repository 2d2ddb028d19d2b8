// Building one mutation from the application's edits (Replica.batch): each op checked
// as the server would check it (InvalidMutation otherwise), and given its bases from
// the replica: each updated field's base version from what the server confirmed, each
// `prev` from what the user saw (the view, with the ops of this batch so far applied).

import { cloneJson, dict, getOwn, toJson, isObject } from "./json.js";
import { applyLocal, recordKey } from "./ops.js";
import { collectionOf } from "./schema.js";

/** @typedef {import("./json.js").Dict} Dict */
/** @typedef {import("./ops.js").Rec} Rec */
/** @typedef {import("./ops.js").Op} Op */
/** @typedef {import("./ops.js").Mutation} Mutation */
/** @typedef {import("./ops.js").SetValue} SetValue */
/** @typedef {import("./replica.js").Replica} Replica */

/** A mutation the replica (or the server, for sure) would refuse. */
export class InvalidMutation extends Error {
  /**
   * @param {string} message
   * @param {{collection?: string, id?: string, field?: string}} [where]
   */
  constructor(message, where = {}) {
    super(where.collection ? `${where.collection}/${where.id ?? ""}: ${message}` : message);
    this.name = "InvalidMutation";
    this.code = "invalid";
    this.where = where;
  }
}

/** Collects ops for one mutation, filling in bases from the replica. */
export class MutationBuilder {
  /** @param {Replica} replica */
  constructor(replica) {
    this._replica = replica;
    /** @type {Op[]} */
    this.ops = [];
    /** @type {Mutation | null} */
    this.mutation = null;
    /** @type {Map<string, Rec | null>} */
    this._scratch = new Map();
  }

  /** @param {string} collection @param {string} id @returns {Rec | null} */
  _current(collection, id) {
    const key = recordKey(collection, id);
    if (this._scratch.has(key)) return this._scratch.get(key) ?? null;
    return this._replica.view().get(key) ?? null;
  }

  /** @param {Op} op */
  _opsAppend(op) {
    if (typeof op.c !== "string" || op.c.length < 1 || op.c.length > 64) {
      throw new InvalidMutation("a collection name has 1 to 64 characters");
    }
    if (typeof op.id !== "string" || op.id.length < 1 || op.id.length > 128) {
      throw new InvalidMutation("a record id has 1 to 128 characters", { collection: op.c });
    }
    const coll = collectionOf(this._replica.schema, op.c);
    if (coll === null) {
      throw new InvalidMutation("unknown collection", { collection: op.c, id: op.id });
    }
    this._scratch.set(recordKey(op.c, op.id), applyLocal(coll, this._current(op.c, op.id), op));
    this.ops.push(op);
  }

  /** @param {string} collection @param {string} id @param {Record<string, unknown>} fields */
  insert(collection, id, fields) {
    this._opsAppend({ op: "insert", c: collection, id, fields: jsonObject(fields, "fields") });
  }

  /** @param {string} collection @param {string} id @param {Record<string, unknown>} fields */
  update(collection, id, fields) {
    const set = jsonObject(fields, "fields");
    const current = this._current(collection, id);
    if (current === null || current.deleted) {
      throw new InvalidMutation("no such record here", { collection, id });
    }
    const confirmed = this._confirmed(collection, id);
    const base = /** @type {Record<string, number>} */ (dict());
    const prev = dict();
    for (const f of Object.keys(set)) {
      base[f] = confirmed ? (/** @type {number | undefined} */ (getOwn(confirmed.fv, f)) ?? 0) : 0;
      prev[f] = cloneJson(getOwn(current.data, f) ?? null);
    }
    const inc = confirmed ? confirmed.inc : null;
    this._opsAppend({ op: "update", c: collection, id, set, base, prev, inc });
  }

  /**
   * The server's version, unless a pending insert made a new incarnation here (whose
   * number only the server knows).
   * @param {string} collection
   * @param {string} id
   * @returns {Rec | null}
   */
  _confirmed(collection, id) {
    /** @param {Op} o */
    const inserts = (o) => o.op === "insert" && o.c === collection && o.id === id;
    if (this._replica.pending.some((p) => p.mutation.ops.some(inserts))) return null;
    if (this.ops.some(inserts)) return null;
    return this._replica.server.get(recordKey(collection, id)) ?? null;
  }

  /** @param {string} collection @param {string} id */
  delete(collection, id) {
    const confirmed = this._confirmed(collection, id);
    this._opsAppend({ op: "delete", c: collection, id, inc: confirmed ? confirmed.inc : null });
  }

  /** @param {string} collection @param {string} id @param {string} field @param {number} [by] */
  increment(collection, id, field, by = 1) {
    if (!Number.isInteger(by))
      throw new InvalidMutation("an increment is an integer", { collection, id, field });
    this._opsAppend({ op: "incr", c: collection, id, field, by });
  }

  /** @param {string} collection @param {string} id @param {string} field @param {...SetValue} values */
  add(collection, id, field, ...values) {
    this._opsAppend({
      op: "add",
      c: collection,
      id,
      field,
      values: setValues(values, collection, id, field),
    });
  }

  /** @param {string} collection @param {string} id @param {string} field @param {...SetValue} values */
  remove(collection, id, field, ...values) {
    const cursor = this._replica.cursor;
    const base = cursor !== null ? cursor.seq : 0;
    this._opsAppend({
      op: "remove",
      c: collection,
      id,
      field,
      values: setValues(values, collection, id, field),
      base,
    });
  }
}

/**
 * @param {unknown} value
 * @param {string} what
 * @returns {Dict}
 */
function jsonObject(value, what) {
  const data = toJson(value);
  if (!isObject(data)) throw new InvalidMutation(`${what} must be an object`);
  return data;
}

/**
 * @param {unknown[]} values
 * @param {string} collection
 * @param {string} id
 * @param {string} field
 * @returns {SetValue[]}
 */
function setValues(values, collection, id, field) {
  for (const v of values) {
    if (typeof v !== "string" && !Number.isInteger(v)) {
      throw new InvalidMutation("set elements are strings or integers", { collection, id, field });
    }
  }
  return /** @type {SetValue[]} */ ([...values]);
}
