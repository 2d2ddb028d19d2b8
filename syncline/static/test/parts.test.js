// The small parts the client facade is made of, each alone: listeners.js, limits.js,
// views.js (live queries and bound elements) and storage.js's QueueKeeper.

import assert from "node:assert/strict";
import { test } from "node:test";

import { DEFAULT_LIMITS, limitProblem } from "../limits.js";
import { Listeners } from "../listeners.js";
import { parseQuery } from "../query.js";
import { Replica } from "../replica.js";
import { QueueKeeper, memoryStore } from "../storage.js";
import { Views } from "../views.js";
import { BOARD } from "./board.js";
import { FakeElement, settle } from "./fakes.js";

/** @typedef {import("../storage.js").SavedQueue} SavedQueue */

function board() {
  const r = new Replica(BOARD, "tab-parts-0001");
  r.loadSnapshot({
    cursor: "e1.5",
    queries: { q: { c: "cards" } },
    records: { q: [{ id: "c1", inc: 1, v: 1, fv: {}, data: { list_id: "l1", title: "Shop" } }] },
  });
  return r;
}

test("listeners: one that throws does not stop the others; '*' hears every kind", () => {
  const listeners = new Listeners();
  /** @type {string[]} */
  const heard = [];
  const reported = globalThis.reportError;
  /** @type {unknown[]} */
  const errors = [];
  globalThis.reportError = (e) => errors.push(e);
  try {
    listeners.on("ack", () => {
      throw new Error("broken handler");
    });
    const off = listeners.on("ack", (p) => heard.push(`ack ${p}`));
    listeners.on("*", (p) => heard.push(`* ${p}`));
    listeners.emit("ack", 1);
    off();
    listeners.emit("ack", 2);
    listeners.emit("status", 3);
  } finally {
    globalThis.reportError = reported;
  }
  assert.deepEqual(heard, ["ack 1", "* 1", "* 2", "* 3"]);
  assert.equal(errors.length, 2, "the broken one was reported at each emit");
});

test("limits: what the server would refuse without using the id up", () => {
  const r = board();
  const small = r.update("cards", "c1", { title: "ok" });
  assert.equal(limitProblem(small, DEFAULT_LIMITS), null);
  const long = r.update("cards", "c1", { title: "é".repeat(11) });
  assert.match(
    String(limitProblem(long, { ...DEFAULT_LIMITS, maxString: 10 })),
    /a string of 11 characters exceeds the limit of 10/,
  );
  assert.match(String(limitProblem(small, { ...DEFAULT_LIMITS, maxFrameBytes: 10 })), /bytes/);
  const many = r.batch((b) => {
    for (let i = 0; i < 3; i++) b.increment("cards", "c1", "votes", 1);
  });
  assert.ok(many);
  assert.equal(limitProblem(many, { ...DEFAULT_LIMITS, maxOps: 2 }), "more than 2 ops");
});

test("views: a watched query is refreshed by changes to its collection only", () => {
  const r = board();
  const views = new Views(r, null);
  const rows = views.query(parseQuery({ c: "cards" }, r.schema));
  /** @type {string[][]} */
  const seen = [];
  const stop = rows.subscribe((list) => seen.push(list.map((row) => String(row.title))));
  r.update("cards", "c1", { title: "Shop more" });
  views.render(new Set(["lists:l1"]));
  assert.deepEqual(seen, [["Shop"]], "another collection: not run again");
  views.render(new Set(["cards:c1"]));
  assert.deepEqual(seen, [["Shop"], ["Shop more"]]);
  stop();
  r.update("cards", "c1", { title: "Unwatched" });
  views.render(new Set(["cards:c1"]));
  assert.equal(seen.length, 2, "unwatched: not run");
  rows.subscribe((list) => seen.push(list.map((row) => String(row.title))));
  assert.deepEqual(seen.at(-1), ["Unwatched"], "stale: run again when watched again");
  assert.equal(views.renders, 3);
});

test("views: bound elements are patched in place", () => {
  const r = board();
  const title = new FakeElement({ "data-sl-field": "title" }, ["Shop"]);
  const root = new FakeElement({}, [new FakeElement({ "data-sl-id": "cards:c1" }, [title])]);
  const views = new Views(r, /** @type {any} */ (root));
  r.update("cards", "c1", { title: "Milk" });
  views.render(new Set(["cards:c1"]));
  assert.equal(title.textContent, "Milk");
});

test("QueueKeeper: saves when the queue changed, in order, once the page's store is known", async () => {
  const r = board();
  /** @type {string[]} */
  const log = [];
  const first = memoryStore();
  const kept = memoryStore();
  /** @param {import("../storage.js").QueueStore} store @param {string} name */
  const logged = (store, name) => ({
    ...store,
    /** @param {SavedQueue} q */
    async save(q) {
      log.push(`${name} ${q.pending.length}`);
      await store.save(q);
    },
  });
  const keeper = new QueueKeeper(r, logged(first, "memory"));
  /** @type {() => void} */
  let ready = () => {};
  keeper.waitFor(new Promise((resolve) => (ready = () => resolve(undefined))));
  keeper.save();
  ready();
  await keeper.settled();
  assert.deepEqual(log, [], "nothing changed since it was made: nothing to save");
  keeper.waitFor(new Promise((resolve) => (ready = () => resolve(undefined))));
  r.update("cards", "c1", { title: "a" });
  keeper.save();
  r.update("cards", "c1", { title: "b" });
  keeper.save();
  keeper.save(); // unchanged: no third save
  keeper.use(logged(kept, "kept"));
  await settle();
  assert.deepEqual(log, [], "saves wait until the page's store is known");
  ready();
  await keeper.settled();
  assert.deepEqual(log, ["kept 1", "kept 2"]);
  assert.equal((await kept.load("tab-parts-0001"))?.pending.length, 2);
  // The page goes with mutations pending: the queue stays for another page to adopt.
  keeper.forgetIfEmpty();
  await keeper.settled();
  assert.ok(await kept.load("tab-parts-0001"));
  r.pending = [];
  keeper.forgetIfEmpty();
  await keeper.settled();
  assert.equal(await kept.load("tab-parts-0001"), null);
});
