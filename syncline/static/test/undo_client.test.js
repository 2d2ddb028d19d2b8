// The browser client's undo API: sync.undo(), redo(), the canUndo/canRedo observables,
// undoGroup(), the "undo-partial" event; and the undo stacks a tab's previous page left
// in the queue store, taken back by its next page (storage.js previousHistory).

import assert from "node:assert/strict";
import { test } from "node:test";

import { Replica } from "../replica.js";
import { memoryStore, previousHistory, queueOf } from "../storage.js";
import { BOARD } from "./board.js";
import { FakeSocket, settle } from "./fakes.js";
import { hydratedClient } from "./hydrated.js";

test("undo and redo through the client, with canUndo / canRedo as observables", async () => {
  const { sync } = await hydratedClient();
  /** @type {boolean[]} */
  const seen = [];
  sync.canUndo.subscribe((can) => seen.push(can));
  assert.equal(sync.canUndo.value, false);
  assert.equal(sync.undo(), null);
  sync.undoGroup(() => {
    sync.update("cards", "c1", { title: "Ship" });
    sync.increment("cards", "c1", "votes", 2);
  });
  assert.equal(sync.canUndo.value, true);
  const outcome = sync.undo();
  assert.ok(outcome && !outcome.partial && outcome.mutationId === 3);
  assert.equal(sync.get("cards", "c1")?.title, "Shop");
  assert.equal(sync.get("cards", "c1")?.votes, 0);
  assert.equal(sync.canUndo.value, false);
  assert.equal(sync.canRedo.value, true);
  sync.redo();
  assert.equal(sync.get("cards", "c1")?.title, "Ship");
  assert.equal(sync.get("cards", "c1")?.votes, 2);
  assert.deepEqual(seen, [false, true, false, true]);
  sync.close();
});

test("an undo of a field someone else changed since is partial: undo-partial names it", async () => {
  const { sync } = await hydratedClient();
  /** @type {any[]} */
  const partial = [];
  sync.on("undo-partial", (e) => partial.push(e));
  sync.update("cards", "c1", { title: "Mine" });
  const ws = FakeSocket.instances.at(-1);
  assert.ok(ws);
  ws.open();
  await settle();
  ws.receive({ t: "welcome", v: 1, client: sync.clientId, epoch: "e1", head: "e1.5", last: 0 });
  await settle();
  ws.receive({ t: "changes", from: "e1.5", to: "e1.5", q: {} });
  ws.receive({ t: "ack", mid: 1, status: "applied", seq: 6 });
  /** @param {number} from @param {number} to @param {string} title */
  const patch = (from, to, title) => ({
    t: "changes",
    from: `e1.${from}`,
    to: `e1.${to}`,
    q: { cards: [{ k: "patch", id: "c1", data: { title }, fv: { title: to }, v: to, inc: 1 }] },
  });
  ws.receive(patch(5, 6, "Mine"));
  ws.receive(patch(6, 7, "Theirs")); // another client, after mine
  await settle();
  const outcome = sync.undo();
  assert.ok(outcome && outcome.partial && outcome.mutationId === null);
  assert.deepEqual(outcome.skipped, [
    { c: "cards", id: "c1", field: "title", reason: "changed by someone else since" },
  ]);
  assert.equal(sync.get("cards", "c1")?.title, "Theirs");
  assert.deepEqual(
    partial.map((e) => [e.kind, e.keys, e.fields]),
    [["undo-partial", ["cards:c1"], ["title"]]],
  );
  sync.close();
});

test("a tab's next page takes back the undo stacks its previous page saved", async () => {
  const store = memoryStore();
  const HYDRATE = (await import("./hydrated.js")).HYDRATE;
  const before = new Replica(BOARD, "page-one-0001");
  before.tab = "tab-1";
  before.loadSnapshot(HYDRATE);
  before.update("cards", "c1", { title: "Ship" });
  await store.save(queueOf(before));
  const other = new Replica(BOARD, "page-other-01");
  other.tab = "tab-2";
  other.loadSnapshot(HYDRATE);
  other.update("cards", "c1", { title: "Elsewhere" });
  await store.save(queueOf(other));

  assert.equal(await previousHistory(store, null, "page-two-0001"), null);
  assert.equal(await previousHistory(store, "tab-3", "page-two-0001"), null);
  const history = await previousHistory(store, "tab-1", "page-two-0001");
  assert.ok(history && history.canUndo);
  assert.deepEqual(history.undoStack[0].mids, [-1]); // never meets the new page's ids
  const after = new Replica(BOARD, "page-two-0001");
  after.loadSnapshot(HYDRATE);
  after.history = history;
  after.update("cards", "c1", { description: "x" }); // mutation 1 of this page
  after.undo();
  after.undo(); // the previous page's title edit
  assert.equal(after.get("cards", "c1")?.title, "Shop");
});

test("typing within undoPause is one entry; connect({ undoPause: 0 }) makes each its own", async () => {
  for (const [extra, undos] of /** @type {[object, number][]} */ ([
    [{}, 1],
    [{ undoPause: 0 }, 3],
  ])) {
    const { sync } = await hydratedClient(extra);
    for (const title of ["S", "Sh", "Shi"]) sync.update("cards", "c1", { title });
    let count = 0;
    while (sync.undo() !== null) count += 1;
    assert.equal(count, undos, JSON.stringify(extra));
    assert.equal(sync.get("cards", "c1")?.title, "Shop");
    sync.close();
  }
});

test("a negative undoPause is refused with a message naming it", () => {
  assert.throws(() => new Replica(BOARD, "me", { undoPause: -1 }), /undoPause/);
});
