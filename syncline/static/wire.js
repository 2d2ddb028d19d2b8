// Reading what the server sent: an own property that must be there, a list, an object,
// an integer, each checked where it is read. A check that fails throws a TypeError,
// which the protocol answers as a malformed frame (reconnect and resume) and never as a
// bug of this client. Own properties only: a key such as "__proto__" in a frame is data.

import { cloneJson, hasOwn, isObject } from "./json.js";

/** @typedef {import("./json.js").Dict} Dict */
/** @typedef {import("./replica.js").Conflict} Conflict */

/**
 * An own property that must be there; a TypeError (a malformed frame) otherwise.
 * @param {unknown} obj
 * @param {string} key
 * @returns {unknown}
 */
export function need(obj, key) {
  if (!hasOwn(obj, key)) throw new TypeError(`missing '${key}'`);
  return /** @type {Dict} */ (obj)[key];
}

/** @param {unknown} value @param {string} what @returns {unknown[]} */
export function list(value, what) {
  if (!Array.isArray(value)) throw new TypeError(`${what} must be a list`);
  return value;
}

/** @param {unknown} value @param {string} what @returns {Dict} */
export function object(value, what) {
  if (!isObject(value)) throw new TypeError(`${what} must be an object`);
  return value;
}

/** @param {unknown} value @param {string} what @returns {number} */
export function integer(value, what) {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new TypeError(`${what} must be an integer`);
  }
  return value;
}

/**
 * A conflict from the wire, in fresh objects.
 * @param {unknown} c
 * @returns {Conflict}
 */
export function conflictFromWire(c) {
  const field = need(c, "field");
  return {
    c: String(need(c, "c")),
    id: String(need(c, "id")),
    field: field === null ? null : String(field),
    base: cloneJson(need(c, "base")),
    mine: cloneJson(need(c, "mine")),
    theirs: cloneJson(need(c, "theirs")),
    theirs_v: integer(need(c, "theirs_v"), "theirs_v"),
  };
}
