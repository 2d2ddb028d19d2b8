// bind.js: bound elements are patched in place, by textContent only.

import assert from "node:assert/strict";
import { test } from "node:test";

import { formatValue, patchKeys } from "../bind.js";
import { dict } from "../json.js";
import { FakeElement } from "./fakes.js";

/** @param {Record<string, unknown>} fields */
function row(fields) {
  const out = dict();
  Object.assign(out, fields);
  return out;
}

function page() {
  const title = new FakeElement({ "data-sl-field": "title" }, ["Shop"]);
  const labels = new FakeElement({ "data-sl-field": "labels" }, ["bug"]);
  const computed = new FakeElement({ "data-sl-field": "age" }, ["3 days"]);
  const nestedTitle = new FakeElement({ "data-sl-field": "title" }, ["Sub"]);
  const nested = new FakeElement({ "data-sl-id": "cards:c2" }, [nestedTitle]);
  const card = new FakeElement({ "data-sl-id": "cards:c1" }, [title, labels, computed, nested]);
  const root = new FakeElement({}, [card]);
  return { root, card, title, labels, computed, nested, nestedTitle };
}

test("fields are set by textContent, only when they differ", () => {
  const p = page();
  /** @type {Record<string, import("../json.js").Dict>} */
  const rows = { "cards:c1": row({ id: "c1", title: "Shop", labels: ["bug", "ui"] }) };
  patchKeys(/** @type {any} */ (p.root), ["cards:c1"], (c, id) => rows[`${c}:${id}`] ?? null);
  assert.equal(p.title.textWrites, 0, "an unchanged field is not touched");
  assert.equal(p.labels.textContent, "bug, ui");
  assert.equal(p.computed.textContent, "3 days", "a field the record does not hold is kept");
  assert.equal(p.nestedTitle.textContent, "Sub", "a nested record's fields are its own");
  rows["cards:c1"] = row({ id: "c1", title: "<b>Ship</b>", labels: [] });
  patchKeys(
    /** @type {any} */ (p.root),
    ["cards:c1", "cards:zz"],
    (c, id) => rows[`${c}:${id}`] ?? null,
  );
  assert.equal(p.title.textContent, "<b>Ship</b>");
  assert.equal(p.labels.textContent, "");
});

test("a record that leaves the view is hidden, and shown when it returns", () => {
  const p = page();
  patchKeys(/** @type {any} */ (p.root), ["cards:c2"], () => null);
  assert.equal(p.nested.hidden, true);
  patchKeys(/** @type {any} */ (p.root), ["cards:c2"], () => row({ id: "c2", title: "Back" }));
  assert.equal(p.nested.hidden, false);
  assert.equal(p.nestedTitle.textContent, "Back");
});

test("a custom renderer decides the text; undefined falls back", () => {
  const p = page();
  patchKeys(
    /** @type {any} */ (p.root),
    ["cards:c1"],
    () => row({ id: "c1", title: "T", labels: ["a", "b"] }),
    ({ field, value }) =>
      field === "labels" ? `${/** @type {unknown[]} */ (value).length} labels` : undefined,
  );
  assert.equal(p.labels.textContent, "2 labels");
  assert.equal(p.title.textContent, "T");
});

test("a renderer that returns null drew the element itself: it is left untouched", () => {
  const p = page();
  const chip = new FakeElement({ class: "chip" }, ["a"]);
  patchKeys(
    /** @type {any} */ (p.root),
    ["cards:c1"],
    () => row({ id: "c1", title: "T", labels: ["a"] }),
    ({ field, element }) => {
      if (field !== "labels") return undefined;
      const el = /** @type {any} */ (element);
      el.children = [chip];
      el._text = "";
      return null;
    },
  );
  assert.equal(p.labels.textWrites, 0, "the client wrote nothing over the drawing");
  assert.deepEqual(p.labels.children, [chip]);
  assert.equal(p.title.textContent, "T");
});

test("default formatting", () => {
  assert.equal(formatValue(null), "");
  assert.equal(formatValue(3.5), "3.5");
  assert.equal(formatValue(false), "false");
  assert.equal(formatValue(["a", 1, null]), "a, 1, ");
  assert.equal(formatValue({ a: 1 }), '{"a":1}');
});
