// storage.js: queues saved as JSON text, restored as data.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Replica } from "../replica.js";
import { decodeQueue, memoryStore, openStore, openStoreWithin, queueOf, restoreQueue } from "../storage.js";
import { BOARD } from "./board.js";

test("a queue survives a save and a load, whatever keys its data holds", async () => {
  const r = new Replica(BOARD, "tab-one-0001");
  r.loadSnapshot({
    cursor: "e1.5",
    queries: { q: { c: "cards" } },
    records: { q: [{ id: "c1", inc: 1, v: 3, fv: {}, data: { list_id: "l1", title: "x" } }] },
  });
  r.update("cards", "c1", JSON.parse('{"__proto__": {"polluted": true}, "title": "y"}'));
  r.increment("cards", "c1", "votes", 2);
  r.pending[0].acked = true;
  r.pending[0].seq = 7;
  const store = memoryStore();
  await store.save(queueOf(r));
  const loaded = await store.load("tab-one-0001");
  assert.ok(loaded);
  assert.equal(/** @type {any} */ ({}).polluted, undefined);
  const again = new Replica(BOARD, "tab-one-0001");
  restoreQueue(again, loaded);
  assert.deepEqual(
    again.pending.map((p) => [p.mutation.id, p.acked, p.seq]),
    [
      [1, true, 7],
      [2, false, null],
    ],
  );
  assert.equal(again.nextId, 3);
  assert.deepEqual(
    JSON.parse(JSON.stringify(again.pending[0].mutation)),
    JSON.parse(JSON.stringify(r.pending[0].mutation)),
  );
  assert.deepEqual(
    (await store.list()).map((q) => q.client),
    ["tab-one-0001"],
  );
  await store.remove("tab-one-0001");
  assert.equal(await store.load("tab-one-0001"), null);
});

test("what is not a queue decodes to null", () => {
  assert.equal(decodeQueue("nope"), null);
  assert.equal(decodeQueue('{"client": 1}'), null);
  assert.equal(
    decodeQueue('{"client": "a", "nextId": 1, "pending": [{"mutation": {"id": "x"}}]}'),
    null,
  );
  assert.ok(decodeQueue('{"client": "a", "nextId": 1, "pending": []}'));
});

test("without IndexedDB the store lives in memory", async () => {
  const store = await openStore({ indexedDB: null });
  assert.equal(store.kind, "memory");
});

test("an IndexedDB store that opens too late is closed, and the page keeps a memory store", async () => {
  let closed = 0;
  /** @type {(store: any) => void} */
  let openLate = () => {};
  const late = new Promise((resolve) => {
    openLate = resolve;
  });
  const store = await openStoreWithin(10, () => /** @type {any} */ (late));
  assert.equal(store.kind, "memory");
  openLate({ ...memoryStore(), kind: "indexeddb", close: () => closed++ });
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(closed, 1);
  const inTime = await openStoreWithin(1000, async () => ({ ...memoryStore(), kind: "indexeddb" }));
  assert.equal(inTime.kind, "indexeddb");
});
