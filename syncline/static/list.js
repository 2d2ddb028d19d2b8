// A keyed list kept in the order of a live query (docs/browser-client.md, Browser
// helpers): one row per record, cloned from a <template>, inserted, removed and moved
// as the query's rows change. A row whose record did not change is not touched: the
// same DOM node stays, unfilled, and only the rows out of order move (those off the
// longest run already in order), so a focused input in an unmoved row keeps its focus
// and caret. A server-rendered list is adopted, not drawn again: a child of the
// container whose data-id (or the id part of its data-sl-id) names a record of the
// query becomes that record's row. Children with neither are left where they are.

import { patchElement } from "./bind.js";
import { jsonEqual } from "./json.js";

/** @typedef {import("./json.js").Dict} Dict */

/**
 * @template T
 * @typedef {import("./observable.js").Observable<T>} Observable
 */

/**
 * Fill a row's element from its record (the first time, and after each change to it).
 * @typedef {(element: Element, row: Dict, context: {index: number, previous: Dict | null}) => void} Fill
 */

/**
 * @typedef {object} ListOptions
 * @property {Fill} [fill]  draws a row; default: the row's [data-sl-field] elements get
 *   the field's text (bind.js), which needs `collection`
 * @property {string} [collection]  the query's collection: each new row gets
 *   data-sl-id="<collection>:<id>", so the page's binding patches it too
 * @property {boolean} [pristine]  the server-rendered rows show their records as they are
 *   (pass sync.pristine): adopted rows are not filled until their record changes
 */

/** A list that could not be set up: the template or the options are not usable. */
export class ListError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "ListError";
  }
}

/**
 * The record id a server-rendered child stands for, or null.
 * @param {Element} el
 * @returns {string | null}
 */
function keyOf(el) {
  const id = el.getAttribute("data-id");
  if (id !== null) return id;
  const bound = el.getAttribute("data-sl-id");
  if (bound === null) return null;
  const i = bound.indexOf(":");
  return i < 0 ? null : bound.slice(i + 1);
}

/**
 * Indices (into `seq`) of a longest strictly increasing subsequence of `seq`.
 * @param {number[]} seq
 * @returns {Set<number>}
 */
export function longestIncreasing(seq) {
  /** @type {number[]} tails[k]: index in seq of the smallest tail of a run of length k+1 */
  const tails = [];
  /** @type {number[]} */
  const prev = new Array(seq.length).fill(-1);
  for (let i = 0; i < seq.length; i++) {
    let lo = 0;
    let hi = tails.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (seq[tails[mid]] < seq[i]) lo = mid + 1;
      else hi = mid;
    }
    if (lo > 0) prev[i] = tails[lo - 1];
    tails[lo] = i;
  }
  /** @type {Set<number>} */
  const out = new Set();
  for (let i = tails.length ? tails[tails.length - 1] : -1; i >= 0; i = prev[i]) out.add(i);
  return out;
}

/**
 * Keep `container`'s children one per row of `rows`, in its order, drawn from `template`.
 * Returns a function that stops (the rows stay as they are).
 * @param {Element} container
 * @param {HTMLTemplateElement} template  its content holds exactly one element: a row
 * @param {Observable<Dict[]>} rows  a live query (sync.query(...))
 * @param {ListOptions} [options]
 * @returns {() => void}
 */
export function renderList(container, template, rows, options = {}) {
  if (!container || typeof container.insertBefore !== "function") {
    throw new ListError("renderList needs the container element (got none: a wrong selector?)");
  }
  const content = template && template.content;
  if (!content) throw new ListError("renderList needs a <template> element");
  if (!rows || typeof rows.subscribe !== "function") {
    throw new ListError("renderList needs a live query's rows (sync.query(...))");
  }
  const roots = [...content.children];
  if (roots.length !== 1) {
    throw new ListError(
      `a list's <template> holds exactly one element (the row), not ${roots.length}`,
    );
  }
  const { collection } = options;
  if (!options.fill && collection === undefined) {
    throw new ListError("renderList needs options.fill, or options.collection to bind fields");
  }
  const fill =
    options.fill ??
    ((/** @type {Element} */ el, /** @type {Dict} */ row) =>
      patchElement(el, /** @type {string} */ (collection), String(row.id), row));
  const doc = container.ownerDocument;

  /** @type {Map<string, {el: Element, row: Dict | null}>} the rows shown, by record id */
  let shown = new Map();
  /** @type {string[]} their ids in the order shown */
  let order = [];
  for (const child of [...container.children]) {
    const id = keyOf(child);
    if (id !== null && !shown.has(id)) {
      // Bound like a row drawn here, so the page's binding patches it too.
      if (collection !== undefined && !child.hasAttribute("data-sl-id")) {
        child.setAttribute("data-sl-id", `${collection}:${id}`);
      }
      shown.set(id, { el: child, row: null });
      order.push(id);
    }
  }
  let first = true;

  /** @param {Dict[]} next */
  const update = (next) => {
    /** @type {Map<string, {el: Element, row: Dict | null}>} */
    const kept = new Map();
    /** @type {string[]} */
    const ids = [];
    /** @type {Dict[]} */
    const wanted = [];
    for (const row of next) {
      const id = String(row.id);
      if (kept.has(id)) continue; // the same record twice: shown once
      kept.set(id, shown.get(id) ?? { el: /** @type {any} */ (null), row: null });
      ids.push(id);
      wanted.push(row);
    }
    // Remember the focus: a moved node loses it.
    const active = doc ? doc.activeElement : null;
    const focused = active && container.contains(active) ? active : null;
    const field = /** @type {HTMLInputElement | null} */ (focused);
    const selection =
      field && typeof field.selectionStart === "number"
        ? [field.selectionStart, field.selectionEnd ?? field.selectionStart]
        : null;
    for (const id of order) if (!kept.has(id)) shown.get(id)?.el.remove();
    // Which old rows stay where they are: the longest run already in the new order.
    const position = new Map(order.filter((id) => kept.has(id)).map((id, i) => [id, i]));
    const olds = ids.map((id) => position.get(id) ?? -1);
    const inOrder = longestIncreasing(olds.filter((p) => p >= 0));
    /** @type {Set<string>} */
    const stay = new Set();
    let k = 0;
    ids.forEach((id, i) => {
      if (olds[i] < 0) return;
      if (inOrder.has(k)) stay.add(id);
      k++;
    });
    // Where rows after the last one go: after the last row left in place.
    const lastOld = [...position.keys()].at(-1);
    /** @type {Node | null} */
    let anchor = lastOld === undefined ? null : (kept.get(lastOld)?.el.nextSibling ?? null);
    for (let i = ids.length - 1; i >= 0; i--) {
      const id = ids[i];
      const entry = /** @type {{el: Element, row: Dict | null}} */ (kept.get(id));
      const row = wanted[i];
      if (entry.el === null) {
        entry.el = /** @type {Element} */ (roots[0].cloneNode(true));
        if (collection !== undefined) entry.el.setAttribute("data-sl-id", `${collection}:${id}`);
        entry.el.setAttribute("data-id", id);
      }
      // A new row is filled; an adopted one unless the server drew it from this very
      // state (pristine); a shown one when its record changed.
      const trusted = first && options.pristine === true && entry.el.isConnected;
      const due = entry.row === null ? !trusted : !jsonEqual(entry.row, row);
      if (due) fill(entry.el, row, { index: i, previous: entry.row });
      entry.row = row;
      if (!stay.has(id)) container.insertBefore(entry.el, anchor);
      anchor = entry.el;
    }
    shown = kept;
    order = ids;
    first = false;
    if (field && !field.isConnected) return;
    if (focused && doc && doc.activeElement !== focused) {
      /** @type {HTMLElement} */ (focused).focus();
      if (field && selection && typeof field.setSelectionRange === "function") {
        field.setSelectionRange(selection[0], selection[1]);
      }
    }
  };
  return rows.subscribe(update);
}
