// list.js: a keyed list in a real (if small) DOM, linkedom: rows inserted, removed and
// moved by the query's order, the untouched ones kept as the same nodes, unfilled, and a
// server-rendered list adopted rather than drawn again.

import assert from "node:assert/strict";
import { test } from "node:test";

import { parseHTML } from "linkedom";

import { ListError, longestIncreasing, renderList } from "../list.js";
import { Value } from "../observable.js";

/** @typedef {import("../json.js").Dict} Dict */

/** @param {string} id @param {string} title @returns {Dict} */
function row(id, title) {
  return /** @type {Dict} */ ({ id, title });
}

/**
 * A page with a server-rendered list of these rows, and the row template.
 * @param {Dict[]} rendered
 */
function page(rendered = []) {
  const items = rendered
    .map((r) => `<li data-id="${r.id}"><span class="title">${r.title}</span></li>`)
    .join("");
  const { document } = parseHTML(
    `<html><body><ul id="list"><li class="head">Items</li>${items}</ul>` +
      `<template id="row"><li><span class="title" data-sl-field="title"></span></li></template>` +
      `</body></html>`,
  );
  const list = /** @type {Element} */ (document.getElementById("list"));
  const template = /** @type {HTMLTemplateElement} */ (
    /** @type {unknown} */ (document.getElementById("row"))
  );
  /** @type {Node[]} what insertBefore moved or added */
  const placed = [];
  const insertBefore = list.insertBefore.bind(list);
  list.insertBefore = /** @type {any} */ (
    (/** @type {Node} */ node, /** @type {Node | null} */ ref) => {
      placed.push(node);
      return insertBefore(node, ref);
    }
  );
  return { document, list, template, placed };
}

/** @param {Element} list @returns {Element[]} */
function rowsOf(list) {
  return [...list.children].filter((el) => el.hasAttribute("data-id"));
}

/** @param {Element} list @returns {string[]} */
function texts(list) {
  return rowsOf(list).map((el) => String(el.querySelector(".title")?.textContent));
}

/** A fill that counts what it drew. */
function counting() {
  /** @type {string[]} */
  const filled = [];
  /** @type {import("../list.js").Fill} */
  const fill = (el, r) => {
    filled.push(String(r.id));
    const title = el.querySelector(".title");
    if (title) title.textContent = String(r.title);
  };
  return { filled, fill };
}

test("inserted, removed and reordered rows; untouched rows keep their nodes, unfilled", () => {
  const { list, template, placed } = page();
  const rows = new Value([row("a", "A"), row("b", "B"), row("c", "C")]);
  const { filled, fill } = counting();
  const stop = renderList(list, template, rows, { fill });
  assert.deepEqual(texts(list), ["A", "B", "C"]);
  assert.deepEqual(filled, ["c", "b", "a"]);
  const [a, b, c] = rowsOf(list);
  filled.length = 0;
  placed.length = 0;

  rows.set([row("c", "C"), row("a", "A"), row("d", "D"), row("b", "B2")]);
  assert.deepEqual(texts(list), ["C", "A", "D", "B2"]);
  const [c2, a2, d, b2] = rowsOf(list);
  assert.equal(c2, c, "a moved row is the same node");
  assert.equal(a2, a, "an untouched row is the same node");
  assert.equal(b2, b, "a changed row is the same node, filled again");
  assert.deepEqual(filled.sort(), ["b", "d"], "only the new and the changed rows are filled");
  assert.deepEqual(placed, [d, c], "a and b were in order: only c moved, d was added");

  rows.set([row("a", "A"), row("b", "B2")]);
  assert.deepEqual(rowsOf(list), [a, b]);
  assert.equal(c.isConnected, false);
  assert.equal(d.isConnected, false);
  assert.equal(list.firstElementChild?.className, "head", "a child without a key stays");
  stop();
  rows.set([]);
  assert.deepEqual(rowsOf(list), [a, b], "stopped: the list stays as it is");
});

test("a server-rendered list is adopted: its nodes are the rows, not drawn again", () => {
  const rendered = [row("a", "A"), row("b", "B")];
  const { list, template } = page(rendered);
  const [a, b] = rowsOf(list);
  const rows = new Value([row("a", "A"), row("b", "B")]);
  const { filled, fill } = counting();
  renderList(list, template, rows, { fill, pristine: true });
  assert.deepEqual(rowsOf(list), [a, b]);
  assert.deepEqual(filled, [], "pristine: the server's rendering is kept as it is");
  rows.set([row("b", "B"), row("a", "A!"), row("c", "C")]);
  assert.deepEqual(texts(list), ["B", "A!", "C"]);
  assert.deepEqual(rowsOf(list).slice(0, 2), [b, a]);
  assert.deepEqual(filled.sort(), ["a", "c"]);
});

test("an adopted list that is not pristine fills its rows once; unknown ones go", () => {
  const { list, template } = page([row("a", "stale"), row("zz", "gone")]);
  const [a] = rowsOf(list);
  const { filled, fill } = counting();
  renderList(list, template, new Value([row("a", "A")]), { fill });
  assert.deepEqual(rowsOf(list), [a]);
  assert.deepEqual(texts(list), ["A"]);
  assert.deepEqual(filled, ["a"]);
});

test("bound by data attributes: rows carry data-sl-id, fields get their text", () => {
  const { document, list, template } = page();
  const rows = new Value([row("x1", "<b>one</b>")]);
  renderList(list, template, rows, { collection: "items" });
  const [x1] = rowsOf(list);
  assert.equal(x1.getAttribute("data-sl-id"), "items:x1");
  assert.equal(x1.querySelector("[data-sl-field=title]")?.textContent, "<b>one</b>");
  assert.equal(document.querySelector("b"), null, "text, never HTML");
});

test("an unusable template or missing options are named errors", () => {
  const { document, list, template } = page();
  const rows = new Value(/** @type {Dict[]} */ ([]));
  assert.throws(() => renderList(list, template, rows), ListError);
  const two = /** @type {HTMLTemplateElement} */ (
    /** @type {unknown} */ (document.createElement("template"))
  );
  two.innerHTML = "<li></li><li></li>";
  assert.throws(
    () => renderList(list, two, rows, { collection: "items" }),
    /exactly one element \(the row\), not 2/,
  );
  const notTemplate = /** @type {any} */ (list);
  assert.throws(() => renderList(list, notTemplate, rows, { collection: "c" }), ListError);
  assert.throws(
    () => renderList(/** @type {any} */ (null), template, rows, { collection: "c" }),
    /needs the container element/,
  );
  assert.throws(
    () => renderList(list, template, /** @type {any} */ ([]), { collection: "c" }),
    /a live query's rows/,
  );
});

test("the longest run in order", () => {
  assert.deepEqual([...longestIncreasing([])], []);
  assert.deepEqual([...longestIncreasing([0, 1, 2])].sort(), [0, 1, 2]);
  assert.deepEqual([...longestIncreasing([2, 0, 1])].sort(), [1, 2]);
  assert.equal(longestIncreasing([3, 1, 4, 0, 5, 2, 6]).size, 4);
});
