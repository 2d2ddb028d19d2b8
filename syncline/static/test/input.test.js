// input.js with a real client over the fake socket: the user's typing is sent, and a
// change from elsewhere (another client's edit, merged with the user's own pending one)
// replaces the value without moving the caret off its text.

import assert from "node:assert/strict";
import { afterEach, test } from "node:test";

import { bindInput } from "../client.js";
import { FakeSocket, settle } from "./fakes.js";
import { hydratedClient } from "./hydrated.js";

/** @typedef {import("../client.js").SyncClient} SyncClient */

const FOX = "The \u{1F98A} fox"; // c1's description, a text field

/** @type {SyncClient[]} */
let clients = [];
afterEach(() => {
  for (const c of clients) c.close();
  clients = [];
  FakeSocket.instances = [];
});

/** An <input>: a value, a selection, events, focus. */
class FakeInput {
  /** @param {{activeElement: unknown}} doc */
  constructor(doc) {
    this.ownerDocument = doc;
    this.value = "";
    this.selectionStart = 0;
    this.selectionEnd = 0;
    /** @type {"forward" | "backward" | "none"} */
    this.selectionDirection = "none";
    /** @type {Map<string, Set<(e: unknown) => void>>} */
    this.listeners = new Map();
  }

  /** @param {number} start @param {number} end @param {any} [direction] */
  setSelectionRange(start, end, direction) {
    this.selectionStart = start;
    this.selectionEnd = end;
    if (direction) this.selectionDirection = direction;
  }

  /** @param {string} type @param {(e: unknown) => void} fn */
  addEventListener(type, fn) {
    const set = this.listeners.get(type) ?? new Set();
    set.add(fn);
    this.listeners.set(type, set);
  }

  /** @param {string} type @param {(e: unknown) => void} fn */
  removeEventListener(type, fn) {
    this.listeners.get(type)?.delete(fn);
  }

  /** @param {string} type */
  dispatch(type) {
    for (const fn of this.listeners.get(type) ?? []) fn({ type });
  }

  focus() {
    this.ownerDocument.activeElement = this;
  }

  /** The user types `text` at the caret. @param {string} text */
  type(text) {
    const v = this.value;
    this.value = v.slice(0, this.selectionStart) + text + v.slice(this.selectionEnd);
    this.selectionStart = this.selectionEnd = this.selectionStart + text.length;
    this.dispatch("input");
  }
}

async function start() {
  const { sync, doc } = await hydratedClient();
  clients.push(sync);
  const ws = FakeSocket.instances[0];
  ws.open();
  await settle();
  ws.receive({ t: "welcome", v: 1, client: sync.clientId, epoch: "e1", head: "e1.5", last: 0 });
  await settle();
  ws.take();
  const input = new FakeInput(doc);
  return { sync, ws, input };
}

/**
 * Another client's edit of c1's description, as the server sends it.
 * @param {FakeSocket} ws
 * @param {string} description
 * @param {number} v
 */
function theirs(ws, description, v) {
  ws.receive({
    t: "changes",
    from: `e1.${v - 1}`,
    to: `e1.${v}`,
    q: {
      cards: [patch({ description }, v)],
    },
  });
}

/**
 * A change of c1's fields at version v.
 * @param {Record<string, unknown>} data
 * @param {number} v
 */
function patch(data, v) {
  const fv = Object.fromEntries(Object.keys(data).map((k) => [k, v]));
  return { k: "patch", c: "cards", id: "c1", inc: 1, v, fv, data };
}

test("an input shows the field, and what the user types is sent", async () => {
  const { sync, ws, input } = await start();
  bindInput(sync, input, "cards", "c1", "description");
  assert.equal(input.value, FOX);
  input.focus();
  input.setSelectionRange(FOX.length, FOX.length);
  input.type("!");
  assert.equal(sync.get("cards", "c1")?.description, `${FOX}!`);
  await settle();
  const sent = ws.take();
  assert.equal(sent.length, 1);
  assert.equal(sent[0].t, "mut");
  assert.equal(/** @type {any} */ (sent[0]).ops[0].id, "c1");
});

test("someone's edit before the caret, merged with the user's own: the caret stays", async () => {
  const { sync, ws, input } = await start();
  bindInput(sync, input, "cards", "c1", "description");
  input.focus();
  // The user types after "fox"; it is sent, not yet acknowledged.
  input.setSelectionRange(FOX.length, FOX.length);
  input.type(" jumps");
  await settle();
  // Someone else typed "quick " before the fox.
  theirs(ws, "The quick \u{1F98A} fox", 6);
  assert.equal(input.value, "The quick \u{1F98A} fox jumps", "both edits, merged");
  assert.equal(input.selectionStart, input.value.length, "the caret is still after 'jumps'");
  assert.equal(input.selectionEnd, input.value.length);
  // A caret in the middle, a selection: both follow their text.
  input.setSelectionRange(4, 9); // "quick"
  theirs(ws, "So The quick \u{1F98A} fox", 7);
  assert.equal(input.value.slice(input.selectionStart, input.selectionEnd), "quick");
});

test("an unfocused input just takes the value; unbinding stops both ways", async () => {
  const { sync, ws, input } = await start();
  const unbind = bindInput(sync, input, "cards", "c1", "description");
  input.setSelectionRange(2, 2);
  theirs(ws, "New text", 6);
  assert.equal(input.value, "New text");
  assert.equal(input.selectionStart, 2, "no caret to keep: the selection is not set");
  unbind();
  theirs(ws, "Newer", 7);
  assert.equal(input.value, "New text");
  input.type("x");
  assert.equal(sync.get("cards", "c1")?.description, "Newer");
});

test("while an IME composes nothing is sent or replaced; the end of it catches up", async () => {
  const { sync, ws, input } = await start();
  bindInput(sync, input, "cards", "c1", "description");
  input.focus();
  input.setSelectionRange(0, 0);
  input.dispatch("compositionstart");
  input.type("\u3042");
  theirs(ws, `${FOX}?`, 6);
  assert.equal(input.value, `\u3042${FOX}`, "the composition is left alone");
  assert.equal(sync.get("cards", "c1")?.description, `${FOX}?`, "and not sent yet");
  input.dispatch("compositionend");
  assert.equal(sync.get("cards", "c1")?.description, `\u3042${FOX}?`);
  assert.equal(input.value, `\u3042${FOX}?`);
  assert.equal(input.selectionStart, 1);
});

test('with send "change", uncommitted typing is not wiped by a change from elsewhere', async () => {
  const { sync, ws, input } = await start();
  bindInput(sync, input, "cards", "c1", "title", { send: "change" });
  input.focus();
  input.setSelectionRange(4, 4);
  input.type("s");
  assert.equal(sync.get("cards", "c1")?.title, "Shop", "not sent before change");
  ws.receive({
    t: "changes",
    from: "e1.5",
    to: "e1.6",
    q: { cards: [patch({ votes: 3 }, 6)] },
  });
  assert.equal(input.value, "Shops");
  ws.receive({
    t: "changes",
    from: "e1.6",
    to: "e1.7",
    q: { cards: [patch({ title: "Big Shop" }, 7)] },
  });
  assert.equal(input.value, "Shops", "the user's typing is kept until committed");
  input.dispatch("change");
  assert.equal(sync.get("cards", "c1")?.title, "Big Shops", "merged with the change meanwhile");
  assert.equal(input.value, "Big Shops");
  assert.equal(input.selectionStart, 9, "the caret after the typed s");
});

test("what is not a text control is refused by name", async () => {
  const { sync } = await start();
  for (const element of [{}, null]) {
    assert.throws(
      () => bindInput(sync, /** @type {any} */ (element), "cards", "c1", "title"),
      /an <input> or a <textarea>/,
    );
  }
  const input = new FakeInput({ activeElement: null });
  assert.throws(
    () => bindInput(sync, input, "cards", "c1", "title", /** @type {any} */ ({ send: "blur" })),
    /"input" or "change", not "blur"/,
  );
});
