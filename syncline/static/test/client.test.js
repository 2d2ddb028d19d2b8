// client.js end to end over fakes: the page's embedded state, a WebSocket the test plays
// the server on, a tiny DOM, Web Locks, and node's own BroadcastChannel between "tabs".

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { afterEach, test } from "node:test";

import { InvalidMutation, connect, newClientId, newId } from "../client.js";
import { Replica } from "../replica.js";
import { makeSchema } from "../schema.js";
import { memoryStore, queueOf } from "../storage.js";
import { BOARD } from "./board.js";
import { FakeElement, FakeLocks, FakeSocket, fakeDocument, settle } from "./fakes.js";

/** @typedef {import("../storage.js").QueueStore} QueueStore */
/** @typedef {import("../client.js").SyncClient} SyncClient */

const HYDRATE = JSON.parse(
  readFileSync(
    new URL("../../../tests/fixtures/protocol/hydrate_then_subscribe_since.json", import.meta.url),
    "utf8",
  ),
).steps[0].hydrate;
const SUB = {
  t: "sub",
  queries: { cards: { c: "cards", where: { list_id: "l1" } } },
  since: "e1.5",
};

/** @type {SyncClient[]} */
let clients = [];

afterEach(() => {
  for (const c of clients) c.close();
  clients = [];
  FakeSocket.instances = [];
});

/** A page: the embedded state (escaped as the server escapes it) and a bound card. */
function page() {
  const text = JSON.stringify(HYDRATE)
    .replace(/</g, "\\u003c")
    .replace(/>/g, "\\u003e")
    .replace(/&/g, "\\u0026");
  const state = new FakeElement({ id: "syncline-state", type: "application/json" }, [text]);
  const title = new FakeElement({ "data-sl-field": "title" }, ["Shop"]);
  const votes = new FakeElement({ "data-sl-field": "votes" }, ["0"]);
  const card = new FakeElement({ "data-sl-id": "cards:c1" }, [title, votes]);
  const root = new FakeElement({}, [state, card]);
  return { root, title, votes, card };
}

/** A store whose saves wait for the test to let them through. */
function gatedStore() {
  const inner = memoryStore();
  /** @type {(() => void)[]} */
  const waiting = [];
  let open = true;
  /** @type {QueueStore & {hold: () => void, release: () => void, saves: number}} */
  const store = {
    ...inner,
    saves: 0,
    async save(queue) {
      if (!open) await new Promise((resolve) => waiting.push(() => resolve(undefined)));
      store.saves += 1;
      await inner.save(queue);
    },
    hold() {
      open = false;
    },
    release() {
      open = true;
      for (const go of waiting.splice(0)) go();
    },
  };
  return store;
}

/** @param {Partial<import("../client.js").ConnectOptions>} [extra] */
async function start(extra = {}) {
  const p = page();
  const store = gatedStore();
  const sync = await connect({
    document: fakeDocument(p.root),
    url: "ws://test/sync",
    socket: (url) => /** @type {any} */ (new FakeSocket(url)),
    storage: store,
    locks: /** @type {any} */ (new FakeLocks()),
    schema: BOARD,
    backoff: [0.001, 0.002],
    tabs: false,
    ...extra,
  });
  clients.push(sync);
  return { sync, store, ...p };
}

/** @param {SyncClient} sync */
async function live(sync) {
  const ws = FakeSocket.instances.at(-1);
  assert.ok(ws);
  ws.open();
  await settle();
  const hello = ws.take();
  assert.deepEqual(hello, [
    { t: "hello", v: 1, client: sync.clientId, schema: "85199e93656c85d2", acked: hello[0].acked },
  ]);
  ws.receive({ t: "welcome", v: 1, client: sync.clientId, epoch: "e1", head: "e1.5", last: 0 });
  await settle();
  return ws;
}

test("client ids and record ids", () => {
  assert.match(newClientId(), /^tab-[0-9a-f-]{36}$/);
  assert.notEqual(newClientId(), newClientId());
  assert.match(newId(), /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
});

test("hydrates from the page without a request, then subscribes since its cursor", async () => {
  const { sync } = await start();
  assert.equal(sync.cursor, "e1.5");
  assert.equal(sync.get("cards", "c1")?.title, "Shop");
  const ws = FakeSocket.instances[0];
  assert.equal(ws.url, "ws://test/sync");
  assert.deepEqual(ws.sent, [], "nothing before the socket opens");
  /** @type {string[]} */
  const statuses = [];
  sync.status.subscribe((s) => statuses.push(s));
  const socket = await live(sync);
  assert.deepEqual(socket.take(), [SUB]);
  assert.deepEqual(statuses, ["connecting", "live"]);
});

test("a local edit shows at once, is saved before it is sent, and stays until the cursor reaches its ack", async () => {
  const { sync, store, title, votes } = await start();
  const ws = await live(sync);
  ws.take();
  ws.receive({ t: "changes", from: "e1.5", to: "e1.5", q: {} });
  /** @type {number[]} */
  const pending = [];
  sync.pending.subscribe((n) => pending.push(n));
  const rows = sync.query({ c: "cards", where: { list_id: "l1" } });
  /** @type {string[][]} */
  const titles = [];
  rows.subscribe((r) => titles.push(r.map((row) => String(row.title))));
  /** @type {unknown[]} */
  const changes = [];
  sync.on("change", (e) => changes.push(e.keys));

  store.hold();
  const m = sync.update("cards", "c1", { title: "Ship" });
  sync.increment("cards", "c1", "votes", 2);
  assert.equal(m.id, 1);
  assert.equal(title.textContent, "Ship", "the bound element is patched at once");
  assert.equal(votes.textContent, "2");
  await settle();
  assert.deepEqual(ws.take(), [], "not sent before the save is durable");
  store.release();
  await settle();
  assert.ok(store.saves >= 1);
  assert.deepEqual(
    ws.take().map((f) => [f.t, f.id]),
    [
      ["mut", 1],
      ["mut", 2],
    ],
  );
  ws.receive({ t: "ack", mid: 1, status: "applied", seq: 6, results: [{ status: "applied" }] });
  ws.receive({ t: "ack", mid: 2, status: "applied", seq: 7, results: [{ status: "applied" }] });
  assert.equal(sync.pending.value, 2, "acked, not yet reached by the cursor");
  ws.receive({
    t: "changes",
    from: "e1.5",
    to: "e1.7",
    q: {
      cards: [
        {
          k: "patch",
          c: "cards",
          id: "c1",
          inc: 1,
          v: 7,
          fv: { title: 6, votes: 7 },
          data: { title: "Ship", votes: 2 },
        },
      ],
    },
  });
  assert.equal(sync.pending.value, 0);
  assert.deepEqual(pending, [0, 1, 2, 0]);
  assert.deepEqual(
    titles,
    [["Shop"], ["Ship"], ["Ship"]],
    "once per change of the rows, not per frame",
  );
  assert.equal(title.textContent, "Ship");
  assert.ok(changes.length >= 2);
  assert.equal(sync.synced, true);
  await settle();
  const saved = await store.load(sync.clientId);
  assert.deepEqual(saved?.pending, []);
});

test("events reach their listeners; a conflict hands over the draft to resolve", async () => {
  const { sync } = await start();
  const ws = await live(sync);
  ws.receive({ t: "changes", from: "e1.5", to: "e1.5", q: {} });
  ws.take();
  /** @type {any[]} */
  const seen = [];
  for (const kind of /** @type {const} */ (["conflict", "overwritten", "rejected"]))
    sync.on(kind, (x) => seen.push([kind, x]));
  sync.update("cards", "c1", { status: "done", title: "T" });
  sync.update("cards", "c1", { slug: "s" });
  await settle();
  ws.take();
  ws.receive({
    t: "ack",
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
  ws.receive({ t: "reject", mid: 2, permanent: true, code: "invalid", message: "bad slug" });
  assert.deepEqual(
    seen.map(([k]) => k),
    ["conflict", "rejected"],
  );
  const draft = seen[0][1];
  assert.equal(draft.mutationId, 1);
  assert.equal(seen[1][1].mutationId, 2);
  assert.equal(seen[1][1].error.code, "invalid");
  assert.equal(sync.drafts.length, 1);
  const answer = sync.resolve(draft, { status: "done" });
  assert.equal(answer?.id, 3);
  await settle();
  assert.deepEqual(
    ws.take().map((f) => /** @type {any} */ (f.ops)[0].set),
    [{ status: "done", title: "T" }],
  );
});

test("after a drop it reconnects, resends what has no answer and resumes from its cursor", async () => {
  const { sync } = await start({ backoff: [0.05, 0.1] });
  let ws = await live(sync);
  ws.take();
  ws.receive({ t: "changes", from: "e1.5", to: "e1.5", q: {} });
  sync.update("cards", "c1", { title: "A" });
  await settle();
  assert.equal(ws.take().length, 1);
  ws.drop();
  await settle();
  assert.equal(sync.status.value, "offline", "waiting before the next attempt");
  assert.equal(FakeSocket.instances.length, 1);
  await new Promise((resolve) => setTimeout(resolve, 80));
  assert.equal(FakeSocket.instances.length, 2);
  assert.equal(sync.status.value, "connecting");
  ws = FakeSocket.instances[1];
  ws.open();
  await settle();
  assert.deepEqual(ws.take(), [
    { t: "hello", v: 1, client: sync.clientId, schema: "85199e93656c85d2", acked: 0 },
  ]);
  ws.receive({ t: "welcome", v: 1, client: sync.clientId, epoch: "e1", head: "e1.6", last: 1 });
  await settle();
  assert.deepEqual(
    ws.take().map((f) => [f.t, f.id ?? f.since]),
    [
      ["mut", 1],
      ["sub", "e1.5"],
    ],
  );
});

test("a refusal for good stops reconnecting and keeps the edits", async () => {
  const { sync } = await start();
  /** @type {unknown[]} */
  const reloads = [];
  sync.on("reload", (e) => reloads.push(e));
  sync.update("cards", "c1", { title: "Mine" });
  const ws = FakeSocket.instances[0];
  ws.open();
  await settle();
  ws.receive({ t: "error", code: "reload", message: "schema differs" });
  await settle();
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(reloads.length, 1);
  assert.equal(sync.status.value, "offline");
  assert.equal(FakeSocket.instances.length, 1);
  assert.equal(sync.pending.value, 1);
});

test("what the server would refuse without using an id up is refused here", async () => {
  const { sync } = await start();
  assert.throws(() => sync.update("cards", "c1", { title: "x".repeat(100_001) }), InvalidMutation);
  assert.throws(() => sync.update("cards", "nope", { title: "x" }), InvalidMutation);
  assert.equal(
    sync.update("cards", "c1", { title: "🦊".repeat(100_000) }).id,
    1,
    "the limit counts code points",
  );
});

test("tabs see each other's edits before the server answers", async () => {
  const a = await start({ tabs: true, clientId: "tab-aaaa-0001" });
  const b = await start({ tabs: true, clientId: "tab-bbbb-0001" });
  const wsA = FakeSocket.instances[0];
  wsA.open();
  await settle();
  wsA.receive({ t: "welcome", v: 1, client: "tab-aaaa-0001", epoch: "e1", head: "e1.5", last: 0 });
  a.sync.update("cards", "c1", { title: "From A" });
  await settle();
  assert.equal(b.sync.get("cards", "c1")?.title, "From A");
  assert.equal(b.title.textContent, "From A", "B's page is patched too");
  wsA.receive({ t: "ack", mid: 1, status: "applied", seq: 6, results: [{ status: "applied" }] });
  wsA.receive({
    t: "changes",
    from: "e1.5",
    to: "e1.6",
    q: {
      cards: [
        {
          k: "patch",
          c: "cards",
          id: "c1",
          inc: 1,
          v: 6,
          fv: { title: 6 },
          data: { title: "From A" },
        },
      ],
    },
  });
  await settle();
  assert.equal(a.sync.pending.value, 0);
  assert.equal(b.sync.get("cards", "c1")?.title, "From A", "kept until B's cursor reaches the ack");
  const wsB = FakeSocket.instances[1];
  wsB.open();
  await settle();
  wsB.receive({ t: "welcome", v: 1, client: "tab-bbbb-0001", epoch: "e1", head: "e1.6", last: 0 });
  wsB.receive({
    t: "changes",
    from: "e1.5",
    to: "e1.6",
    q: {
      cards: [
        {
          k: "patch",
          c: "cards",
          id: "c1",
          inc: 1,
          v: 6,
          fv: { title: 6 },
          data: { title: "From A" },
        },
      ],
    },
  });
  await settle();
  assert.equal(b.sync.replica.overlay.length, 0);
  assert.equal(b.sync.get("cards", "c1")?.title, "From A");
});

test("nothing reaches Object.prototype", async () => {
  const { sync } = await start();
  const ws = await live(sync);
  ws.receive({
    t: "changes",
    from: "e1.5",
    to: "e1.6",
    q: JSON.parse(
      '{"cards": [{"k": "patch", "c": "cards", "id": "c1", "inc": 1, "v": 6, "fv": {"__proto__": 6}, "data": {"__proto__": {"polluted": true}, "constructor": {"prototype": {"polluted": true}}}}]}',
    ),
  });
  sync.update("cards", "c1", JSON.parse('{"__proto__": {"polluted": true}}'));
  assert.equal(/** @type {any} */ ({}).polluted, undefined);
  assert.deepEqual(Object.keys(Object.prototype), []);
  const row = /** @type {any} */ (sync.get("cards", "c1"));
  assert.deepEqual(Object.keys(row["__proto__"]), ["polluted"]);
});

test("a local edit is sent at once, without waiting for a server frame", async () => {
  const { sync } = await start();
  const ws = await live(sync);
  ws.receive({ t: "changes", from: "e1.5", to: "e1.5", q: {} });
  await settle();
  ws.take();
  sync.update("cards", "c1", { title: "Now" });
  await settle();
  assert.deepEqual(
    ws.take().map((f) => [f.t, f.id]),
    [["mut", 1]],
  );
  ws.receive({
    t: "ack",
    mid: 1,
    status: "conflict",
    seq: null,
    results: [
      {
        status: "conflict",
        conflicts: [
          { c: "cards", id: "c1", field: "title", base: "Shop", mine: "Now", theirs: "X", theirs_v: 6 },
        ],
      },
    ],
  });
  await settle();
  ws.take();
  sync.resolve(sync.drafts[0], { title: "Now" });
  await settle();
  assert.deepEqual(
    ws.take().map((f) => [f.t, f.id]),
    [["mut", 2]],
    "an answer to a conflict is sent at once too",
  );
});

/** Window events for the client in node (globalThis is no EventTarget there). */
function windowEvents() {
  const target = new EventTarget();
  const g = /** @type {any} */ (globalThis);
  g.addEventListener = target.addEventListener.bind(target);
  g.removeEventListener = target.removeEventListener.bind(target);
  return {
    /** @param {string} type */
    fire: (type) => target.dispatchEvent(new Event(type)),
    restore() {
      delete g.addEventListener;
      delete g.removeEventListener;
    },
  };
}

test("the browser going offline closes the socket and queues; online reconnects at once", async () => {
  const win = windowEvents();
  try {
    const { sync, store } = await start({ backoff: [0.001, 0.002] });
    const ws = await live(sync);
    ws.take();
    assert.equal(sync.status.value, "live");
    win.fire("offline");
    await settle();
    assert.equal(sync.status.value, "offline");
    assert.ok(ws.closedWith, "a socket the browser keeps open while offline is closed");
    sync.update("cards", "c1", { title: "On a train" });
    await new Promise((resolve) => setTimeout(resolve, 20));
    await settle();
    assert.equal(FakeSocket.instances.length, 1, "no reconnecting while offline");
    assert.equal(sync.status.value, "offline");
    assert.equal(sync.pending.value, 1);
    assert.equal((await store.load(sync.clientId))?.pending.length, 1, "queued in the store");
    win.fire("online");
    assert.equal(FakeSocket.instances.length, 2, "back online: connects at once");
    assert.equal(sync.status.value, "connecting");
    const again = FakeSocket.instances[1];
    again.open();
    await settle();
    again.take();
    again.receive({ t: "welcome", v: 1, client: sync.clientId, epoch: "e1", head: "e1.5", last: 0 });
    await settle();
    assert.equal(sync.status.value, "live");
    assert.deepEqual(
      again.take().map((f) => [f.t, f.id ?? f.since]),
      [
        ["mut", 1],
        ["sub", "e1.5"],
      ],
    );
  } finally {
    for (const c of clients.splice(0)) c.close(); // while the window events are there
    win.restore();
  }
});

test("an adopted queue shows at once and counts as pending until the cursor reaches it", async () => {
  const store = memoryStore();
  const schema = makeSchema(BOARD, "85199e93656c85d2");
  const dead = new Replica(schema, "tab-dead-0003");
  dead.loadSnapshot(HYDRATE);
  dead.update("cards", "c1", { title: "Written on a train" });
  dead.increment("cards", "c1", "votes", 1);
  await store.save(queueOf(dead));
  const { sync, title, votes } = await start({ tabs: true, storage: store });
  await settle();
  assert.equal(FakeSocket.instances.length, 2, "the page's socket and the adoption's");
  assert.equal(title.textContent, "Written on a train", "shown before any socket opens");
  assert.equal(votes.textContent, "1");
  assert.equal(sync.get("cards", "c1")?.title, "Written on a train");
  assert.equal(sync.pending.value, 2);

  const adoption = FakeSocket.instances[1];
  adoption.open();
  await settle();
  assert.deepEqual(adoption.take(), [
    { t: "hello", v: 1, client: "tab-dead-0003", schema: "85199e93656c85d2", acked: 0 },
  ]);
  adoption.receive({ t: "welcome", v: 1, client: "tab-dead-0003", epoch: "e1", head: "e1.5", last: 0 });
  await settle();
  assert.deepEqual(
    adoption.take().map((f) => [f.t, f.id]),
    [
      ["mut", 1],
      ["mut", 2],
    ],
    "under the dead page's own id and numbers",
  );
  adoption.receive({ t: "ack", mid: 1, status: "applied", seq: 6, results: [{ status: "applied" }] });
  adoption.receive({ t: "ack", mid: 2, status: "applied", seq: 7, results: [{ status: "applied" }] });
  await settle();
  assert.ok(adoption.closedWith, "all answered");
  assert.deepEqual(await store.list(), [], "the queue is gone");
  assert.equal(title.textContent, "Written on a train", "kept until this page's cursor gets there");
  assert.equal(votes.textContent, "1");
  assert.equal(sync.pending.value, 2);

  const ws = FakeSocket.instances[0];
  ws.open();
  await settle();
  ws.receive({ t: "welcome", v: 1, client: sync.clientId, epoch: "e1", head: "e1.7", last: 0 });
  await settle();
  assert.deepEqual(
    ws.take().map((f) => f.t),
    ["hello", "sub"],
    "the page's own connection sends none of the adopted mutations",
  );
  ws.receive({
    t: "changes",
    from: "e1.5",
    to: "e1.7",
    q: {
      cards: [
        {
          k: "patch",
          c: "cards",
          id: "c1",
          inc: 1,
          v: 7,
          fv: { title: 6, votes: 7 },
          data: { title: "Written on a train", votes: 1 },
        },
      ],
    },
  });
  await settle();
  assert.equal(sync.pending.value, 0);
  assert.equal(sync.replica.overlay.length, 0);
  assert.equal(title.textContent, "Written on a train");
  assert.equal(votes.textContent, "1", "counted once");
});

test("back online before the old socket finished closing: one new connection, after it", async () => {
  const win = windowEvents();
  try {
    const { sync } = await start({ backoff: [5, 10] });
    const ws = await live(sync);
    win.fire("offline");
    assert.equal(sync.status.value, "offline", "at once, before the close event");
    win.fire("online");
    assert.equal(FakeSocket.instances.length, 1, "not while the old one is closing");
    await settle();
    assert.ok(ws.closedWith);
    assert.equal(FakeSocket.instances.length, 2, "at once after it closed, no backoff wait");
    assert.equal(sync.status.value, "connecting");
  } finally {
    for (const c of clients.splice(0)) c.close();
    win.restore();
  }
});

test("pristine until the first change: the page shows what the server rendered", async () => {
  const { sync } = await start();
  assert.equal(sync.pristine, true, "hydrated, nothing changed");
  const ws = await live(sync);
  ws.take();
  ws.receive({ t: "changes", from: "e1.5", to: "e1.5", q: {} });
  assert.equal(sync.pristine, true, "an empty catch-up changes nothing");
  sync.update("cards", "c1", { title: "Ship" });
  assert.equal(sync.pristine, false);
});

test("connect() resolves before the page's lock; a write made meanwhile waits for it", async () => {
  /** @type {() => void} */
  let grant = () => {};
  const gate = new Promise((resolve) => {
    grant = () => resolve(undefined);
  });
  const locks = {
    /** @param {string} name @param {(lock: unknown) => Promise<unknown>} callback */
    async request(name, callback) {
      await gate;
      return callback({ name, mode: "exclusive" });
    },
  };
  const { sync, store } = await start({ tabs: true, locks: /** @type {any} */ (locks) });
  assert.equal(sync.get("cards", "c1")?.title, "Shop", "hydrated at once");
  const ws = await live(sync);
  assert.equal(sync.status.value, "live", "live without the lock");
  ws.take();
  sync.update("cards", "c1", { title: "Ship" });
  await settle();
  assert.deepEqual(ws.take(), [], "not sent before the lock and the store are in place");
  assert.equal(store.saves, 0);
  grant();
  await settle();
  assert.equal(store.saves, 1);
  assert.deepEqual(
    ws.take().map((f) => [f.t, f.id]),
    [["mut", 1]],
  );
});

test("a sub refused for a limit is reported and no longer asked for; a connection cap is retried", async () => {
  const { sync } = await start({ backoff: [0.01, 0.02] });
  /** @type {any[]} */
  const errors = [];
  sync.on("error", (e) => errors.push(e.error));
  let ws = await live(sync);
  ws.take();
  ws.receive({ t: "changes", from: "e1.5", to: "e1.5", q: {} });
  sync.subscribe({ big: { c: "cards" } });
  await settle();
  assert.deepEqual(ws.take(), [{ t: "sub", queries: { big: { c: "cards" } } }]);
  const message = "the answer would exceed 3145728 bytes (max_snapshot_bytes per snapshot or pull)";
  ws.receive({ t: "error", code: "limit", message, ref: "big" });
  await settle();
  assert.deepEqual(
    errors.map((e) => [e.code, e.ref, e.message]),
    [["limit", "big", message]],
  );
  // Past the principal's connection cap: reported, then the client tries again later.
  ws.receive({ t: "error", code: "too_many_connections", message: "at most 64" });
  ws.drop();
  await settle();
  assert.equal(errors.at(-1).code, "too_many_connections");
  await new Promise((resolve) => setTimeout(resolve, 80));
  assert.equal(FakeSocket.instances.length, 2, "it reconnects");
  ws = FakeSocket.instances[1];
  ws.open();
  await settle();
  ws.take();
  ws.receive({ t: "welcome", v: 1, client: sync.clientId, epoch: "e1", head: "e1.5", last: 0 });
  await settle();
  const subs = ws.take().filter((f) => f.t === "sub");
  assert.ok(
    subs.every((f) => !("big" in /** @type {object} */ (f.queries))),
    "the refused query is not asked again",
  );
});
