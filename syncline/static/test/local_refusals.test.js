// Every case of the conformance kit's local_refusals.json (tests/fixtures/protocol/,
// written by tests/gen_local_refusals_fixture.py from the server's own refusals) run
// against the browser replica: refused before any round trip with exactly the server's
// error (code, message, place), nothing queued, the view unchanged. The Python client
// runs the same file (tests/test_local_refusals.py).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { InvalidMutation, pyRepr } from "../builder.js";
import { connect } from "../client.js";
import { Replica } from "../replica.js";
import { makeSchema } from "../schema.js";
import { BOARD, KIT_DIR } from "./board.js";
import { FakeElement, FakeLocks, FakeSocket, fakeDocument } from "./fakes.js";

/** @typedef {import("../schema.js").Schema} Schema */

const fixture = JSON.parse(readFileSync(new URL("local_refusals.json", KIT_DIR), "utf8"));
/**
 * @typedef {object} Case
 * @property {any} local  the edit, in the kit's "local" form
 * @property {Record<string, string>} refusal  the server's: code, message and place
 * @property {boolean} needs_every_collection  only a client knowing every collection can
 */
/** @type {Case[]} */
const CASES = fixture.cases;

/**
 * @param {Replica} replica
 * @param {any} op  the kit's "local" form
 */
function edit(replica, op) {
  if (op.op === "insert") return replica.insert(op.c, op.id, op.fields);
  if (op.op === "update") return replica.update(op.c, op.id, op.set);
  if (op.op === "delete") return replica.delete(op.c, op.id);
  if (op.op === "incr") return replica.increment(op.c, op.id, op.field, op.by);
  if (op.op === "add") return replica.add(op.c, op.id, op.field, ...op.values);
  return replica.remove(op.c, op.id, op.field, ...op.values);
}

/** @param {Schema} schema */
function hydrated(schema) {
  const replica = new Replica(schema, "kit-refusals-js");
  replica.loadSnapshot(fixture.hydrate);
  return replica;
}

/**
 * The case is refused as the server refuses it, and nothing moved.
 * @param {Replica} replica
 * @param {Case} c
 */
function assertRefused(replica, c) {
  const before = JSON.stringify([...replica.view()]);
  /** @type {unknown} */
  let caught = null;
  try {
    edit(replica, c.local);
  } catch (exc) {
    caught = exc;
  }
  assert.ok(caught instanceof InvalidMutation, `not refused: ${JSON.stringify(c.local)}`);
  const { collection, id, field } = caught.where;
  const got = { code: caught.code, message: caught.message, collection, id, field };
  for (const key of ["collection", "id", "field"]) {
    if (got[/** @type {"id"} */ (key)] === undefined) delete got[/** @type {"id"} */ (key)];
  }
  assert.deepEqual(got, c.refusal);
  assert.equal(replica.pending.length, 0);
  assert.equal(replica.nextId, 1);
  assert.equal(JSON.stringify([...replica.view()]), before);
}

test("the fixture has the cases it promises", () => {
  assert.ok(CASES.length >= 25);
  assert.ok(CASES.some((c) => c.needs_every_collection));
  assert.equal(fixture.schema, fixture.hydrate.schema);
});

test("with the whole schema, every case is refused with the server's error", () => {
  for (const c of CASES) assertRefused(hydrated(makeSchema(BOARD, null, { strict: true })), c);
});

test("with the page's embedded description, every field's case is refused the same", () => {
  const embedded = () => hydrated(makeSchema(fixture.hydrate.fields, fixture.schema));
  for (const c of CASES) {
    if (!c.needs_every_collection) assertRefused(embedded(), c);
  }
  // The page lists only the collections it queried: an unknown one is the server's to
  // refuse. An update (which needs the record) says why it cannot be built here.
  const unknown = CASES.filter((c) => c.needs_every_collection);
  for (const c of unknown) {
    const replica = embedded();
    if (c.local.op === "update") {
      assert.throws(() => edit(replica, c.local), /does not list card, so only the server/);
    } else {
      edit(replica, c.local);
      assert.equal(replica.pending.length, 1);
    }
  }
});

test("a partial description checks the fields it lists and leaves the others to the server", () => {
  const replica = hydrated(makeSchema({ cards: { votes: "counter", labels: "set" } }, null));
  replica.update("cards", "c1", { titel: "typo the page cannot know" });
  replica.increment("cards", "c1", "rank", 1); // not listed: its policy is unknown here
  assert.equal(replica.pending.length, 2);
  assert.throws(
    () => replica.add("cards", "c1", "votes", "x"),
    (/** @type {any} */ e) =>
      e.code === "policy" &&
      e.message === "cards/'c1'.votes: add needs a set field; this one is counter",
  );
  const labels = () => replica.update("cards", "c1", { labels: ["x"] });
  assert.throws(labels, /a set changes only by add/);
});

test("pyRepr writes strings as Python's repr does", () => {
  assert.equal(pyRepr("c1"), "'c1'");
  assert.equal(pyRepr("it's"), `"it's"`);
  assert.equal(pyRepr(`it's "x" \\`), `'it\\'s "x" \\\\'`);
  const odd = "a\tb\n\r\x00\x7f\u00a0\u200b\u2028é🦊";
  assert.equal(pyRepr(odd), "'a\\tb\\n\\r\\x00\\x7f\\xa0\\u200b\\u2028é🦊'");
  assert.equal(pyRepr("\ud800"), "'\\ud800'");
});

/** @param {Partial<import("../client.js").ConnectOptions>} options */
async function page(options) {
  return connect({
    state: fixture.hydrate,
    document: fakeDocument(new FakeElement({}, [])),
    url: "ws://test/sync",
    socket: (url) => /** @type {any} */ (new FakeSocket(url)),
    storage: false,
    locks: /** @type {any} */ (new FakeLocks()),
    tabs: false,
    ...options,
  });
}

test("connect() refuses with the page's embedded fields, or a strict schema", async () => {
  const embedded = await page({});
  const title = () => embedded.increment("cards", "c1", "title");
  assert.throws(title, { code: "policy", message: /^cards\/'c1'.title: incr needs a counter/ });
  embedded.insert("card", "c9", {}); // not described here: the server's to refuse
  assert.equal(embedded.pending.value, 1);
  embedded.close();
  const whole = makeSchema(BOARD, null, { strict: true });
  const strict = await page({ schema: /** @type {any} */ (whole) });
  const message = "card/'c9': unknown collection; declared: ['boards', 'cards', 'lists']";
  assert.throws(() => strict.insert("card", "c9", {}), { message });
  assert.equal(strict.pending.value, 0);
  strict.close();
  FakeSocket.instances = [];
});
