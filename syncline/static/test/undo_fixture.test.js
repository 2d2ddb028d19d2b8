// Cross-language parity: the browser's replica runs every case of the conformance kit's
// undo.json (tests/fixtures/protocol/, written by tests/gen_undo_fixture.py from the
// Python replica, whose runner is tests/test_undo_fixture.py): the same mutations sent,
// the same fields skipped, the same drafts, the same view, for every merge policy.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { jsonEqual } from "../json.js";
import { mutFrame } from "../ops.js";
import { Replica } from "../replica.js";
import { BOARD, KIT_DIR } from "./board.js";

const fixture = JSON.parse(readFileSync(new URL("undo.json", KIT_DIR), "utf8"));

/** @param {Replica} replica @param {Set<number>} before */
function sent(replica, before) {
  return replica
    .unacked()
    .filter((m) => !before.has(m.id))
    .map((m) => {
      const { t, ...frame } = mutFrame(m);
      return frame;
    });
}

/** @param {Replica} r @param {any} edit */
function applyEdit(r, edit) {
  const { op, c, id } = edit;
  if (op === "insert") r.insert(c, id, edit.fields);
  else if (op === "update") r.update(c, id, edit.set);
  else if (op === "delete") r.delete(c, id);
  else if (op === "incr") r.increment(c, id, edit.field, edit.by ?? 1);
  else if (op === "add") r.add(c, id, edit.field, ...edit.values);
  else if (op === "remove") r.remove(c, id, edit.field, ...edit.values);
  else throw new Error(`unknown edit ${op}`);
}

/** @param {unknown} got @param {unknown} want @param {string} where */
function same(got, want, where) {
  assert.ok(jsonEqual(got, want), `${where}: ${JSON.stringify(got)} != ${JSON.stringify(want)}`);
}

test("the undo fixture has cases", () => {
  assert.ok(fixture.cases.length >= 20);
});

for (const c of fixture.cases) {
  test(`undo fixture ${c.name}`, () => {
    let now = 0; // the replica's clock (seconds), set by each step's "at"
    const replica = new Replica(BOARD, fixture.client, { clock: () => now });
    c.steps.forEach((/** @type {any} */ step, /** @type {number} */ i) => {
      const where = `${c.name} step ${i}`;
      if ("at" in step) now = step.at;
      const before = new Set(replica.unacked().map((m) => m.id));
      if ("hydrate" in step) replica.loadSnapshot(step.hydrate);
      else if ("local" in step) {
        const edits = () => {
          for (const edit of step.local) applyEdit(replica, edit);
        };
        if (step.typed) edits();
        else replica.undoGroup(edits);
        same(sent(replica, before), step.sent, where);
      } else if ("undo" in step || "redo" in step) {
        const outcome = "undo" in step ? replica.undo() : replica.redo();
        same(sent(replica, before), step.sent, where);
        same(outcome ? outcome.skipped : [], step.skipped, `${where} skipped`);
        same(outcome ? outcome.conflicts : [], step.conflicts, `${where} conflicts`);
      } else if ("ack" in step) replica.applyAck(step.ack);
      else if ("changes" in step) replica.applyChanges(step.changes);
      else if ("expect" in step) {
        const view = Object.fromEntries(
          Object.keys(step.expect.view).map((id) => [id, replica.get("cards", id)]),
        );
        same(view, step.expect.view, `${where} view`);
        assert.equal(replica.canUndo, step.expect.can_undo, `${where} can_undo`);
        assert.equal(replica.canRedo, step.expect.can_redo, `${where} can_redo`);
        same(replica.drafts.map((d) => d.conflicts), step.expect.drafts, `${where} drafts`);
      }
    });
  });
}
