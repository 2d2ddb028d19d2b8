// The seams of the browser ClientProtocol: its send window (sending.js) and its
// subscription bookkeeping (subscriptions.js), each driven alone; and the replica as
// the one owner of which records a query holds (the protocol keeps no copy).

import assert from "node:assert/strict";
import { test } from "node:test";

import { ClientProtocol } from "../protocol.js";
import { Replica } from "../replica.js";
import { makeSchema } from "../schema.js";
import { SendWindow } from "../sending.js";
import { Subscriptions } from "../subscriptions.js";

function replica() {
  return new Replica(makeSchema(null, "h"), "tab-aaaaaaaa");
}

/** @param {import("../json.js").Dict[]} frames */
const ids = (frames) => frames.map((f) => f.id);

test("the send window sends each mutation once, at most maxInFlight at a time", () => {
  const r = replica();
  for (const id of ["a", "b", "c"]) r.insert("cards", id, { title: id });
  const w = new SendWindow(r, { maxInFlight: 2 });
  assert.deepEqual(ids(w.next(0)), [1, 2]);
  assert.deepEqual(w.next(0), [], "the window is full");
  w.answered(1);
  assert.deepEqual(ids(w.next(0)), [3]);
  w.reset(); // a new connection: all is sent again
  assert.deepEqual(ids(w.next(0)), [1, 2]);
});

test("a temporary refusal holds the window, then resends from the refused id", () => {
  const r = replica();
  for (const id of ["a", "b"]) r.insert("cards", id, { title: id });
  const w = new SendWindow(r, { stallBackoff: [1, 4] });
  assert.deepEqual(ids(w.next(0)), [1, 2]);
  w.refused(1);
  w.rewind(1, 10); // retry_after: until t=10
  w.refused(2);
  w.rewind(1); // the gap after it
  assert.deepEqual(w.next(5), [], "held until retry_after has passed");
  assert.equal(w.holdUntil, 10);
  assert.deepEqual(ids(w.next(10)), [1, 2]);
  // The resend made no progress: the next one waits stallBackoff first.
  w.refused(1);
  w.refused(2);
  w.rewind(1);
  assert.deepEqual(w.next(11), []);
  assert.equal(w.holdUntil, 12);
  assert.deepEqual(ids(w.next(12)), [1, 2]);
});

test("a gap below every held id renumbers the unacked mutations", () => {
  const r = replica();
  r.nextId = 5;
  for (const id of ["a", "b"]) r.insert("cards", id, { title: id });
  const w = new SendWindow(r);
  assert.deepEqual(ids(w.next(0)), [5, 6]);
  w.refused(5);
  w.refused(6);
  w.rewind(2); // the server expects 2
  assert.deepEqual(ids(w.next(0)), [2, 3]);
  assert.equal(r.nextId, 4);
});

test("subscriptions: welcome resumes the held queries since the cursor, asks for the others", () => {
  const r = replica();
  const s = new Subscriptions(r);
  r.loadSnapshot({ cursor: "e.3", queries: { held: { c: "cards" } }, records: { held: [] } });
  s.hydrated({ held: { c: "cards" } });
  s.want({ more: { c: "cols" } });
  assert.equal(s.settled, false);
  const subs = s.onWelcome(r.cursor);
  assert.deepEqual(
    subs.map((f) => [Object.keys(/** @type {object} */ (f.queries)), f.since ?? null]),
    [
      [["held"], "e.3"],
      [["more"], null],
    ],
  );
  s.onChanges(); // the resume was taken
  s.onSnapshot(new Set(["more"]), null);
  assert.equal(s.settled, true);
});

test("subscriptions: a refused sub is no longer wanted; a refused cursor asks afresh", () => {
  const r = replica();
  const s = new Subscriptions(r);
  s.want({ bad: { c: "cards" } });
  s.sub(new Map([["bad", { c: "cards" }]]));
  assert.deepEqual(s.onError("query"), []);
  assert.equal(s.wanted.has("bad"), false);
  assert.equal(s.answered(["bad"]), true, "refused: not waited for");

  r.loadSnapshot({ cursor: "e.3", queries: { q: { c: "cards" } }, records: { q: [] } });
  s.hydrated({ q: { c: "cards" } });
  s.onWelcome(r.cursor);
  assert.equal(s.resuming, true);
  const again = s.onError("cursor_too_old");
  assert.equal(again.length, 1);
  assert.equal(again[0].since, undefined, "a fresh snapshot, not since the cursor");
  assert.equal(s.resuming, false);
});

test("the replica alone knows which records each query holds", () => {
  const r = replica();
  const p = new ClientProtocol(r, { schemaHash: "h" });
  p.hydrate({
    v: 1,
    schema: "h",
    cursor: "e.1",
    queries: { q: { c: "cards" } },
    records: { q: [{ id: "c1", v: 1, inc: 1, fv: { title: 1 }, data: { title: "x" } }] },
  });
  assert.equal("members" in p, false, "the protocol keeps no copy");
  p.connectionMade();
  p.receive({ t: "welcome", v: 1, client: "tab-aaaaaaaa", epoch: "e", head: "e.2", last: 0 }, 0);
  p.receive({ t: "changes", from: "e.1", to: "e.2", q: { q: [{ k: "remove", id: "c1" }] } }, 0);
  assert.equal(r.get("cards", "c1"), null, "no query holds it: the replica dropped it");
});
