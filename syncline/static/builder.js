// Building one mutation from the application's edits (Replica.batch): each op checked
// as the server would check it (InvalidMutation otherwise), and given its bases from
// the replica: each updated field's base version from what the server confirmed, each
// `prev` from what the user saw (the view, with the ops of this batch so far applied).
//
// Refused here, before any round trip, with the server's own error (code, message and
// place; the conformance kit's local_refusals.json pins them): a collection the schema
// does not have, a field its collection does not have, `incr` on a field that is not a
// counter, `add`/`remove` on one that is not a set, a plain update of a counter or set.
// The browser knows what the page told it: a collection is known whole when the schema
// is strict (makeSchema(spec, hash, { strict: true }): the spec is the whole schema) or
// when every field it lists carries its `type`, as the server's description does (the
// page's embedded `fields`, Schema.describe()). A field the schema lists has a known
// policy; of a partial description nothing more is checked, and the server decides.

import { cloneJson, compareCodePoints, dict, getOwn, toJson, isObject } from "./json.js";
import { applyLocal, recordKey } from "./ops.js";
import { collectionOf } from "./schema.js";

/** @typedef {import("./json.js").Dict} Dict */
/** @typedef {import("./ops.js").Rec} Rec */
/** @typedef {import("./ops.js").Op} Op */
/** @typedef {import("./ops.js").Mutation} Mutation */
/** @typedef {import("./ops.js").SetValue} SetValue */
/** @typedef {import("./replica.js").Replica} Replica */

/** @typedef {{collection?: string, id?: string, field?: string}} Where */

/**
 * A mutation the replica (or the server, for sure) would refuse. The message names the
 * place as the server's does (exceptions.py): `cards/'c1'.votes: ...`.
 */
export class InvalidMutation extends Error {
  /**
   * @param {string} message
   * @param {Where} [where]
   */
  constructor(message, where = {}) {
    const place = placeText(where);
    super(place ? `${place}: ${message}` : message);
    this.name = "InvalidMutation";
    /** @type {string} the server's code for the refusal */
    this.code = "invalid";
    this.where = where;
  }
}

/** An op the field's merge policy forbids (the server's `policy` refusal). */
export class PolicyViolation extends InvalidMutation {
  /**
   * @param {string} message
   * @param {Where} [where]
   */
  constructor(message, where = {}) {
    super(message, where);
    this.name = "PolicyViolation";
    this.code = "policy";
  }
}

/**
 * `collection/'id'.field`, as exceptions.py writes a place (the id as Python's repr).
 * @param {Where} where
 * @returns {string}
 */
function placeText(where) {
  const parts = [];
  if (where.collection !== undefined) parts.push(where.collection);
  if (where.id !== undefined) parts.push(pyRepr(where.id));
  const place = parts.join("/");
  if (where.field === undefined) return place;
  return place ? `${place}.${where.field}` : where.field;
}

// Python's str.isprintable() is false for these categories (and true for the space).
const UNPRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]/u;

/**
 * A string as Python's repr() writes it, so messages are the server's to the letter.
 * @param {string} text
 * @returns {string}
 */
export function pyRepr(text) {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of text) {
    const cp = /** @type {number} */ (ch.codePointAt(0));
    if (ch === quote || ch === "\\") out += `\\${ch}`;
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (ch === " " || !UNPRINTABLE.test(ch)) out += ch;
    else if (cp < 0x100) out += `\\x${cp.toString(16).padStart(2, "0")}`;
    else if (cp < 0x10000) out += `\\u${cp.toString(16).padStart(4, "0")}`;
    else out += `\\U${cp.toString(16).padStart(8, "0")}`;
  }
  return out + quote;
}

/**
 * Names sorted by code point, written as Python writes a list of strings.
 * @param {Iterable<string>} names
 * @returns {string}
 */
function pyNames(names) {
  return `[${[...names].sort(compareCodePoints).map(pyRepr).join(", ")}]`;
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
    const schema = this._replica.schema;
    const coll = collectionFor(schema, op.c, op.id);
    refuseEarly(schema, coll, op);
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
    const schema = this._replica.schema;
    collectionFor(schema, collection, id); // an unknown collection first, as the server
    const current = this._current(collection, id);
    if (current === null || current.deleted) {
      const why = schema.collections.has(collection)
        ? ""
        : ` (this page's schema does not list ${collection}, so only the server can say` +
          " whether it exists)";
      throw new InvalidMutation(`no such record here${why}`, { collection, id });
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

/**
 * The op's collection, or the server's refusal of a collection the schema does not have.
 * @param {import("./schema.js").Schema} schema
 * @param {string} name
 * @param {string} id
 */
function collectionFor(schema, name, id) {
  const coll = collectionOf(schema, name);
  if (coll !== null) return coll;
  const declared = pyNames(schema.collections.keys());
  throw new InvalidMutation(`unknown collection; declared: ${declared}`, { collection: name, id });
}

/**
 * Refuse, with the server's error, what the server would refuse whatever the record
 * holds: an unknown field (when the collection is known whole), an op the field's
 * policy forbids (when the schema lists the field). See the comment at the top.
 * @param {import("./schema.js").Schema} schema
 * @param {import("./schema.js").Collection} coll
 * @param {Op} op
 */
function refuseEarly(schema, coll, op) {
  const listed = schema.collections.get(coll.name) === coll;
  const whole =
    listed && (!schema.open || [...coll.fields.values()].every((f) => typeof f.type === "string"));
  /** @param {string} field @returns {string | null} the field's policy, if known */
  const kind = (field) => {
    const spec = coll.fields.get(field);
    if (spec) return spec.kind;
    if (!whole) return null;
    throw new InvalidMutation(`unknown field; ${coll.name} has ${pyNames(coll.fields.keys())}`, {
      collection: coll.name,
      id: op.id,
      field,
    });
  };
  const where = (/** @type {string} */ field) => ({ collection: coll.name, id: op.id, field });
  if (op.op === "insert") {
    for (const field of Object.keys(op.fields)) kind(field);
  } else if (op.op === "update") {
    for (const field of Object.keys(op.set)) {
      const k = kind(field);
      if (k === "counter") {
        throw new PolicyViolation("a counter changes only by increments: use incr", where(field));
      }
      if (k === "set") {
        throw new PolicyViolation("a set changes only by add and remove", where(field));
      }
    }
  } else if (op.op !== "delete") {
    const need = op.op === "incr" ? "counter" : "set";
    const k = kind(op.field);
    if (k !== null && k !== need) {
      const message = `${op.op} needs a ${need} field; this one is ${k}`;
      throw new PolicyViolation(message, where(op.field));
    }
  }
}
