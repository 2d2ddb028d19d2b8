// ops.js: apply_local, op wire forms (expected values computed with syncline/ops.py).

import assert from "node:assert/strict";
import { test } from "node:test";

import { cloneJson, dict } from "../json.js";
import { applyLocal, mutFrame, opWire, recordFromWire } from "../ops.js";
import { collectionOf, makeSchema, sortSet } from "../schema.js";
import { BOARD } from "./board.js";

/** @typedef {import("../ops.js").Rec} Rec */
/** @typedef {import("../ops.js").Op} Op */

const schema = makeSchema(BOARD);
const cards = collectionOf(schema, "cards");

/** @param {Record<string, unknown>} data @returns {Rec} */
function rec(data, inc = 2) {
  return {
    id: "c1",
    data: /** @type {any} */ (cloneJson(data)),
    inc,
    v: 5,
    fv: /** @type {any} */ ({ title: 5 }),
    deleted: false,
  };
}

/** @param {Rec | null} r @param {any} op */
function apply(r, op) {
  const wire = { c: "cards", id: "c1", ...op };
  return applyLocal(cards, r, /** @type {Op} */ (cloneJson(wire)));
}

/** @param {Rec | null} r */
function data(r) {
  return r === null ? null : JSON.parse(JSON.stringify(r.data));
}

const BASE = { list_id: "l1", labels: ["b", "a"], votes: 1, description: "The 🦊 fox", title: "t" };

test("set add and remove keep sets ordered by their JSON key, once each", () => {
  assert.deepEqual(
    data(apply(rec(BASE), { op: "add", field: "labels", values: ["c", 10, "a", 2] })).labels,
    ["a", "b", "c", 10, 2],
  );
  assert.deepEqual(
    data(apply(rec(BASE), { op: "remove", field: "labels", values: ["a"], base: 3 })).labels,
    ["b"],
  );
  assert.deepEqual(data(apply(rec({}), { op: "add", field: "labels", values: ["x"] })).labels, [
    "x",
  ]);
  assert.deepEqual(sortSet(["b", 1, "a", 1, "é", "z"]), ["a", "b", "z", "é", 1]);
});

test("an update skips counters and sets, merges text, sets the rest", () => {
  const out = apply(rec(BASE), {
    op: "update",
    set: { description: "The quick 🦊 fox", votes: 9, labels: ["x"], title: "T" },
    base: {},
    prev: { description: "The 🦊 fox" },
  });
  assert.deepEqual(data(out), {
    list_id: "l1",
    labels: ["b", "a"],
    votes: 1,
    description: "The quick 🦊 fox",
    title: "T",
  });
});

test("a pending text edit merges onto what arrived under it (code points)", () => {
  const out = apply(rec({ description: "The 🦊 fox jumps" }), {
    op: "update",
    set: { description: "The quick 🦊 fox" },
    base: {},
    prev: { description: "The 🦊 fox" },
  });
  assert.equal(data(out).description, "The quick 🦊 fox jumps");
});

test("an update of another incarnation, or of a deleted record, changes nothing", () => {
  const r = rec(BASE);
  assert.equal(apply(r, { op: "update", set: { title: "x" }, base: {}, prev: {}, inc: 1 }), r);
  const gone = apply(r, { op: "delete" });
  assert.equal(gone?.deleted, true);
  assert.equal(r.deleted, false, "the argument is not changed");
  assert.equal(apply(gone, { op: "update", set: { title: "x" }, base: {}, prev: {} }), gone);
  assert.equal(apply(null, { op: "incr", field: "votes", by: 1 }), null);
});

test("increments count a missing value as 0", () => {
  assert.equal(data(apply(rec(BASE), { op: "incr", field: "votes", by: 2 })).votes, 3);
  assert.equal(data(apply(rec({}), { op: "incr", field: "votes", by: -1 })).votes, -1);
});

test("an insert fills defaults and sorts sets; one without a required field shows as typed", () => {
  assert.deepEqual(
    data(
      apply(null, { op: "insert", id: "n", fields: { list_id: "l1", labels: ["b", "a", "b"] } }),
    ),
    {
      list_id: "l1",
      labels: ["a", "b"],
      title: "",
      description: "",
      votes: 0,
      status: "todo",
      slug: "",
      rank: 0,
      done: null,
    },
  );
  assert.deepEqual(data(apply(null, { op: "insert", id: "n", fields: { title: "x" } })), {
    title: "x",
  });
  const again = apply(apply(rec(BASE), { op: "delete" }), {
    op: "insert",
    fields: { list_id: "l2" },
  });
  assert.equal(again?.inc, 3);
  const live = rec(BASE);
  assert.equal(apply(live, { op: "insert", fields: { list_id: "l2" } }), live);
});

test("without a schema every field is last-writer-wins", () => {
  const open = collectionOf(makeSchema(null), "cards");
  const out = applyLocal(
    open,
    rec({ description: "The 🦊 fox jumps" }),
    /** @type {Op} */ ({
      op: "update",
      c: "cards",
      id: "c1",
      set: { description: "mine" },
      base: {},
      prev: { description: "The 🦊 fox" },
    }),
  );
  assert.equal(out?.data.description, "mine");
  assert.equal(collectionOf(makeSchema(BOARD, null, { strict: true }), "nope"), null);
  assert.equal(collectionOf(schema, "nope")?.fields.size, 0);
});

test("wire forms leave out an unknown incarnation", () => {
  assert.deepEqual(opWire({ op: "delete", c: "cards", id: "a", inc: null }), {
    op: "delete",
    c: "cards",
    id: "a",
  });
  const set = dict();
  set.done = null;
  const frame = mutFrame({
    id: 3,
    base: 7,
    mode: "whole",
    ops: [{ op: "update", c: "cards", id: "a", set, base: { done: 1 }, prev: dict(), inc: 2 }],
  });
  assert.deepEqual(JSON.parse(JSON.stringify(frame)), {
    t: "mut",
    id: 3,
    base: 7,
    mode: "whole",
    ops: [
      {
        op: "update",
        c: "cards",
        id: "a",
        set: { done: null },
        base: { done: 1 },
        prev: {},
        inc: 2,
      },
    ],
  });
});

test("records from the wire are fresh objects whose keys are data", () => {
  const wire = JSON.parse(
    '{"id": "x", "inc": 1, "v": 2, "fv": {"__proto__": 2}, "data": {"__proto__": {"polluted": true}}}',
  );
  const r = recordFromWire(wire);
  assert.equal(Object.getPrototypeOf(r.data), null);
  assert.deepEqual(Object.keys(r.data), ["__proto__"]);
  assert.equal(/** @type {any} */ ({}).polluted, undefined);
  assert.throws(() => recordFromWire({ id: "x", data: {} }), TypeError);
});
