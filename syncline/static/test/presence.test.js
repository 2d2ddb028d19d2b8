// Presence in the browser client: the rooms' bookkeeping (presence.js) alone, then
// sync.join over a fake socket: the members observable, events, coalesced updates,
// a refusal, and the rooms joined again after a reconnect.

import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import { connect } from "../client.js";
import { PresenceRooms } from "../presence.js";
import { BOARD } from "./board.js";
import { FakeLocks, FakeSocket, settle } from "./fakes.js";

/** @type {import("../client.js").SyncClient[]} */
let clients = [];

afterEach(() => {
  for (const c of clients) c.close();
  clients = [];
  FakeSocket.instances = [];
});

const ann = { key: "a", user: { name: "Ann" }, state: { editing: null } };
const bob = { key: "b", user: { name: "Bob" }, state: { editing: "c1" } };

test("presence rooms follow room and presence_diff frames", () => {
  const rooms = new PresenceRooms();
  assert.deepEqual(rooms.join("r", { x: 1 }), { t: "join", room: "r", state: { x: 1 } });
  assert.equal(rooms.onRoom({ t: "room", room: "other", me: "a", members: [] }), null);
  assert.deepEqual(rooms.onRoom({ t: "room", room: "r", me: "a", members: [ann] }), [["join", ann]]);
  const bob2 = { ...bob, state: { editing: "c2" } };
  assert.deepEqual(rooms.onDiff({ t: "presence_diff", room: "r", joins: [bob], updates: [bob2] }), [
    ["join", bob],
    ["update", bob2],
  ]);
  assert.deepEqual(rooms.onDiff({ t: "presence_diff", room: "r", leaves: ["b", "zz"] }), [
    ["leave", bob2],
  ]);
  assert.deepEqual(rooms.onWelcome(), [{ t: "join", room: "r", state: { x: 1 } }]);
  const refused = { t: "error", code: "room_refused", message: "no", ref: "r" };
  assert.equal(rooms.onError(refused, () => false), "r");
  assert.equal(rooms.rooms.size, 0);
});

async function live() {
  const sync = await connect({
    state: null,
    schemaHash: "85199e93656c85d2",
    bind: false,
    url: "ws://test/sync",
    socket: (url) => /** @type {any} */ (new FakeSocket(url)),
    storage: false,
    locks: /** @type {any} */ (new FakeLocks()),
    schema: BOARD,
    backoff: [0.001, 0.002],
    tabs: false,
  });
  clients.push(sync);
  const ws = FakeSocket.instances.at(-1);
  assert.ok(ws);
  ws.open();
  await settle();
  ws.take();
  ws.receive({ t: "welcome", v: 1, client: sync.clientId, epoch: "e1", head: "e1.1", last: 0 });
  await settle();
  return { sync, ws };
}

test("sync.join: members observable, events, updates, leave", async () => {
  const { sync, ws } = await live();
  const room = sync.join("board:demo", { editing: null });
  await settle();
  assert.deepEqual(ws.take(), [{ t: "join", room: "board:demo", state: { editing: null } }]);
  /** @type {string[][]} */
  const seen = [];
  room.members.subscribe((ms) => seen.push(ms.map((m) => m.key)));
  /** @type {string[]} */
  const events = [];
  room.on("join", (m) => events.push(`join ${m.user.name}`));
  room.on("leave", (m) => events.push(`leave ${m.user.name}`));
  ws.receive({ t: "room", room: "board:demo", me: "a", members: [ann] });
  ws.receive({ t: "presence_diff", room: "board:demo", joins: [bob] });
  ws.receive({ t: "presence_diff", room: "board:demo", leaves: ["b"] });
  await settle();
  assert.equal(room.me, "a");
  assert.deepEqual(seen, [[], ["a"], ["a", "b"], ["a"]]);
  assert.deepEqual(events, ["join Ann", "join Bob", "leave Bob"]);
  room.update({ editing: "c1" });
  await settle();
  assert.deepEqual(ws.take(), [{ t: "presence", room: "board:demo", state: { editing: "c1" } }]);
  room.leave();
  await settle();
  assert.deepEqual(ws.take(), [{ t: "leave", room: "board:demo" }]);
  assert.deepEqual(room.members.value, []);
});

test("presence updates coalesce: at most 20 a second, the last value wins", async () => {
  const { sync, ws } = await live();
  const room = sync.join("board:demo", {});
  await settle();
  ws.take();
  for (let i = 1; i <= 10; i++) room.update({ x: i });
  await settle();
  assert.deepEqual(
    ws.take().map((f) => /** @type {any} */ (f.state).x),
    [1],
  );
  await new Promise((resolve) => setTimeout(resolve, 80));
  assert.deepEqual(
    ws.take().map((f) => /** @type {any} */ (f.state).x),
    [10],
  );
});

test("a refused room is left and says why; rooms are joined again after a reconnect", async () => {
  const { sync, ws } = await live();
  const refused = sync.join("cards:secret", {});
  /** @type {unknown[]} */
  const why = [];
  refused.on("refused", (e) => why.push(e.code));
  const kept = sync.join("board:demo", { here: true });
  await settle();
  ws.take();
  ws.receive({ t: "error", code: "room_refused", message: "no such room", ref: "cards:secret" });
  await settle();
  assert.deepEqual(why, ["room_refused"]);
  assert.equal(refused.left, true);
  assert.equal(sync.status.value, "live", "a refused room is not a failed connection");
  ws.drop();
  await new Promise((resolve) => setTimeout(resolve, 30));
  const next = FakeSocket.instances.at(-1);
  assert.ok(next && next !== ws);
  next.open();
  await settle();
  next.take();
  next.receive({ t: "welcome", v: 1, client: sync.clientId, epoch: "e1", head: "e1.1", last: 0 });
  await settle();
  assert.deepEqual(next.take(), [{ t: "join", room: "board:demo", state: { here: true } }]);
  assert.equal(kept.left, false);
});
