// @ts-check
/**
 * The demo board, live: hydrates from the server's HTML and embedded state, then keeps
 * both in sync over /sync.
 *
 * Theory of operation
 * - The server rendered every card from the snapshot it embedded. `connect()` builds
 *   the replica from that snapshot without a request; this module then reconciles the
 *   existing DOM with the replica's rows, changing only what differs, so the server's
 *   nodes are kept (no flash). While the client is `pristine` (nothing changed since
 *   the snapshot) there is nothing to reconcile, and the first render is skipped.
 * - Every edit is a call on the client (`update`, `increment`, `add`, `remove`,
 *   `insert`): it shows at once (optimistic) and is sent, or queued while offline.
 * - Cards added later are cloned from `<template id="card-template">`, which the server
 *   renders from the same macro as every card, so there is one markup.
 * - Untrusted text only ever goes through `textContent` or attribute setters.
 */
import { connect } from "/sync/client.js";
import { merge3 } from "/sync/textmerge.js";

/** @typedef {{id: string, list_id: string, board_id: string, position: number,
 *   title: string, description: string, votes: number, labels: string[] | Set<string>,
 *   status: string}} CardRow */
/** @typedef {{id: string, name: string, position: number}} ListRow */

const STATUS_TEXT = { connecting: "Connecting…", live: "Live", offline: "Offline" };

/** @param {string} id @returns {HTMLElement} */
function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing from the page`);
  return el;
}

/** @template {Element} T @param {ParentNode} root @param {string} selector @returns {T} */
function $(root, selector) {
  const el = root.querySelector(selector);
  if (!el) throw new Error(`${selector} is missing`);
  return /** @type {T} */ (el);
}

/** Set text only when it differs: unchanged nodes are not touched.
 * @param {Element} el @param {unknown} value */
function setText(el, value) {
  const text = value == null ? "" : String(value);
  if (el.textContent !== text) el.textContent = text;
}

/** @param {HTMLElement} el @param {string} key @param {string} value */
function setData(el, key, value) {
  if (el.dataset[key] !== value) el.dataset[key] = value;
}

/** The colour of a label: the same hash as `label_tone` in syncline/demo/app.py.
 * @param {string} label */
export function labelTone(label) {
  let h = 0;
  for (let i = 0; i < label.length; i++) h = (h * 31 + label.charCodeAt(i)) % 1_000_003;
  return h % 8;
}

/** Labels sorted by UTF-16 code units, as the server sorts them.
 * @param {Iterable<string> | null | undefined} labels */
function sortedLabels(labels) {
  return Array.from(labels ?? [], String).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** A record id no other page will make. */
function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(10));
  return "c-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Cards in display order: position, then id (the server's tie-break).
 * @param {CardRow} a @param {CardRow} b */
function byPosition(a, b) {
  return (a.position ?? 0) - (b.position ?? 0) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

// --- rendering ---------------------------------------------------------------------------

const boardEl = byId("board");
const boardId = boardEl.dataset.boardId ?? "";
const cardTemplate = /** @type {HTMLTemplateElement} */ (byId("card-template"));
const labelTemplate = /** @type {HTMLTemplateElement} */ (byId("label-template"));
const editorTemplate = /** @type {HTMLTemplateElement} */ (byId("editor-template"));

/** The latest rows, by id, for the editor and the conflict dialog. @type {Map<string, CardRow>} */
const cards = new Map();

/** @param {string} id @returns {HTMLElement | null} */
function cardElement(id) {
  for (const el of boardEl.querySelectorAll("[data-sl-id]")) {
    if (el instanceof HTMLElement && el.dataset.slId === `cards:${id}`) return el;
  }
  return null;
}

/**
 * The elements under `root` whose `data-sl-id` is `${collection}:…`, by that id, in
 * document order. One pass over the DOM: looking each record up with its own scan would
 * make a render quadratic in the number of records.
 * @param {ParentNode} root @param {string} collection @returns {Map<string, HTMLElement[]>}
 */
function elementsBySlId(root, collection) {
  /** @type {Map<string, HTMLElement[]>} */
  const index = new Map();
  for (const el of root.querySelectorAll(`[data-sl-id^="${CSS.escape(collection)}:"]`)) {
    if (!(el instanceof HTMLElement)) continue;
    const key = el.dataset.slId ?? "";
    const found = index.get(key);
    if (found) found.push(el);
    else index.set(key, [el]);
  }
  return index;
}

/** @param {Element} el */
function cardIdOf(el) {
  const card = el.closest("[data-sl-id^='cards:']");
  return card instanceof HTMLElement ? (card.dataset.slId ?? "").slice("cards:".length) : null;
}

/** Make a card element for a record that the server did not render.
 * @param {string} id */
function newCardElement(id) {
  const li = /** @type {HTMLElement} */ (
    /** @type {Element} */ (cardTemplate.content.firstElementChild).cloneNode(true)
  );
  li.dataset.slId = `cards:${id}`;
  const titleId = `card-title-${id}`;
  $(li, ".card-title").id = titleId;
  $(li, "article").setAttribute("aria-labelledby", titleId);
  for (const button of li.querySelectorAll("[aria-describedby]")) {
    button.setAttribute("aria-describedby", titleId);
  }
  li.classList.add("is-new");
  return li;
}

/** Reconcile a card's label chips with its labels, keeping the chips that stay.
 * @param {HTMLElement} ul @param {string[]} labels */
function renderLabels(ul, labels) {
  /** @type {Map<string, Element>} */
  const existing = new Map();
  for (const chip of Array.from(ul.children)) {
    const text = chip.querySelector(".label-text")?.textContent ?? "";
    if (!labels.includes(text) || existing.has(text)) chip.remove();
    else existing.set(text, chip);
  }
  let before = ul.firstElementChild;
  for (const label of labels) {
    let chip = existing.get(label);
    if (!chip) {
      chip = /** @type {HTMLElement} */ (
        /** @type {Element} */ (labelTemplate.content.firstElementChild).cloneNode(true)
      );
      setText($(chip, ".label-text"), label);
      $(chip, ".label-remove").setAttribute("aria-label", `Remove label ${label}`);
      /** @type {HTMLElement} */ (chip).dataset.tone = String(labelTone(label));
    }
    if (chip !== before) ul.insertBefore(chip, before);
    before = chip.nextElementSibling;
  }
}

/** Show one record in its element; only what changed is written.
 * @param {HTMLElement} li @param {CardRow} row */
function renderCard(li, row) {
  setText($(li, "[data-sl-field='title']"), row.title);
  setText($(li, "[data-sl-field='description']"), row.description);
  setText($(li, "[data-sl-field='votes']"), row.votes ?? 0);
  const status = /** @type {HTMLElement} */ ($(li, "[data-sl-field='status']"));
  setText(status, row.status);
  setData(status, "value", row.status);
  setData(li, "status", row.status);
  renderLabels($(li, "[data-sl-field='labels']"), sortedLabels(row.labels));
  const select = li.querySelector("select[name='status']");
  if (select instanceof HTMLSelectElement && document.activeElement !== select) {
    select.value = row.status;
  }
}

/** Bring the lists' cards in line with the rows: create, update, move, remove.
 * @param {CardRow[]} rows */
function renderCards(rows) {
  cards.clear();
  for (const row of rows) cards.set(row.id, row);
  // Nothing changed since the server rendered these rows: its cards are already right,
  // and looking each one up would cost more than everything else hydration does.
  if (sync.pristine) return;
  /** @type {Map<string, CardRow[]>} */
  const byList = new Map();
  for (const row of rows) {
    const list = byList.get(row.list_id) ?? [];
    list.push(row);
    byList.set(row.list_id, list);
  }
  // The card elements now on the board (the first in document order for each id), looked
  // up once: each card's element is then found without scanning the board again.
  const elements = elementsBySlId(boardEl, "cards");
  for (const ol of boardEl.querySelectorAll("ol.cards")) {
    if (!(ol instanceof HTMLElement)) continue;
    const listRows = (byList.get(ol.dataset.listId ?? "") ?? []).sort(byPosition);
    let before = ol.firstElementChild;
    for (const row of listRows) {
      const li = elements.get(`cards:${row.id}`)?.[0] ?? newCardElement(row.id);
      renderCard(li, row);
      if (li !== before) ol.insertBefore(li, before);
      before = li.nextElementSibling;
    }
    while (before) {
      const gone = before;
      before = before.nextElementSibling;
      const id = cardIdOf(gone);
      if (id === null || !cards.has(id)) gone.remove();
    }
    const count = ol.closest(".list")?.querySelector(".list-count");
    if (count) {
      setText(count, listRows.length);
      count.setAttribute("aria-label", `${listRows.length} cards`);
    }
  }
}

/** A board's or a list's name (the client patches them too; this covers new ones).
 * @param {ListRow[]} rows @param {string} collection */
function renderNames(rows, collection) {
  if (sync.pristine) return; // as the server rendered them
  const elements = elementsBySlId(document, collection);
  for (const row of rows) {
    for (const el of elements.get(`${collection}:${row.id}`) ?? []) {
      const name = el.querySelector("[data-sl-field='name']");
      if (name) setText(name, row.name);
    }
  }
}

// --- toasts -----------------------------------------------------------------------------

const toasts = byId("toasts");

/** A short message that goes away by itself. @param {string} message */
function toast(message) {
  const el = document.createElement("div");
  el.className = "toast";
  el.textContent = message;
  toasts.append(el);
  setTimeout(() => el.remove(), 6000);
}

// --- going live -----------------------------------------------------------------------

/**
 * The client patches every bound field itself; this renderer handles the two fields
 * that are more than text. Labels become chips (reconciled, kept when unchanged), and
 * null tells the client this element was drawn here: it leaves it alone.
 * @param {{field: string, value: unknown, element: Element}} context
 * @returns {string | null | undefined}
 */
function render({ field, value, element }) {
  if (!(element instanceof HTMLElement) || !element.closest("[data-sl-id^='cards:']")) {
    return undefined;
  }
  if (field === "labels") {
    renderLabels(element, sortedLabels(/** @type {Iterable<string>} */ (value)));
    return null;
  }
  if (field === "status") setData(element, "value", String(value));
  return undefined;
}

// Each field's merge policy and default come with the embedded state.
const sync = await connect({ render });
// Presence: one room per board, guarded like the board itself (the server's default
// rule); the server says who each member is, this page only what it is editing.
const room = sync.join(`boards:${boardId}`, { editing: null });

const statusEl = byId("sync-status");
const statusLabel = byId("sync-label");
const pendingEl = byId("sync-pending");
sync.status.subscribe((/** @type {string} */ state) => {
  setData(statusEl, "state", state);
  setText(statusLabel, STATUS_TEXT[/** @type {keyof typeof STATUS_TEXT} */ (state)] ?? state);
});
sync.pending.subscribe((/** @type {number} */ n) => {
  setData(pendingEl, "count", String(n));
  setText(pendingEl, n === 0 ? "All changes saved" : `${n} change${n === 1 ? "" : "s"} pending`);
});

/** The client's rows are plain JSON records; these are the demo's.
 * @template T @param {Record<string, unknown>[]} rows @returns {T[]} */
const rowsOf = (rows) => /** @type {T[]} */ (/** @type {unknown} */ (rows));

sync
  .query({ c: "cards", where: { board_id: boardId } })
  .subscribe((rows) => {
    renderCards(rowsOf(rows));
    drawMarkers();
  });
sync
  .query({ c: "lists", where: { board_id: boardId } })
  .subscribe((rows) => renderNames(rowsOf(rows), "lists"));
sync
  .query({ c: "boards", where: { id: boardId } })
  .subscribe((rows) => renderNames(rowsOf(rows), "boards"));

sync.on("overwritten", (/** @type {{fields: string[]}} */ { fields }) => {
  const names = fields.length ? fields.join(" and ") : "card";
  toast(`Your edit to the ${names} replaced a change someone made at the same time.`);
});
// --- undo and redo: the toolbar's buttons, Ctrl+Z and Ctrl+Shift+Z ------------------------

const undoButton = /** @type {HTMLButtonElement} */ (byId("undo-button"));
const redoButton = /** @type {HTMLButtonElement} */ (byId("redo-button"));
sync.canUndo.subscribe((/** @type {boolean} */ can) => (undoButton.disabled = !can));
sync.canRedo.subscribe((/** @type {boolean} */ can) => (redoButton.disabled = !can));
undoButton.addEventListener("click", () => sync.undo());
redoButton.addEventListener("click", () => sync.redo());
document.addEventListener("keydown", (event) => {
  if (!(event.ctrlKey || event.metaKey) || event.key.toLowerCase() !== "z") return;
  // Inside a text box the browser's own undo edits the text being typed.
  const target = /** @type {HTMLElement | null} */ (event.target);
  if (target && target.closest("input, textarea, select, [contenteditable]")) return;
  event.preventDefault();
  if (event.shiftKey) sync.redo();
  else sync.undo();
});
sync.on("undo-partial", (/** @type {{fields: string[]}} */ { fields }) => {
  const names = fields.length ? fields.join(" and ") : "card";
  toast(`Undo left the ${names} alone: someone else changed it since.`);
});
sync.on("rejected", (/** @type {{error?: {message?: string, code?: string}}} */ { error }) => {
  toast(`A change was refused: ${error?.message ?? error?.code ?? "unknown reason"}`);
});
sync.on("dropped", () => toast("A change was dropped: the card had been deleted."));
sync.on("reload", () => toast("The board was updated on the server: reload the page to go on."));

// --- card actions -------------------------------------------------------------------------

boardEl.addEventListener("click", (event) => {
  const target = event.target instanceof Element ? event.target.closest("[data-action]") : null;
  if (!(target instanceof HTMLElement)) return;
  const id = cardIdOf(target);
  if (id === null) return;
  const action = target.dataset.action;
  if (action === "vote") {
    sync.increment("cards", id, "votes", 1);
  } else if (action === "edit") {
    openEditor(id);
  } else if (action === "remove-label") {
    const chip = target.closest(".label");
    const label = chip?.querySelector(".label-text")?.textContent ?? "";
    const next = chip?.nextElementSibling?.querySelector("button") ?? byEditorInput(id, "label");
    sync.remove("cards", id, "labels", label);
    if (next instanceof HTMLElement) next.focus();
  }
});

/** @param {string} id @param {string} name */
function byEditorInput(id, name) {
  return cardElement(id)?.querySelector(`.card-editor [name='${name}']`) ?? null;
}

for (const form of boardEl.querySelectorAll("form.add-card")) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!(form instanceof HTMLFormElement)) return;
    const input = /** @type {HTMLInputElement} */ (form.elements.namedItem("title"));
    const title = input.value.trim();
    if (!title) return;
    const listId = form.dataset.listId ?? "";
    let position = 0;
    for (const row of cards.values()) {
      if (row.list_id === listId) position = Math.max(position, row.position ?? 0);
    }
    sync.insert("cards", newId(), {
      board_id: boardId,
      list_id: listId,
      position: position + 1,
      title,
    });
    input.value = "";
  });
}

// --- presence: who is on the board, and who edits which card ----------------------------

/** @typedef {{key: string, user: {name: string, hue: number}, state: {editing?: string | null}}} Member */

const presenceEl = byId("presence");

/** @param {Member[]} members */
function drawAvatars(members) {
  presenceEl.replaceChildren(
    ...members.map((m) => {
      const li = document.createElement("li");
      li.className = "avatar";
      li.dataset.key = m.key;
      if (m.key === room.me) li.dataset.me = "";
      li.style.setProperty("--hue", String(Number(m.user?.hue) || 0));
      const name = String(m.user?.name ?? "Someone");
      li.title = m.key === room.me ? `${name} (you)` : name;
      li.setAttribute("aria-label", li.title);
      li.textContent = name.replace(/^Visitor /, "").slice(0, 3);
      return li;
    }),
  );
}

/** On each card someone else is editing, who. */
function drawMarkers() {
  for (const el of boardEl.querySelectorAll(".editing-by")) el.remove();
  for (const m of /** @type {Member[]} */ (room.members.value)) {
    const id = m.state?.editing;
    if (m.key === room.me || typeof id !== "string") continue;
    const body = cardElement(id)?.querySelector(".card-body");
    if (!body) continue;
    const marker = document.createElement("p");
    marker.className = "editing-by";
    marker.style.setProperty("--hue", String(Number(m.user?.hue) || 0));
    marker.textContent = `✎ ${String(m.user?.name ?? "Someone")} is editing`;
    body.append(marker);
  }
}

room.members.subscribe((/** @type {Member[]} */ members) => {
  drawAvatars(members);
  drawMarkers();
});

// --- the editor (one open card at a time) -----------------------------------------------

/** The open editor, and the card's text as it was when the editor opened.
 * @type {{id: string, form: HTMLFormElement, title: string, description: string} | null} */
let open = null;

/** @param {string} id */
function openEditor(id) {
  if (open?.id === id) return;
  closeEditor(false);
  const li = cardElement(id);
  const row = cards.get(id);
  if (!li || !row) return;
  const form = /** @type {HTMLFormElement} */ (
    /** @type {Element} */ (editorTemplate.content.firstElementChild).cloneNode(true)
  );
  const field = (/** @type {string} */ name) =>
    /** @type {HTMLInputElement} */ (form.elements.namedItem(name));
  field("title").value = row.title;
  field("description").value = row.description;
  field("status").value = row.status;
  $(li, ".card-view").after(form);
  li.classList.add("is-open");
  $(li, "[data-action='edit']").setAttribute("aria-expanded", "true");
  open = { id, form, title: row.title, description: row.description };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    save();
  });
  field("status").addEventListener("change", () => {
    sync.update("cards", id, { status: field("status").value });
  });
  const addLabel = () => {
    const label = field("label").value.trim();
    if (label) sync.add("cards", id, "labels", label);
    field("label").value = "";
    field("label").focus();
  };
  $(form, "[data-action='add-label']").addEventListener("click", addLabel);
  field("label").addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      addLabel();
    }
  });
  $(form, "[data-action='cancel']").addEventListener("click", () => closeEditor(true));
  form.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      closeEditor(true);
    } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      save();
    }
  });
  field("title").focus();
  field("title").select();
  room.update({ editing: id });
}

/**
 * Send what the user changed in the editor's text fields, and close it.
 *
 * Only fields the user edited are sent, so a change someone else made meanwhile is not
 * reverted. The description is a text field: if it moved on while the editor was open,
 * the user's edit is merged into it here first (base: the text the editor opened with),
 * because the client takes the text on screen as the edit's base.
 */
function save() {
  if (!open) return;
  const { id, form } = open;
  const row = cards.get(id);
  const title = /** @type {HTMLInputElement} */ (form.elements.namedItem("title")).value;
  const description = /** @type {HTMLTextAreaElement} */ (form.elements.namedItem("description"))
    .value;
  /** @type {Record<string, string>} */
  const changed = {};
  if (row && title.trim() && title !== open.title && title !== row.title) changed.title = title;
  if (row && description !== open.description) {
    const merged =
      row.description === open.description
        ? description
        : merge3(open.description, description, row.description);
    if (merged !== row.description) changed.description = merged;
  }
  if (Object.keys(changed).length) sync.update("cards", id, changed);
  closeEditor(true);
}

/** @param {boolean} restoreFocus */
function closeEditor(restoreFocus) {
  if (!open) return;
  const li = cardElement(open.id);
  open.form.remove();
  open = null;
  room.update({ editing: null });
  if (!li) return;
  li.classList.remove("is-open");
  const edit = /** @type {HTMLElement} */ ($(li, "[data-action='edit']"));
  edit.setAttribute("aria-expanded", "false");
  if (restoreFocus) edit.focus();
}

// --- manual conflicts ---------------------------------------------------------------------

const dialog = /** @type {HTMLDialogElement} */ (byId("conflict-dialog"));
const badge = byId("conflict-badge");
/** Drafts waiting for the user, oldest first. @type {any[]} */
const drafts = [];

/** @param {HTMLElement} el @param {unknown} value */
function showStatus(el, value) {
  setText(el, value ?? "—");
  setData(el, "value", value == null ? "" : String(value));
}

function showNextConflict() {
  badge.hidden = drafts.length === 0 || dialog.open;
  if (dialog.open || drafts.length === 0) return;
  const draft = drafts[0];
  const conflict = draft.conflicts.find((/** @type {any} */ c) => c.field === "status");
  const card = conflict ? cards.get(conflict.id) : undefined;
  setText(byId("conflict-card"), card?.title ?? "this card");
  showStatus(byId("conflict-base"), conflict?.base);
  showStatus(byId("conflict-mine"), conflict?.mine);
  showStatus(byId("conflict-theirs"), conflict?.theirs);
  dialog.returnValue = "";
  dialog.showModal();
  badge.hidden = true;
}

sync.on("conflict", (/** @type {any} */ draft) => {
  drafts.push(draft);
  showNextConflict();
});

dialog.addEventListener("close", () => {
  const choice = dialog.returnValue;
  const draft = drafts[0];
  if (draft && (choice === "mine" || choice === "theirs")) {
    drafts.shift();
    const conflict = draft.conflicts.find((/** @type {any} */ c) => c.field === "status");
    sync.resolve(draft, { status: conflict ? conflict[choice] : undefined });
  }
  // Dismissed (Escape): the draft waits; the badge in the top bar reopens it.
  showNextConflict();
});
badge.addEventListener("click", showNextConflict);
