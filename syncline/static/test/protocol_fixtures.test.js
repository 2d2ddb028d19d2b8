// Every conformance fixture in tests/fixtures/protocol/ (format: its README.md), run
// against the browser client's protocol.js and replica.js exactly as
// tests/test_protocol_fixtures.py runs them against the Python client. A JS runner also
// checks after every step that no prototype gained a property, and compares records by
// own properties only. The schema comes from the kit's schema.json (through board.js),
// and its hash is computed from it as the kit's README specifies.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync, readdirSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { hasOwn, isObject, jsonEqual } from "../json.js";
import { ClientProtocol } from "../protocol.js";
import { Replica } from "../replica.js";
import { BOARD, KIT_DIR, KIT_SCHEMA, hashInput, schemaHash } from "./board.js";

/** @typedef {import("../json.js").Dict} Dict */
/** @typedef {import("../protocol.js").ClientEvent} ClientEvent */
/** @typedef {import("../replica.js").MutationBuilder} MutationBuilder */

// The kit's data files; every other *.json is a scenario.
const DATA_FILES = new Set([
  "schema.json",
  "textmerge.json",
  "query.json",
  "local_refusals.json",
  "undo.json",
]);
const FIXTURES = readdirSync(fileURLToPath(KIT_DIR))
  .filter((f) => f.endsWith(".json") && !DATA_FILES.has(f))
  .sort();

// Events a fixture checks; the others ("changed", "ack", "status") are this client's own.
const CHECKED_EVENTS = new Set([
  "conflict",
  "overwritten",
  "merged",
  "rejected",
  "dropped",
  "reset",
  "reload",
  "error",
]);

test("there are fixtures", () => {
  assert.ok(FIXTURES.length >= 9);
});

test("the kit's schema and its hash vectors hash as the kit says", () => {
  for (const vector of [KIT_SCHEMA, ...KIT_SCHEMA.hash_vectors]) {
    assert.equal(hashInput(vector), vector.hash_input);
    const digest = createHash("sha256").update(vector.hash_input, "utf8").digest("hex");
    assert.equal(digest.slice(0, 16), vector.hash);
    assert.equal(schemaHash(vector), vector.hash);
  }
  assert.equal(schemaHash(KIT_SCHEMA), "85199e93656c85d2");
});

for (const name of FIXTURES) {
  test(`fixture ${name.replace(/\.json$/, "")}`, () => {
    const fixture = JSON.parse(readFileSync(new URL(name, KIT_DIR), "utf8"));
    new Runner(fixture).run();
  });
}

/**
 * Objects match when every expected key matches (own keys only); anything else must be equal.
 * @param {unknown} expected
 * @param {unknown} actual
 * @returns {boolean}
 */
function subset(expected, actual) {
  if (isObject(expected)) {
    return (
      isObject(actual) &&
      Object.keys(expected).every((k) => hasOwn(actual, k) && subset(expected[k], actual[k]))
    );
  }
  return jsonEqual(expected, actual);
}

/** What the shared prototypes look like before a fixture runs. */
function prototypeState() {
  return [Object.prototype, Array.prototype, Function.prototype, String.prototype]
    .map((p) => Object.getOwnPropertyNames(p).sort().join(","))
    .join("|");
}

class Runner {
  /** @param {Dict} fixture */
  constructor(fixture) {
    assert.equal(
      fixture.schema,
      schemaHash(KIT_SCHEMA),
      "the fixture was written for another schema",
    );
    /** @type {Dict[]} */
    this.steps = /** @type {Dict[]} */ (fixture.steps);
    this.replica = new Replica(BOARD, String(fixture.client));
    this.protocol = new ClientProtocol(this.replica, {
      schemaHash: String(fixture.schema),
      credentials: /** @type {Dict | undefined} */ (fixture.auth) ?? null,
    });
    this.now = 0;
    /** @type {Dict[]} */
    this.out = [];
    /** @type {ClientEvent[]} */
    this.events = [];
    this.prototypes = prototypeState();
  }

  run() {
    this.steps.forEach((step, i) => {
      const keys = Object.keys(step);
      assert.equal(keys.length, 1, `step ${i} has one key`);
      const kind = keys[0];
      const arg = step[kind];
      try {
        this.step(kind, arg);
        this.out.push(...this.protocol.dataToSend(this.now));
        this.checkPrototypes();
      } catch (exc) {
        if (exc instanceof Error) exc.message = `step ${i} ${kind}: ${exc.message}`;
        throw exc;
      }
    });
    this.out.push(...this.protocol.dataToSend(this.now));
    assert.deepEqual(plain(this.out), [], "frames sent that no step expected");
    const unchecked = this.events.filter((e) => CHECKED_EVENTS.has(e.kind)).map(eventWire);
    assert.deepEqual(plain(unchecked), [], "events that no step expected");
  }

  checkPrototypes() {
    assert.equal(prototypeState(), this.prototypes, "a prototype gained a property");
    assert.equal(/** @type {Dict} */ ({}).polluted, undefined);
    assert.equal(/** @type {Dict} */ (Object.prototype).polluted, undefined);
    assert.equal(Object.getPrototypeOf({}), Object.prototype);
  }

  /** @param {string} kind @param {any} arg */
  step(kind, arg) {
    switch (kind) {
      // --- inputs
      case "hydrate":
        this.events.push(...this.protocol.hydrate(arg));
        return;
      case "subscribe":
        this.protocol.subscribe(arg);
        return;
      case "connect":
        this.protocol.connectionMade();
        return;
      case "disconnect":
        this.protocol.connectionLost();
        return;
      case "in":
        this.events.push(...this.protocol.receive(arg, this.now));
        return;
      case "advance":
        this.now += arg;
        return;
      case "local":
        if (hasOwn(arg, "batch")) {
          this.replica.batch((b) => {
            for (const one of arg.batch) apply(b, one);
          }, arg.mode ?? "whole");
        } else {
          this.replica.batch((b) => apply(b, arg));
        }
        return;
      case "resolve":
        this.replica.resolve(this.replica.drafts[arg.draft], arg.choices);
        return;
      case "join":
        this.protocol.sendPresence(this.protocol.presence.join(arg.room, arg.state));
        return;
      case "presence":
        this.protocol.sendPresence(this.protocol.presence.update(arg.room, arg.state));
        return;
      case "leave":
        this.protocol.sendPresence(this.protocol.presence.leave(arg));
        return;
      // --- expectations
      case "expect_members":
        for (const room of Object.keys(arg)) {
          const view = this.protocol.presence.rooms.get(room);
          if (arg[room] === null) {
            assert.equal(view, undefined, `room ${room} is still joined`);
            continue;
          }
          assert.ok(view, `room ${room} is not joined`);
          /** @type {Dict} */
          const actual = {};
          for (const [k, m] of view.members) actual[k] = { user: m.user, state: m.state };
          assert.ok(jsonEqual(plain(actual), arg[room]), `members are ${JSON.stringify(actual)}`);
        }
        return;
      case "expect_out": {
        this.out.push(...this.protocol.dataToSend(this.now));
        const sent = this.out;
        this.out = [];
        assert.ok(jsonEqual(plain(sent), arg), `sent ${JSON.stringify(sent)}`);
        return;
      }
      case "expect_view":
        for (const collection of Object.keys(arg)) {
          const records = arg[collection];
          for (const rid of Object.keys(records)) {
            const fields = records[rid];
            const actual = this.replica.get(collection, rid);
            if (fields === null) {
              assert.equal(
                actual,
                null,
                `${collection}/${rid} is visible: ${JSON.stringify(actual)}`,
              );
            } else {
              assert.notEqual(actual, null, `${collection}/${rid} is not visible`);
              assert.ok(
                subset(fields, actual),
                `${collection}/${rid} is ${JSON.stringify(actual)}`,
              );
            }
          }
        }
        return;
      case "expect_pending":
        assert.deepEqual(
          this.replica.pending.map((p) => p.mutation.id),
          arg,
        );
        return;
      case "expect_cursor": {
        const c = this.replica.cursor;
        assert.equal(c === null ? null : `${c.epoch}.${c.seq}`, arg);
        return;
      }
      case "expect_state":
        assert.equal(this.protocol.state, arg);
        return;
      case "expect_synced":
        assert.equal(this.protocol.synced, arg);
        return;
      case "expect_drafts": {
        const actual = this.replica.drafts.map((d) => ({
          mutation_id: d.mutationId,
          conflicts: d.conflicts,
        }));
        assert.ok(jsonEqual(plain(actual), arg), `drafts are ${JSON.stringify(actual)}`);
        return;
      }
      case "expect_events": {
        const got = this.events.filter((e) => CHECKED_EVENTS.has(e.kind)).map(eventWire);
        this.events = [];
        assert.ok(
          got.length === arg.length &&
            arg.every((/** @type {unknown} */ e, /** @type {number} */ i) => subset(e, got[i])),
          `events were ${JSON.stringify(got)}`,
        );
        return;
      }
      default:
        assert.fail(`unknown step ${kind}`);
    }
  }
}

/**
 * @param {MutationBuilder} target
 * @param {any} op
 */
function apply(target, op) {
  const { c, id } = op;
  switch (op.op) {
    case "insert":
      target.insert(c, id, op.fields);
      break;
    case "update":
      target.update(c, id, op.set);
      break;
    case "delete":
      target.delete(c, id);
      break;
    case "incr":
      target.increment(c, id, op.field, op.by ?? 1);
      break;
    case "add":
      target.add(c, id, op.field, ...op.values);
      break;
    case "remove":
      target.remove(c, id, op.field, ...op.values);
      break;
    default:
      assert.fail(`unknown local op ${op.op}`);
  }
}

/**
 * An event in the fixtures' form: {kind, mutation_id, fields, error, reason}.
 * @param {ClientEvent} event
 * @returns {Dict}
 */
function eventWire(event) {
  /** @type {Dict} */
  const out = { kind: event.kind };
  if (event.mutationId !== null) out.mutation_id = event.mutationId;
  if (event.fields.length) out.fields = [...event.fields];
  if (event.error !== null) out.error = event.error;
  if (event.reason !== null) out.reason = event.reason;
  return out;
}

/**
 * A JSON value as JSON.parse would give it (plain objects), for assertions.
 * @param {unknown} value
 * @returns {any}
 */
function plain(value) {
  return JSON.parse(JSON.stringify(value));
}
