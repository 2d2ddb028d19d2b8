// tabs.js: other tabs' edits, and the adoption of a dead page's queue.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Replica } from "../replica.js";
import { makeSchema } from "../schema.js";
import { memoryStore, queueOf } from "../storage.js";
import { adoptOrphans } from "../adopt.js";
import { holdLock, lockName } from "../locks.js";
import { PeerEdits, decodeTabMessage } from "../tabs.js";
import { BOARD } from "./board.js";
import { FakeLocks, FakeSocket, settle } from "./fakes.js";

/** @typedef {import("../ops.js").Op} Op */

/** @param {string} title @returns {Op[]} */
function ops(title) {
  return [
    /** @type {Op} */ ({ op: "update", c: "cards", id: "c1", set: { title }, base: {}, prev: {} }),
  ];
}

test("a peer's edit shows until this tab's cursor reaches its ack", () => {
  const peers = new PeerEdits();
  const a = ops("a");
  const b = ops("b");
  peers.update("tab-x", "e1", [
    { id: 1, ops: a, acked: false, seq: null },
    { id: 2, ops: b, acked: false, seq: null },
  ]);
  assert.deepEqual(peers.overlay({ epoch: "e1", seq: 5 }), [a, b]);
  // The peer's cursor reached 1's seq (it stopped listing it); 2 was refused.
  peers.update("tab-x", "e1", [{ id: 1, ops: a, acked: true, seq: 7 }]);
  peers.update("tab-x", "e1", []);
  assert.deepEqual(peers.overlay({ epoch: "e1", seq: 6 }), [a]);
  assert.deepEqual(peers.overlay({ epoch: "e1", seq: 7 }), []);
  assert.equal(peers.peers.size, 0);
});

test("a peer that leaves keeps only what the server acknowledged", () => {
  const peers = new PeerEdits();
  const a = ops("a");
  peers.update("tab-x", "e1", [
    { id: 1, ops: a, acked: true, seq: 9 },
    { id: 2, ops: ops("b"), acked: false, seq: null },
  ]);
  peers.forget("tab-x");
  assert.deepEqual(peers.overlay({ epoch: "e1", seq: 8 }), [a]);
  assert.deepEqual(
    peers.overlay({ epoch: "e2", seq: 1 }),
    [],
    "another database: its seq means nothing here",
  );
});

test("tab messages are checked", () => {
  assert.equal(decodeTabMessage({ t: "hello", client: "x" }), null, "JSON text only");
  assert.deepEqual(decodeTabMessage('{"t": "bye", "client": "x"}'), { t: "bye", client: "x" });
  assert.equal(
    decodeTabMessage('{"t": "edits", "client": "x", "muts": [{"id": "1", "ops": []}]}'),
    null,
  );
  const m = decodeTabMessage(
    '{"t": "edits", "client": "x", "epoch": "e1", "muts": [{"id": 1, "ops": [{"op": "delete", "c": "cards", "id": "__proto__"}], "acked": true, "seq": 4}]}',
  );
  assert.equal(m?.t, "edits");
  assert.equal(decodeTabMessage("{"), null);
});

test("a page holds its lock until it releases it", async () => {
  const locks = new FakeLocks();
  const held = await holdLock("tab-me-0001", /** @type {any} */ (locks));
  assert.ok(held);
  assert.ok(locks.held.has(lockName("tab-me-0001")));
  held.release();
  await settle();
  assert.equal(locks.held.size, 0);
  assert.equal(await holdLock("x", null), null);
});

test("a dead page's queue is sent under its own client id and numbers, then deleted", async () => {
  const schema = makeSchema(BOARD, "85199e93656c85d2");
  const dead = new Replica(schema, "tab-dead-0001");
  dead.loadSnapshot({
    cursor: "e1.5",
    queries: { q: { c: "cards" } },
    records: {
      q: [{ id: "c1", inc: 1, v: 3, fv: { title: 3 }, data: { list_id: "l1", title: "x" } }],
    },
  });
  dead.update("cards", "c1", { title: "one" }); // acked, waiting for the cursor
  dead.update("cards", "c1", { title: "two" }); // sent, no answer held
  dead.update("cards", "c1", { status: "done" }); // never sent
  dead.pending[0].acked = true;
  dead.pending[0].seq = 6;
  const store = memoryStore();
  await store.save(queueOf(dead));
  await store.save({ ...queueOf(new Replica(schema, "tab-alive-01")), pending: [] });
  const locks = new FakeLocks();
  const alive = await holdLock("tab-alive-01", /** @type {any} */ (locks));
  FakeSocket.instances = [];
  /** @type {[string, string][]} */
  const events = [];
  const adopting = adoptOrphans({
    store,
    clientId: "tab-me-0001",
    schema,
    schemaHash: "85199e93656c85d2",
    openSocket: () => new FakeSocket("ws://test/sync"),
    locks: /** @type {any} */ (locks),
    onEvents: (evs, client) => evs.forEach((e) => events.push([e.kind, client])),
  });
  await settle();
  assert.equal(FakeSocket.instances.length, 1, "only the dead page's queue is adopted");
  const ws = FakeSocket.instances[0];
  assert.ok(locks.held.has(lockName("tab-dead-0001")), "the adopter holds the dead page's lock");
  ws.open();
  await settle();
  assert.deepEqual(ws.take(), [
    { t: "hello", v: 1, client: "tab-dead-0001", schema: "85199e93656c85d2", acked: 1 },
  ]);
  ws.receive({ t: "welcome", v: 1, client: "tab-dead-0001", epoch: "e1", head: "e1.7", last: 2 });
  await settle();
  assert.deepEqual(
    ws.take().map((f) => [f.t, f.id]),
    [
      ["mut", 2],
      ["mut", 3],
    ],
  );
  ws.receive({
    t: "ack",
    mid: 2,
    status: "applied",
    seq: 7,
    results: [{ status: "applied", overwritten: ["title"] }],
    replay: true,
  });
  ws.receive({ t: "reject", mid: 3, permanent: true, code: "forbidden", message: "no" });
  await settle();
  assert.ok(ws.closedWith, "the short-lived socket is closed once all is answered");
  assert.deepEqual(await adopting, ["tab-dead-0001"]);
  assert.deepEqual(events, [
    ["overwritten", "tab-dead-0001"],
    ["rejected", "tab-dead-0001"],
  ]);
  assert.deepEqual(
    (await store.list()).map((q) => q.client),
    ["tab-alive-01"],
  );
  assert.equal(locks.held.has(lockName("tab-dead-0001")), false);
  alive?.release();
});

test("a queue that could not be sent stays for a later page", async () => {
  const schema = makeSchema(BOARD, "85199e93656c85d2");
  const dead = new Replica(schema, "tab-dead-0002");
  dead.insert("cards", "n1", { list_id: "l1" });
  const store = memoryStore();
  await store.save(queueOf(dead));
  FakeSocket.instances = [];
  const adopting = adoptOrphans({
    store,
    clientId: "tab-me-0001",
    schema,
    schemaHash: "85199e93656c85d2",
    openSocket: () => new FakeSocket("ws://test/sync"),
    locks: /** @type {any} */ (new FakeLocks()),
    attempts: 2,
    retryDelay: 1,
  });
  for (let i = 0; i < 2; i++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
    await settle();
    FakeSocket.instances[i].drop();
  }
  assert.deepEqual(await adopting, []);
  assert.equal((await store.list()).length, 1);
});
