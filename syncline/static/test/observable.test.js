// observable.js

import assert from "node:assert/strict";
import { test } from "node:test";

import { Value, readonly } from "../observable.js";

test("subscribers get the value at once and after each change", () => {
  const v = new Value(1);
  /** @type {number[]} */
  const seen = [];
  const off = v.subscribe((x) => seen.push(x));
  v.set(2);
  v.set(2);
  off();
  v.set(3);
  assert.deepEqual(seen, [1, 2]);
  assert.equal(readonly(v).value, 3);
});

test("start and stop follow the first and the last subscriber", () => {
  /** @type {string[]} */
  const log = [];
  const v = new Value(0, { start: () => log.push("start"), stop: () => log.push("stop") });
  const a = v.subscribe(() => {});
  const b = v.subscribe(() => {});
  a();
  a();
  assert.deepEqual(log, ["start"]);
  b();
  assert.deepEqual(log, ["start", "stop"]);
  assert.equal(v.observed, false);
});

test("a listener that throws does not stop the others", () => {
  const v = new Value(0);
  /** @type {number[]} */
  const seen = [];
  const original = console.error;
  /** @type {unknown[]} */
  const reported = [];
  console.error = (/** @type {unknown} */ e) => reported.push(e);
  try {
    v.subscribe((x) => {
      if (x) throw new Error("boom");
    });
    v.subscribe((x) => seen.push(x));
    v.set(1);
  } finally {
    console.error = original;
  }
  assert.deepEqual(seen, [0, 1]);
  assert.equal(reported.length, 1);
});
