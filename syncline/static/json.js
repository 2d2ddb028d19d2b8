// JSON values from the server, handled as data (docs/protocol.md, Change items).
//
// Object keys that come over the wire are data: a record id, a query id or a field may
// be "__proto__", "constructor" or "prototype". Every object built here from server
// data has a null prototype, so a key can never reach Object.prototype, and every read
// of a data key goes through an own-property check (`getOwn`), so "constructor" never
// finds Object's constructor. Strings compare by Unicode code point, as Python does.

/** @typedef {Record<string, unknown>} Dict  A JSON object; keys are data. */

/** A fresh object with no prototype: any key is an own data property. @returns {Dict} */
export function dict() {
  return /** @type {Dict} */ (Object.create(null));
}

const hasOwnProperty = Object.prototype.hasOwnProperty;

/**
 * @param {unknown} obj
 * @param {string} key
 * @returns {boolean}
 */
export function hasOwn(obj, key) {
  return obj !== null && typeof obj === "object" && hasOwnProperty.call(obj, key);
}

/**
 * The own property `key` of `obj`, or undefined (never an inherited one).
 * @param {unknown} obj
 * @param {string} key
 * @returns {unknown}
 */
export function getOwn(obj, key) {
  return hasOwn(obj, key) ? /** @type {Dict} */ (obj)[key] : undefined;
}

/**
 * Set an own data property, whatever the key and whatever the object's prototype.
 * @param {object} obj
 * @param {string} key
 * @param {unknown} value
 */
export function setOwn(obj, key, value) {
  Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
}

/** @param {unknown} value @returns {value is Dict} */
export function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/**
 * A deep copy of a JSON value whose objects have null prototypes. Only own enumerable
 * string keys are copied (as `JSON.parse` makes them, "__proto__" included).
 * @param {unknown} value
 * @returns {unknown}
 */
export function cloneJson(value) {
  if (Array.isArray(value)) return value.map(cloneJson);
  if (value !== null && typeof value === "object") {
    const out = dict();
    for (const key of Object.keys(value)) out[key] = cloneJson(/** @type {Dict} */ (value)[key]);
    return out;
  }
  return value;
}

/**
 * A JSON object from the wire as a fresh null-prototype dict (a shallow copy whose
 * values are deep copies). Anything that is not an object gives an empty dict.
 * @param {unknown} value
 * @returns {Dict}
 */
export function cloneDict(value) {
  return isObject(value) ? /** @type {Dict} */ (cloneJson(value)) : dict();
}

/**
 * A value the application handed over (fields of an insert, a choice), as JSON data:
 * what `JSON.stringify` would send, parsed back into null-prototype objects.
 * @param {unknown} value
 * @returns {unknown}
 */
export function toJson(value) {
  if (value === undefined) return null;
  const text = JSON.stringify(value);
  return text === undefined ? null : cloneJson(JSON.parse(text));
}

/**
 * Whether two JSON values are equal: objects by own keys (in any order), arrays in order.
 * @param {unknown} a
 * @param {unknown} b
 * @returns {boolean}
 */
export function jsonEqual(a, b) {
  if (a === b) return true;
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length && a.every((v, i) => jsonEqual(v, b[i]));
  }
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    const kb = Object.keys(b);
    return ka.length === kb.length && ka.every((k) => hasOwn(b, k) && jsonEqual(a[k], b[k]));
  }
  return false;
}

/**
 * Compare two strings by Unicode code point (as Python does), not by UTF-16 unit.
 * @param {string} a
 * @param {string} b
 * @returns {number} negative, 0 or positive
 */
export function compareCodePoints(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x !== y) {
      // Surrogates (U+D800..U+DFFF) encode code points above U+FFFF: move them above
      // U+E000..U+FFFF, which move down, so the order is the code points' order.
      if (x >= 0xd800) x += x >= 0xe000 ? -0x800 : 0x2000;
      if (y >= 0xd800) y += y >= 0xe000 ? -0x800 : 0x2000;
      return x - y;
    }
  }
  return a.length - b.length;
}

/**
 * JSON text with object keys sorted (orjson's OPT_SORT_KEYS): a canonical key.
 * @param {unknown} value
 * @returns {string}
 */
export function canonicalJson(value) {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (isObject(value)) {
    const keys = Object.keys(value).sort(compareCodePoints);
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(",")}}`;
  }
  const text = JSON.stringify(value);
  return text === undefined ? "null" : text;
}
