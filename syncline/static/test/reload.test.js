// The default answer to "reload": the page reloads, after the queue's save, unless the
// application listens to "reload" itself or says otherwise; never in a loop.

import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import { RELOADED_AT, reloadPage } from "../reload.js";
import { FakeSocket, settle } from "./fakes.js";
import { hydratedClient } from "./hydrated.js";

/** @typedef {import("../client.js").SyncClient} SyncClient */
/** @typedef {import("../client.js").ConnectOptions} ConnectOptions */

/** @type {SyncClient[]} */
let clients = [];
const g = /** @type {any} */ (globalThis);
afterEach(() => {
  for (const c of clients) c.close();
  clients = [];
  FakeSocket.instances = [];
  delete g.location;
  delete g.sessionStorage;
});

/** sessionStorage, in memory. */
function memoryStorage() {
  /** @type {Map<string, string>} */
  const items = new Map();
  return {
    /** @param {string} k */
    getItem: (k) => items.get(k) ?? null,
    /** @param {string} k @param {string} v */
    setItem: (k, v) => void items.set(k, v),
  };
}

/**
 * A page whose server will refuse its schema (reloadFrame): a "reload" event.
 * @param {Partial<ConnectOptions>} [extra]
 */
async function refused(extra = {}) {
  const { sync } = await hydratedClient(extra);
  clients.push(sync);
  return sync;
}

/** @param {SyncClient} sync */
async function reloadFrame(sync) {
  sync.update("cards", "c1", { title: "Mine" });
  const ws = FakeSocket.instances[0];
  ws.open();
  await settle();
  ws.receive({ t: "error", code: "reload", message: "schema differs" });
  await settle();
}

test("nobody listens to reload: the page reloads", async () => {
  let reloads = 0;
  g.location = { reload: () => reloads++ };
  g.sessionStorage = memoryStorage();
  const sync = await refused();
  await reloadFrame(sync);
  assert.equal(reloads, 1);
  assert.ok(Number(g.sessionStorage.getItem(RELOADED_AT)) > 0);
});

test("an application that listens to reload decides; reload: false or a function too", async () => {
  let reloads = 0;
  g.location = { reload: () => reloads++ };
  const heard = await refused();
  /** @type {unknown[]} */
  const events = [];
  heard.on("reload", (e) => events.push(e));
  heard.on("*", () => {}); // a listener to everything does not count as handling it
  await reloadFrame(heard);
  assert.equal(events.length, 1);
  assert.equal(reloads, 0);
  heard.close();
  FakeSocket.instances = [];

  await reloadFrame(await refused({ reload: false }));
  assert.equal(reloads, 0);
  FakeSocket.instances = [];

  /** @type {unknown[]} */
  const custom = [];
  await reloadFrame(await refused({ reload: (e) => custom.push(e.kind) }));
  assert.deepEqual(custom, ["reload"]);
  assert.equal(reloads, 0);
});

test("the reload waits for the queue's save, and does not loop", async () => {
  const storage = memoryStorage();
  let now = 1_000_000;
  let reloads = 0;
  const page = { location: { reload: () => reloads++ }, storage, now: () => now };
  /** @type {() => void} */
  let saved = () => {};
  const pending = reloadPage(new Promise((resolve) => (saved = () => resolve(undefined))), page);
  await settle();
  assert.equal(reloads, 0, "not before the queue is saved");
  saved();
  assert.equal(await pending, true);
  assert.equal(reloads, 1);
  // The reloaded page is refused again at once: no second reload.
  now += 5_000;
  assert.equal(await reloadPage(Promise.resolve(), page), false);
  assert.equal(reloads, 1);
  now += 60_000;
  assert.equal(await reloadPage(Promise.reject(new Error("disk full")), page), true);
  assert.equal(reloads, 2);
  assert.equal(await reloadPage(Promise.resolve(), null), false, "no page to reload");
});
