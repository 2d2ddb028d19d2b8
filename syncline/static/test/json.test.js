// json.js: server data as data, never as prototypes; code point order.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  canonicalJson,
  cloneJson,
  compareCodePoints,
  dict,
  getOwn,
  hasOwn,
  jsonEqual,
  setOwn,
  toJson,
} from "../json.js";

test("keys such as __proto__ and constructor are own data properties", () => {
  const parsed = JSON.parse(
    '{"__proto__": {"polluted": true}, "constructor": {"prototype": {"polluted": true}}}',
  );
  const copy = /** @type {Record<string, unknown>} */ (cloneJson(parsed));
  assert.equal(Object.getPrototypeOf(copy), null);
  assert.ok(hasOwn(copy, "__proto__"));
  assert.deepEqual(Object.keys(copy), ["__proto__", "constructor"]);
  assert.equal(/** @type {any} */ ({}).polluted, undefined);
  const d = dict();
  d.__proto__ = { polluted: true };
  assert.ok(hasOwn(d, "__proto__"));
  assert.equal(Object.getPrototypeOf(d), null);
  const plain = {};
  setOwn(plain, "__proto__", 1);
  assert.equal(Object.getPrototypeOf(plain), Object.prototype);
  assert.ok(hasOwn(plain, "__proto__"));
  assert.equal(/** @type {any} */ ({}).polluted, undefined);
});

test("getOwn never finds inherited properties", () => {
  assert.equal(getOwn({}, "constructor"), undefined);
  assert.equal(getOwn({}, "toString"), undefined);
  assert.equal(getOwn({ a: 1 }, "a"), 1);
  assert.equal(getOwn(null, "a"), undefined);
  assert.equal(getOwn("text", "length"), undefined);
});

test("strings compare by code point, as Python does", () => {
  // U+FFFF is above the surrogates in UTF-16 units, below U+1F600 in code points.
  assert.ok("\uffff" > "😀", "UTF-16 order differs");
  assert.ok(compareCodePoints("\uffff", "😀") < 0);
  assert.ok(compareCodePoints("😀", "\uffff") > 0);
  assert.ok(compareCodePoints("a", "b") < 0);
  assert.ok(compareCodePoints("ab", "a") > 0);
  assert.equal(compareCodePoints("🦊", "🦊"), 0);
  assert.deepEqual(["😀", "\uffff", "a", "B", "\ue000"].sort(compareCodePoints), [
    "B",
    "a",
    "\ue000",
    "\uffff",
    "😀",
  ]);
});

test("canonical JSON sorts keys (orjson OPT_SORT_KEYS)", () => {
  assert.equal(canonicalJson({ b: 1, a: [true, null, "x"] }), '{"a":[true,null,"x"],"b":1}');
  assert.equal(canonicalJson("é\u001f"), '"é\\u001f"');
  assert.equal(canonicalJson(12), "12");
});

test("jsonEqual compares own keys in any order", () => {
  assert.ok(jsonEqual({ a: 1, b: [1, { c: 2 }] }, { b: [1, { c: 2 }], a: 1 }));
  assert.ok(!jsonEqual({ a: 1 }, { a: 1, b: undefined }));
  assert.ok(!jsonEqual([1, 2], [2, 1]));
  assert.ok(jsonEqual(cloneJson({ x: { y: 1 } }), { x: { y: 1 } }));
});

test("toJson gives what JSON would send", () => {
  assert.equal(toJson(undefined), null);
  assert.deepEqual(JSON.parse(JSON.stringify(toJson({ a: new Date(0), b: undefined }))), {
    a: "1970-01-01T00:00:00.000Z",
  });
});
