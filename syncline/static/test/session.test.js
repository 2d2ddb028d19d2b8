// The connection loop (session.js) with a fake socket and a fake clock: jittered
// backoff that doubles to its bound and starts over after a connection went live,
// offline/online, a refusal for good, close().

import assert from "node:assert/strict";
import { test } from "node:test";

import { ClientProtocol } from "../protocol.js";
import { Replica } from "../replica.js";
import { makeSchema } from "../schema.js";
import { Session } from "../session.js";
import { FakeSocket, settle } from "./fakes.js";

/** Timers the test fires by hand: each a callback and the wait it asked for (ms). */
class FakeClock {
  constructor() {
    /** @type {Map<number, {run: () => void, ms: number}>} */
    this.timers = new Map();
    this._next = 1;
  }

  /** @param {() => void} run @param {number} ms */
  setTimeout(run, ms) {
    const id = this._next++;
    this.timers.set(id, { run, ms });
    return id;
  }

  /** @param {number} id */
  clearTimeout(id) {
    this.timers.delete(id);
  }

  /** The waits pending, in ms. @returns {number[]} */
  waits() {
    return [...this.timers.values()].map((t) => t.ms);
  }

  /** Fire the only pending timer; its wait. @returns {number} */
  fire() {
    assert.equal(this.timers.size, 1, "one reconnect timer pending");
    const [[id, timer]] = this.timers;
    this.timers.delete(id);
    timer.run();
    return timer.ms;
  }
}

const WELCOME = { t: "welcome", v: 1, client: "tab-aaaaaaaa", epoch: "e", head: "e.0", last: 0 };

/** @param {Partial<import("../session.js").SessionOptions>} [extra] */
function session(extra = {}) {
  const replica = new Replica(makeSchema(null, "h"), "tab-aaaaaaaa");
  const protocol = new ClientProtocol(replica, { schemaHash: "h", credentials: null });
  const clock = new FakeClock();
  /** @type {FakeSocket[]} */
  const sockets = [];
  /** @type {string[]} */
  const log = [];
  const s = new Session(protocol, {
    openSocket: () => {
      const socket = new FakeSocket("ws://test/sync");
      sockets.push(socket);
      return socket;
    },
    backoff: [1, 4],
    timers: clock,
    random: () => 0.5, // wait = delay/2 + 0.5 * delay/2 = 0.75 * delay
    onClosed: () => log.push(`closed ${s.status}`),
    onStatus: () => log.push(`status ${s.status}`),
    ...extra,
  });
  return { s, protocol, clock, sockets, log };
}

test("a dropped socket is replaced after a jittered wait that doubles up to its bound", () => {
  const { s, clock, sockets, log } = session();
  s.start();
  assert.equal(sockets.length, 1);
  assert.equal(s.status, "connecting");
  /** @type {number[]} */
  const waits = [];
  for (let i = 0; i < 4; i++) {
    sockets.at(-1)?.drop();
    assert.equal(s.status, "offline");
    assert.ok(s.waiting);
    waits.push(clock.fire());
    assert.equal(sockets.length, i + 2, "the timer opened a new socket");
  }
  assert.deepEqual(waits, [750, 1500, 3000, 3000]);
  assert.deepEqual(log.slice(0, 3), ["status connecting", "closed offline", "status connecting"]);
});

test("a connection that went live starts the backoff over", async () => {
  const { s, clock, sockets } = session();
  s.start();
  sockets[0].drop();
  clock.fire(); // 750
  sockets[1].drop();
  assert.deepEqual(clock.waits(), [1500]);
  clock.fire();
  sockets[2].open();
  sockets[2].receive(WELCOME);
  await settle();
  assert.equal(s.status, "live");
  sockets[2].drop();
  assert.deepEqual(clock.waits(), [750], "back to the first wait");
});

test("offline closes the socket and stops retrying; online connects at once", async () => {
  const { s, clock, sockets } = session();
  s.start();
  sockets[0].open();
  sockets[0].receive(WELCOME);
  await settle();
  s.offline();
  assert.equal(s.status, "offline");
  await settle(); // the socket's close event
  assert.deepEqual(sockets[0].closedWith, { code: 1000, reason: "client: offline" });
  assert.equal(s.link, null);
  assert.deepEqual(clock.waits(), [], "no reconnect while offline");
  s.online();
  assert.equal(sockets.length, 2, "a new socket at once, without waiting");
  assert.equal(s.status, "connecting");
});

test("online while the old socket still closes: the next one opens once it has", async () => {
  const { s, clock, sockets } = session();
  s.start();
  sockets[0].open();
  s.offline();
  s.online(); // the close event has not come yet
  assert.equal(sockets.length, 1, "never two sockets at once");
  await settle();
  assert.equal(sockets.length, 2);
  assert.deepEqual(clock.waits(), []);
});

test("a session that starts offline waits for online", () => {
  const { s, sockets } = session({ offline: true });
  s.start();
  assert.equal(sockets.length, 0);
  assert.equal(s.status, "offline");
  s.online();
  assert.equal(sockets.length, 1);
});

test("a refusal for good stops the loop", async () => {
  const { s, protocol, clock, sockets } = session();
  s.start();
  sockets[0].open();
  sockets[0].receive({ t: "error", code: "reload", message: "new code" });
  await settle();
  assert.equal(protocol.state, "failed");
  assert.equal(s.status, "offline");
  assert.deepEqual(clock.waits(), []);
  s.online();
  assert.equal(sockets.length, 1, "not even online reconnects");
});

test("a socket that cannot be opened is retried like a dropped one", () => {
  let fail = true;
  const { s, clock, sockets } = session({
    openSocket: () => {
      if (fail) throw new Error("blocked");
      const socket = new FakeSocket("ws://test/sync");
      sockets.push(socket);
      return socket;
    },
  });
  const reported = globalThis.reportError;
  globalThis.reportError = () => {};
  try {
    s.start();
  } finally {
    globalThis.reportError = reported;
  }
  assert.deepEqual(clock.waits(), [750]);
  fail = false;
  clock.fire();
  assert.equal(sockets.length, 1);
});

test("close stops for good: the socket closes, no timer is left", async () => {
  const { s, clock, sockets } = session();
  s.start();
  sockets[0].drop();
  assert.equal(clock.waits().length, 1);
  s.close();
  assert.deepEqual(clock.waits(), []);
  s.online();
  assert.equal(sockets.length, 1);
});
