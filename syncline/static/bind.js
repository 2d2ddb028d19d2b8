// Patching the server's HTML in place (DESIGN.md, SSR embedding): an element carrying
// data-sl-id="<collection>:<id>" holds elements carrying data-sl-field="<field>"; when
// the replica's view of that record changes, each bound field's textContent is set.
// Nothing is re-rendered, no HTML is parsed (textContent only, never innerHTML), and a
// node whose text is already right is not touched. A record that left the view is
// hidden (and shown again if it comes back); a field the record does not hold is left
// as the server rendered it.

/** @typedef {import("./json.js").Dict} Dict */

/**
 * A custom rendering of a field's value: a string is the element's text; undefined: the
 * default (formatValue); null: "I drew this element myself", so it is left untouched
 * (for fields that are more than text, such as a set drawn as chips).
 * @typedef {(context: {collection: string, id: string, field: string, value: unknown, row: Dict, element: Element}) => string | null | undefined} Renderer
 */

/** Marks an element this module hid because its record left the view. */
const HIDDEN_MARK = "data-sl-hidden";

/**
 * The default text of a value: "" for null, sets and lists joined with ", ".
 * @param {unknown} value
 * @returns {string}
 */
export function formatValue(value) {
  if (value === null || value === undefined) return "";
  if (Array.isArray(value)) return value.map(formatValue).join(", ");
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/**
 * The bound record elements under `root`, by their data-sl-id.
 * @param {ParentNode} root
 * @returns {Map<string, Element[]>}
 */
export function boundRecords(root) {
  /** @type {Map<string, Element[]>} */
  const index = new Map();
  for (const el of root.querySelectorAll("[data-sl-id]")) {
    const key = el.getAttribute("data-sl-id");
    if (key === null) continue;
    const list = index.get(key);
    if (list) list.push(el);
    else index.set(key, [el]);
  }
  return index;
}

/**
 * Patch the elements bound to these records.
 * @param {ParentNode} root
 * @param {Iterable<string>} keys  "collection:id"
 * @param {(collection: string, id: string) => Dict | null} get  the record as the user sees it
 * @param {Renderer} [render]
 */
export function patchKeys(root, keys, get, render) {
  const wanted = [...new Set(keys)];
  if (!wanted.length) return;
  const index = boundRecords(root);
  for (const key of wanted) {
    const elements = index.get(key);
    if (!elements) continue;
    const i = key.indexOf(":");
    const collection = key.slice(0, i);
    const id = key.slice(i + 1);
    const row = get(collection, id);
    for (const el of elements) patchElement(el, collection, id, row, render);
  }
}

/**
 * @param {Element} el  the element bound to the record
 * @param {string} collection
 * @param {string} id
 * @param {Dict | null} row
 * @param {Renderer} [render]
 */
export function patchElement(el, collection, id, row, render) {
  const hideable = /** @type {Partial<HTMLElement>} */ (el);
  if (row === null) {
    if ("hidden" in hideable && !hideable.hidden) {
      hideable.hidden = true;
      el.setAttribute(HIDDEN_MARK, "");
    }
    return;
  }
  if (el.hasAttribute(HIDDEN_MARK)) {
    el.removeAttribute(HIDDEN_MARK);
    hideable.hidden = false;
  }
  for (const fieldEl of el.querySelectorAll("[data-sl-field]")) {
    // A field belongs to the nearest record around it (records may nest).
    if (fieldEl.closest("[data-sl-id]") !== el) continue;
    const field = fieldEl.getAttribute("data-sl-field");
    if (field === null) continue;
    const known = Object.prototype.hasOwnProperty.call(row, field);
    const value = known ? row[field] : undefined;
    const custom = render
      ? render({ collection, id, field, value, row, element: fieldEl })
      : undefined;
    // Drawn by the renderer itself: nothing left to do here.
    if (custom === null) continue;
    // A field the record does not hold (the server rendered something else there) is
    // left as it is.
    if (custom === undefined && !known) continue;
    const text = custom === undefined ? formatValue(value) : String(custom);
    if (fieldEl.textContent !== text) fieldEl.textContent = text;
  }
}
