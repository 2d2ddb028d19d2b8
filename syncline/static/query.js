// Queries: a collection, a filter on queryable fields, an order and a limit — a port of
// syncline/query.py with the same reference semantics for `matches` and `sortRows`:
// null never satisfies a range and sorts before every value; values sort by type first
// (null, booleans, numbers, strings), strings by code point; ties are ordered by id.
//
// The wire form (docs/protocol.md, Concepts):
//   {"c": "cards", "where": {"list_id": "l1", "votes": {"gte": 3}}, "order": [["votes", "desc"]], "limit": 50}

import { compareCodePoints, getOwn, hasOwn, isObject } from "./json.js";

/** @typedef {import("./schema.js").Schema} Schema */
/** @typedef {"eq" | "ne" | "in" | "gt" | "gte" | "lt" | "lte"} Operator */
/** @typedef {[string, Operator, unknown]} Condition  [field, operator, value] */
/** @typedef {"asc" | "desc"} Direction */

/**
 * @typedef {object} Query
 * @property {string} collection
 * @property {Condition[]} conditions
 * @property {[string, Direction][]} order
 * @property {number | null} limit
 */

export const MAX_LIMIT = 10_000;
const OPS = new Set(["eq", "ne", "in", "gt", "gte", "lt", "lte"]);
const QUERY_KEYS = new Set(["c", "where", "order", "limit"]);

/** A query cannot be run as written. */
export class QueryError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "QueryError";
    this.code = "query";
  }
}

/** @param {unknown} v @returns {boolean} */
function isScalar(v) {
  return v === null || ["string", "number", "boolean"].includes(typeof v);
}

/**
 * Decode and check a wire query, or throw a QueryError naming the problem. With a
 * declared schema the collection must exist, and where the collection says which of its
 * fields are queryable, only those (and `id`) may filter or order.
 * @param {unknown} obj
 * @param {Schema | null} [schema]
 * @returns {Query}
 */
export function parseQuery(obj, schema = null) {
  if (!isObject(obj)) throw new QueryError("a query must be an object");
  const unknown = Object.keys(obj).filter((k) => !QUERY_KEYS.has(k));
  if (unknown.length) {
    throw new QueryError(
      `unknown query keys ${JSON.stringify(unknown.sort())}; allowed: c, where, order, limit`,
    );
  }
  const name = getOwn(obj, "c");
  if (typeof name !== "string") throw new QueryError("a query needs a collection name in 'c'");
  const coll = schema ? schema.collections.get(name) : undefined;
  if (schema && !schema.open && !coll) throw new QueryError(`unknown collection '${name}'`);
  /** @param {string} field */
  const queryable = (field) =>
    field === "id" || !coll || !coll.checksQueryable || coll.fields.get(field)?.queryable === true;
  /** @type {Condition[]} */
  const conditions = [];
  const where = getOwn(obj, "where") ?? {};
  if (!isObject(where)) throw new QueryError(`${name}: 'where' must be an object`);
  for (const field of Object.keys(where)) {
    const cond = where[field];
    if (!queryable(field)) throw new QueryError(`${name}.${field} is not queryable`);
    if (isObject(cond)) {
      for (const op of Object.keys(cond)) {
        if (!OPS.has(op)) {
          throw new QueryError(`${name}.${field}: unknown operator '${op}'; use ${[...OPS]}`);
        }
        const value = checkValue(name, field, op, cond[op]);
        conditions.push([field, /** @type {Operator} */ (op), value]);
      }
    } else {
      conditions.push([field, "eq", checkValue(name, field, "eq", cond)]);
    }
  }
  /** @type {[string, Direction][]} */
  const order = [];
  const orderItems = getOwn(obj, "order") ?? [];
  if (!Array.isArray(orderItems)) throw new QueryError(`${name}: 'order' must be a list`);
  for (const item of orderItems) {
    if (
      !Array.isArray(item) ||
      item.length !== 2 ||
      typeof item[0] !== "string" ||
      (item[1] !== "asc" && item[1] !== "desc")
    ) {
      throw new QueryError(`${name}: each order item is [field, 'asc' | 'desc']`);
    }
    if (!queryable(item[0])) {
      throw new QueryError(`${name}: cannot order by '${item[0]}'; it is not queryable`);
    }
    order.push([item[0], item[1]]);
  }
  const limit = getOwn(obj, "limit") ?? null;
  if (
    limit !== null &&
    (typeof limit !== "number" || !Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT)
  ) {
    throw new QueryError(`${name}: limit must be an integer from 1 to ${MAX_LIMIT}`);
  }
  return { collection: name, conditions, order, limit: /** @type {number | null} */ (limit) };
}

/**
 * @param {string} coll
 * @param {string} field
 * @param {string} op
 * @param {unknown} value
 * @returns {unknown}
 */
function checkValue(coll, field, op, value) {
  if (op === "in") {
    if (!Array.isArray(value) || !value.every(isScalar)) {
      throw new QueryError(`${coll}.${field}: 'in' takes a list of scalars`);
    }
    if (value.length > 1000)
      throw new QueryError(`${coll}.${field}: 'in' takes at most 1000 values`);
    return [...value];
  }
  if (!isScalar(value)) {
    throw new QueryError(`${coll}.${field}: ${op} takes a string, number, boolean or null`);
  }
  return value;
}

/**
 * The canonical wire form (Query.to_wire): every condition as an operator object.
 * @param {Query} query
 * @returns {Record<string, unknown>}
 */
export function queryToWire(query) {
  /** @type {Record<string, Record<string, unknown>>} */
  const where = Object.create(null);
  for (const [field, op, value] of query.conditions) {
    if (!hasOwn(where, field)) where[field] = Object.create(null);
    where[field][op] = Array.isArray(value) ? [...value] : value;
  }
  /** @type {Record<string, unknown>} */
  const out = { c: query.collection, where };
  if (query.order.length) out.order = query.order.map((o) => [...o]);
  if (query.limit !== null) out.limit = query.limit;
  return out;
}

/**
 * Does a row (`id` plus fields) satisfy the filter?
 * @param {Query} query
 * @param {Record<string, unknown>} row
 * @returns {boolean}
 */
export function matches(query, row) {
  return query.conditions.every(([field, op, value]) =>
    test(getOwn(row, field) ?? null, op, value),
  );
}

/**
 * Rows ordered by `order` then by id, with the limit applied (Query.sort).
 * @template {Record<string, unknown>} T
 * @param {Query} query
 * @param {T[]} rows
 * @returns {T[]}
 */
export function sortRows(query, rows) {
  // One sort on (order fields..., id), each row's keys computed once: the same order as
  // sorting by id, then stably by each field from the last to the first (Query.sort),
  // since a descending field only reverses that field's comparison and ties fall through.
  const order = query.order;
  const signs = order.map(([, direction]) => (direction === "desc" ? -1 : 1));
  const keyed = rows.map((row) => ({
    row,
    id: String(getOwn(row, "id")),
    keys: order.map(([field]) => sortKey(getOwn(row, field) ?? null)),
  }));
  keyed.sort((a, b) => {
    for (let i = 0; i < signs.length; i++) {
      const c = compareSortKeys(a.keys[i], b.keys[i]);
      if (c !== 0) return signs[i] * c;
    }
    return compareCodePoints(a.id, b.id);
  });
  const out = keyed.map((k) => k.row);
  return query.limit !== null ? out.slice(0, query.limit) : out;
}

/** @typedef {[number, number | string]} SortKey  [type rank, value] */

/**
 * The type-ranked sort key of a value (query.py sort_key).
 * @param {unknown} value
 * @returns {SortKey}
 */
export function sortKey(value) {
  if (value === null || value === undefined) return [0, 0];
  if (typeof value === "boolean") return [1, value ? 1 : 0];
  if (typeof value === "number") return [2, value];
  // Queryable fields hold scalars; anything else sorts by its JSON text.
  return [3, typeof value === "string" ? value : JSON.stringify(value)];
}

/**
 * @param {SortKey} a
 * @param {SortKey} b
 * @returns {number}
 */
export function compareSortKeys(a, b) {
  if (a[0] !== b[0]) return a[0] - b[0];
  const x = a[1];
  const y = b[1];
  if (typeof x === "string" && typeof y === "string") return compareCodePoints(x, y);
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * @param {unknown} actual
 * @param {string} op
 * @param {unknown} expected
 * @returns {boolean}
 */
function test(actual, op, expected) {
  if (op === "eq") {
    // Same type and equal, numbers compared as numbers (never booleans as numbers).
    return actual === expected;
  }
  if (op === "ne") return !test(actual, "eq", expected);
  if (op === "in") return /** @type {unknown[]} */ (expected).some((e) => test(actual, "eq", e));
  if (actual === null || expected === null) return false;
  const a = sortKey(actual);
  const b = sortKey(expected);
  if (a[0] !== b[0]) return false;
  const c = compareSortKeys(a, b);
  if (op === "gt") return c > 0;
  if (op === "gte") return c >= 0;
  if (op === "lt") return c < 0;
  return c <= 0;
}
