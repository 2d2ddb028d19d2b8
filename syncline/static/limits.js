// What the server refuses without using a mutation id up (docs/protocol.md, Limits): a
// frame too large, too many ops, a string too long, nesting too deep. Such a refusal
// names no mutation the client could drop, so the client checks here, before queueing,
// and throws instead of sending something that would come back forever.

import { isObject } from "./json.js";
import { mutFrame } from "./ops.js";

/** @typedef {import("./ops.js").Mutation} Mutation */

/**
 * @typedef {object} Limits  what the server refuses without using a mutation id up
 * @property {number} maxFrameBytes
 * @property {number} maxOps
 * @property {number} maxString
 */

/** @type {Limits} */
export const DEFAULT_LIMITS = { maxFrameBytes: 1 << 20, maxOps: 500, maxString: 100_000 };

/**
 * Why the server would refuse this mutation's frame, or null if it would not.
 * @param {Mutation} mutation
 * @param {Limits} limits
 * @returns {string | null}
 */
export function limitProblem(mutation, limits) {
  const frame = mutFrame(mutation);
  const size = new TextEncoder().encode(JSON.stringify(frame)).length;
  if (size > limits.maxFrameBytes) return `the mutation is ${size} bytes`;
  if (mutation.ops.length > limits.maxOps) return `more than ${limits.maxOps} ops`;
  return stringProblem(frame, limits.maxString, 0);
}

/**
 * The first string longer than the limit (in code points), or nesting deeper than 32.
 * @param {unknown} value
 * @param {number} limit
 * @param {number} depth
 * @returns {string | null}
 */
function stringProblem(value, limit, depth) {
  if (depth > 32) return "nested more than 32 levels deep";
  if (typeof value === "string") {
    if (value.length > limit) {
      let n = 0;
      for (const _ of value) n++;
      if (n > limit) return `a string of ${n} characters exceeds the limit of ${limit}`;
    }
    return null;
  }
  if (Array.isArray(value)) {
    for (const v of value) {
      const p = stringProblem(v, limit, depth + 1);
      if (p) return p;
    }
  } else if (isObject(value)) {
    for (const k of Object.keys(value)) {
      const p = stringProblem(k, limit, depth + 1) ?? stringProblem(value[k], limit, depth + 1);
      if (p) return p;
    }
  }
  return null;
}
