// An <input> or <textarea> kept current with one field of one record, both ways
// (docs/browser-client.md, Browser helpers): what the user types is sent as an update
// at each `input` event (or at `change`), and a change from elsewhere (the server,
// another tab, a text merge of someone's concurrent edit) replaces the value without
// moving the user's caret off the text it was in (caret.js maps the selection through
// the edit). While an IME composes, nothing is sent and nothing is written; the last
// change from elsewhere is applied when the composition ends. With send "change", text
// typed and not yet committed is not replaced either (it is sent at the change event).
// Typing made over a value that has changed since is merged with that change (merge3,
// as the server merges text) before it is sent, so neither edit is lost.

import { mapSelection } from "./caret.js";
import { report } from "./observable.js";
import { merge3 } from "./textmerge.js";

/** @typedef {import("./json.js").Dict} Dict */

/**
 * What bindInput needs of the client (a SyncClient has it all).
 * @typedef {object} FieldSource
 * @property {(collection: string, id: string) => Dict | null} get
 * @property {(collection: string, id: string, fields: Record<string, unknown>) => unknown} update
 * @property {(kind: "change", listener: (e: {keys: string[]}) => void) => () => void} on
 */

/**
 * @typedef {object} BindInputOptions
 * @property {"input" | "change"} [send]  when to send the value: every keystroke
 *   ("input", the default) or when the user commits it ("change")
 * @property {(value: unknown) => string} [format]  the field's value as the element's
 *   text (default: "" for null or a missing record, else String(value))
 * @property {(text: string) => unknown} [parse]  the element's text as the field's value
 *   (default: the text itself)
 */

/**
 * The element a bound input must be: a value, a selection, events.
 * @typedef {object} TextControl
 * @property {string} value
 * @property {number | null} selectionStart
 * @property {number | null} selectionEnd
 * @property {"forward" | "backward" | "none" | null} [selectionDirection]
 * @property {(start: number, end: number, direction?: "forward" | "backward" | "none") => void} setSelectionRange
 * @property {(type: string, listener: (event: any) => void) => void} addEventListener
 * @property {(type: string, listener: (event: any) => void) => void} removeEventListener
 * @property {{activeElement: unknown} | null} [ownerDocument]
 */

/** @param {unknown} value @returns {string} */
function defaultFormat(value) {
  return value === null || value === undefined ? "" : String(value);
}

/**
 * Bind an input or textarea to `collection`/`id`/`field`. Returns a function that unbinds it.
 * @param {FieldSource} sync  the client (connect())
 * @param {TextControl | HTMLInputElement | HTMLTextAreaElement} element
 * @param {string} collection
 * @param {string} id
 * @param {string} field
 * @param {BindInputOptions} [options]
 * @returns {() => void}
 */
export function bindInput(sync, element, collection, id, field, options = {}) {
  const el = /** @type {TextControl} */ (element);
  if (!el || typeof el.setSelectionRange !== "function" || typeof el.value !== "string") {
    throw new TypeError("bindInput binds an <input> or a <textarea>: an element with a value");
  }
  const format = options.format ?? defaultFormat;
  const parse = options.parse ?? ((/** @type {string} */ text) => text);
  const sendOn = options.send ?? "input";
  if (sendOn !== "input" && sendOn !== "change") {
    throw new TypeError(`bindInput's send is "input" or "change", not ${JSON.stringify(sendOn)}`);
  }
  const key = `${collection}:${id}`;
  let composing = false;
  /** The value last shown or sent: with send "change", a differing value is the user's
   * uncommitted typing, which a change from elsewhere must not wipe out. */
  let shown = "";

  /** The field's text as the user should now see it. @returns {string} */
  const current = () => {
    const row = sync.get(collection, id);
    return format(row === null ? null : row[field]);
  };

  const show = () => {
    if (composing) return;
    const next = current();
    const before = el.value;
    if (sendOn === "change" && before !== shown) return;
    shown = next;
    if (next === before) return;
    const focused = el.ownerDocument ? el.ownerDocument.activeElement === element : false;
    const start = el.selectionStart;
    const end = el.selectionEnd;
    el.value = next;
    // Only a focused element shows a caret; setting the selection of another would
    // not move focus, but there is nothing to keep.
    if (focused && start !== null && end !== null) {
      const [s, e] = mapSelection(before, next, start, end);
      el.setSelectionRange(s, e, el.selectionDirection ?? undefined);
    }
  };

  const send = () => {
    if (composing) return;
    const mine = el.value;
    if (mine === shown) return show();
    // Typed over what was shown; if the field moved meanwhile (during a composition,
    // or before a "change"), merge the two as the server merges text, so neither is lost.
    const now = current();
    const text = now === shown ? mine : merge3(shown, mine, now);
    shown = mine;
    if (text !== now) {
      try {
        sync.update(collection, id, { [field]: parse(text) });
      } catch (exc) {
        // The record is gone, or the value is refused: show what the replica holds.
        report(exc);
      }
    }
    show();
  };

  const onStart = () => {
    composing = true;
  };
  const onEnd = () => {
    composing = false;
    if (sendOn === "input") send();
    show();
  };

  el.value = shown = current();
  const off = sync.on("change", ({ keys }) => {
    if (keys.includes(key)) show();
  });
  el.addEventListener(sendOn, send);
  el.addEventListener("compositionstart", onStart);
  el.addEventListener("compositionend", onEnd);
  return () => {
    off();
    el.removeEventListener(sendOn, send);
    el.removeEventListener("compositionstart", onStart);
    el.removeEventListener("compositionend", onEnd);
  };
}
