// replica.js beyond the shared fixtures: batches, local refusals, drafts of partial
// mutations, other tabs' edits (the overlay), queries on the view.

import assert from "node:assert/strict";
import { test } from "node:test";

import { InvalidMutation, Replica } from "../replica.js";
import { opWire } from "../ops.js";
import { parseQuery } from "../query.js";
import { makeSchema } from "../schema.js";
import { BOARD } from "./board.js";

const FV = {
  list_id: 3,
  title: 3,
  description: 3,
  votes: 3,
  labels: 3,
  status: 3,
  slug: 3,
  rank: 3,
  done: 3,
};

/** @param {string} id @param {Record<string, unknown>} data */
function card(id, data) {
  return {
    id,
    inc: 1,
    v: 3,
    fv: FV,
    data: {
      list_id: "l1",
      title: "",
      description: "",
      votes: 0,
      labels: [],
      status: "todo",
      slug: "",
      rank: 0,
      done: null,
      ...data,
    },
  };
}

function hydrated() {
  const r = new Replica(BOARD, "test-client-1");
  r.loadSnapshot({
    cursor: "e1.5",
    queries: { cards: { c: "cards", where: { list_id: "l1" } } },
    records: {
      cards: [card("c1", { title: "One", rank: 2 }), card("c2", { title: "Two", rank: 1 })],
    },
  });
  return r;
}

test("a batch is one mutation; a builder that throws queues nothing", () => {
  const r = hydrated();
  const m = r.batch((b) => {
    b.update("cards", "c1", { title: "A" });
    b.increment("cards", "c1", "votes", 2);
    b.insert("cards", "c3", { list_id: "l1" });
    b.update("cards", "c3", { title: "new" });
  }, "partial");
  assert.ok(m);
  assert.equal(m.mode, "partial");
  assert.equal(m.ops.length, 4);
  assert.deepEqual(JSON.parse(JSON.stringify(m.ops[3])), {
    op: "update",
    c: "cards",
    id: "c3",
    set: { title: "new" },
    base: { title: 0 },
    prev: { title: "" },
    inc: null,
  });
  assert.equal(r.get("cards", "c3")?.title, "new");
  assert.throws(
    () =>
      r.batch((b) => {
        b.update("cards", "c1", { title: "B" });
        b.update("cards", "missing", { title: "C" });
      }),
    InvalidMutation,
  );
  assert.deepEqual(
    r.pending.map((p) => p.mutation.id),
    [1],
  );
  assert.equal(
    r.batch(() => {}),
    null,
  );
  assert.throws(() => new Replica(makeSchema(BOARD, null, { strict: true }), "strict-01").insert("nope", "x", {}), /unknown collection/);
  assert.equal(r.insert("others", "x", {}).id, 2, "a partial schema accepts other collections");
  assert.throws(() => r.insert("cards", "", {}), InvalidMutation);
});

test("discardLast takes the id back", () => {
  const r = hydrated();
  const m = r.update("cards", "c1", { title: "A" });
  r.discardLast(m);
  assert.equal(r.nextId, 1);
  assert.equal(r.get("cards", "c1")?.title, "One");
});

test("a partial-mode conflict makes a draft without ops; resolving updates the fields", () => {
  const r = hydrated();
  r.update("cards", "c1", { status: "done", title: "Ship" });
  const events = r.applyAck({
    mid: 1,
    status: "applied",
    seq: 6,
    results: [
      {
        status: "applied",
        conflicts: [
          {
            c: "cards",
            id: "c1",
            field: "status",
            base: "todo",
            mine: "done",
            theirs: "doing",
            theirs_v: 6,
          },
        ],
      },
    ],
  });
  assert.deepEqual(
    events.map((e) => e.kind),
    ["conflict", "changed"],
  );
  assert.equal(r.drafts[0].ops.length, 0);
  const answer = r.resolve(r.drafts[0], { status: "done" });
  assert.deepEqual(JSON.parse(JSON.stringify(answer?.ops.map(opWire))), [
    {
      op: "update",
      c: "cards",
      id: "c1",
      set: { status: "done" },
      base: { status: 6 },
      prev: { status: "doing" },
    },
  ]);
  assert.deepEqual(r.drafts, []);
});

test("a draft answered with no choice keeps theirs and sends nothing", () => {
  const r = hydrated();
  r.update("cards", "c1", { status: "done" });
  r.applyAck({
    mid: 1,
    status: "conflict",
    seq: null,
    results: [
      {
        status: "conflict",
        conflicts: [
          {
            c: "cards",
            id: "c1",
            field: "status",
            base: "todo",
            mine: "done",
            theirs: "doing",
            theirs_v: 6,
          },
        ],
      },
    ],
  });
  assert.equal(r.resolve(r.drafts[0], {}), null);
  assert.equal(r.pending.length, 0);
});

test("other tabs' edits show under this tab's own", () => {
  const r = hydrated();
  r.update("cards", "c1", { title: "mine" });
  const events = r.setOverlay([
    [
      {
        op: "update",
        c: "cards",
        id: "c1",
        set: /** @type {any} */ ({ title: "theirs", rank: 9 }),
        base: {},
        prev: {},
      },
    ],
  ]);
  assert.deepEqual(
    events.map((e) => [e.kind, e.keys]),
    [["changed", ["cards:c1"]]],
  );
  assert.equal(r.get("cards", "c1")?.title, "mine");
  assert.equal(r.get("cards", "c1")?.rank, 9);
  r.setOverlay([]);
  assert.equal(r.get("cards", "c1")?.rank, 2);
});

test("queries run on the view, pending edits applied", () => {
  const r = hydrated();
  const q = parseQuery(
    { c: "cards", where: { list_id: "l1" }, order: [["rank", "asc"]] },
    r.schema,
  );
  assert.deepEqual(
    r.query(q).map((row) => row.id),
    ["c2", "c1"],
  );
  r.update("cards", "c1", { rank: 0 });
  r.delete("cards", "c2");
  assert.deepEqual(
    r.query(q).map((row) => row.id),
    ["c1"],
  );
  const row = r.query(q)[0];
  assert.equal(Object.getPrototypeOf(row), null);
});

test("changes must follow the cursor", () => {
  const r = hydrated();
  assert.throws(() => r.applyChanges({ from: "e1.4", to: "e1.6", q: {} }), /do not follow/);
  assert.throws(
    () =>
      r.applyChanges({
        from: "e1.5",
        to: "e1.6",
        q: { cards: [{ k: "patch", c: "cards", id: "zz", inc: 1, v: 6, fv: {}, data: {} }] },
      }),
    /does not hold/,
  );
});
