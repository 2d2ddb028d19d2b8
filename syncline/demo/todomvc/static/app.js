// TodoMVC on syncline: the list is a live query of the local replica, which the server
// rendered first; every change is optimistic and synced to the server and other tabs.
// @ts-check

import { connect, newId } from "/sync/client.js";

const ENTER = "Enter";
const ESCAPE = "Escape";

// The page's embedded state, read once: connect() hydrates from it, and it names this
// visitor's list, the page's query {where: {session: {eq: <id>}}}.
const state = JSON.parse(
  /** @type {HTMLElement} */ (document.getElementById("syncline-state")).textContent ?? "{}",
);
const session = /** @type {{where: {session: {eq: string}}}} */ (state.queries.todos).where.session.eq;
const sync = await connect({ state, bind: false }); // this page renders its list itself

const $ = (/** @type {string} */ selector) => /** @type {HTMLElement} */ (document.querySelector(selector));
const newTodo = /** @type {HTMLInputElement} */ ($(".new-todo"));
const main = $(".main");
const toggleAll = /** @type {HTMLInputElement} */ ($(".toggle-all"));
const list = $(".todo-list");
const footer = $(".footer");
const count = $(".todo-count");
const clearCompleted = $(".clear-completed");

/** @typedef {{id: string, title: string, completed: boolean, order: number}} Todo */
/** @type {Todo[]} */
let todos = [];

// Presence: every tab of this visitor joins the list's room; its members are the tabs.
const tabsOpen = $(".tabs-open");
sync.join(`list:${session}`, {}).members.subscribe((/** @type {unknown[]} */ members) => {
  const n = members.length;
  tabsOpen.hidden = n === 0;
  const strong = document.createElement("strong");
  strong.textContent = String(n);
  tabsOpen.replaceChildren("Open in ", strong, ` tab${n === 1 ? "" : "s"}`);
});

const todosQuery = sync.query({ c: "todos", where: { session }, order: [["order", "asc"]] });

/** The filter named by the URL's hash: all, active or completed. */
function filter() {
  const route = location.hash.replace(/^#\/?/, "");
  return route === "active" || route === "completed" ? route : "all";
}

/** @param {Todo} todo @param {string} f  the filter */
function visible(todo, f) {
  return f === "all" || (f === "active" ? !todo.completed : todo.completed);
}

/**
 * The title each item element shows, by todo id, as last written to it. Taken from the
 * server-rendered list by the first render that has work to do, so that it writes only
 * what differs; items a filter hides stay here, to be shown again.
 * @type {Map<string, {li: HTMLLIElement, title: string}>}
 */
const items = new Map();
let adopted = false;

/**
 * An item's parts, by position (createItem's and the server's markup): no selectors.
 * The .edit field may be missing: an item gets one when it is first edited.
 */
function parts(/** @type {HTMLLIElement} */ li) {
  const view = /** @type {HTMLElement} */ (li.firstElementChild);
  const toggle = /** @type {HTMLInputElement} */ (view.firstElementChild);
  return {
    toggle,
    label: /** @type {HTMLLabelElement} */ (toggle.nextElementSibling),
    edit: /** @type {HTMLInputElement | null} */ (view.nextElementSibling),
  };
}

let firstRender = true;

/** Reconcile the list with the replica's rows, keyed by id: only what differs is written. */
function render() {
  if (firstRender) {
    firstRender = false;
    // The server rendered every todo from the state the replica holds, unchanged since:
    // with no filter to apply, the page already shows `todos`.
    if (sync.pristine && filter() === "all") return;
  }
  if (!adopted) {
    adopted = true;
    for (const el of list.children) {
      const li = /** @type {HTMLLIElement} */ (el);
      const id = li.dataset.slId?.slice("todos:".length);
      if (id !== undefined) items.set(id, { li, title: parts(li).label.textContent ?? "" });
    }
  }
  const editing = list.querySelector("li.editing");
  const f = filter();
  let before = list.firstElementChild;
  for (const todo of todos) {
    if (!visible(todo, f)) continue;
    let item = items.get(todo.id);
    if (!item) {
      item = { li: createItem(todo.id), title: "" };
      items.set(todo.id, item);
    }
    const li = item.li;
    const { toggle, label, edit } = parts(li);
    if (li.classList.contains("completed") !== todo.completed) li.classList.toggle("completed", todo.completed);
    if (toggle.checked !== todo.completed) toggle.checked = todo.completed;
    if (item.title !== todo.title) {
      item.title = todo.title;
      label.textContent = todo.title;
      if (li !== editing && edit) edit.value = todo.title;
    }
    if (li !== before) list.insertBefore(li, before);
    before = li.nextElementSibling;
  }
  while (before) {
    const gone = before;
    before = before.nextElementSibling;
    gone.remove();
  }
  if (items.size > todos.length) {
    const ids = new Set(todos.map((t) => t.id));
    for (const id of items.keys()) if (!ids.has(id)) items.delete(id);
  }

  const remaining = todos.filter((t) => !t.completed).length;
  main.hidden = footer.hidden = todos.length === 0;
  toggleAll.checked = todos.length > 0 && remaining === 0;
  const left = ` ${remaining === 1 ? "item" : "items"} left`;
  if (count.textContent !== `${remaining}${left}`) {
    count.replaceChildren(
      Object.assign(document.createElement("strong"), { textContent: String(remaining) }),
      left,
    );
  }
  clearCompleted.hidden = remaining === todos.length;
  for (const a of document.querySelectorAll(".filters a")) {
    a.classList.toggle("selected", a.getAttribute("href") === `#/${f === "all" ? "" : f}`);
  }
}

/** @param {string} id */
function createItem(id) {
  const li = document.createElement("li");
  li.dataset.slId = `todos:${id}`;
  const view = Object.assign(document.createElement("div"), { className: "view" });
  const toggle = Object.assign(document.createElement("input"), { className: "toggle", type: "checkbox" });
  const destroy = Object.assign(document.createElement("button"), { className: "destroy" });
  view.append(toggle, document.createElement("label"), destroy);
  li.append(view); // its .edit field comes with the first edit: a page of thousands of
  // items lays out and loads faster without thousands of hidden inputs
  return li;
}

/** @param {Element} target */
function todoId(target) {
  return target.closest("li")?.dataset.slId?.slice("todos:".length) ?? "";
}

/** @param {HTMLInputElement} input  the .edit field of an item being edited */
function finishEditing(input) {
  const li = /** @type {HTMLLIElement} */ (input.closest("li"));
  if (!li.classList.contains("editing")) return;
  li.classList.remove("editing");
  const id = todoId(li);
  const title = input.value.trim();
  const todo = todos.find((t) => t.id === id);
  if (!todo) return;
  if (!title) sync.delete("todos", id);
  else if (title !== todo.title) sync.update("todos", id, { title });
  render();
}

newTodo.addEventListener("keydown", (event) => {
  if (event.key !== ENTER) return;
  const title = newTodo.value.trim();
  if (!title) return;
  const order = todos.length ? Math.max(...todos.map((t) => t.order)) + 1 : 1;
  sync.insert("todos", newId(), { session, title, completed: false, order });
  newTodo.value = "";
});

toggleAll.addEventListener("change", () => {
  const completed = toggleAll.checked;
  sync.batch((b) => {
    for (const todo of todos) if (todo.completed !== completed) b.update("todos", todo.id, { completed });
  });
});

clearCompleted.addEventListener("click", () => {
  sync.batch((b) => {
    for (const todo of todos) if (todo.completed) b.delete("todos", todo.id);
  });
});

list.addEventListener("change", (event) => {
  const target = /** @type {HTMLInputElement} */ (event.target);
  if (target.classList.contains("toggle")) sync.update("todos", todoId(target), { completed: target.checked });
});

list.addEventListener("click", (event) => {
  const target = /** @type {HTMLElement} */ (event.target);
  if (target.classList.contains("destroy")) sync.delete("todos", todoId(target));
});

list.addEventListener("dblclick", (event) => {
  const target = /** @type {HTMLElement} */ (event.target);
  if (target.tagName !== "LABEL") return;
  const li = /** @type {HTMLLIElement} */ (target.closest("li"));
  li.classList.add("editing");
  let input = /** @type {HTMLInputElement | null} */ (li.querySelector(".edit"));
  if (!input) input = li.appendChild(Object.assign(document.createElement("input"), { className: "edit" }));
  input.value = target.textContent ?? "";
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
});

list.addEventListener("keydown", (event) => {
  const input = /** @type {HTMLInputElement} */ (event.target);
  if (!input.classList.contains("edit")) return;
  if (event.key === ENTER) finishEditing(input);
  if (event.key === ESCAPE) {
    const li = /** @type {HTMLLIElement} */ (input.closest("li"));
    li.classList.remove("editing");
    input.value = todos.find((t) => t.id === todoId(li))?.title ?? "";
  }
});

list.addEventListener("focusout", (event) => {
  const input = /** @type {HTMLInputElement} */ (event.target);
  if (input.classList.contains("edit")) finishEditing(input);
});

window.addEventListener("hashchange", render);

todosQuery.subscribe((rows) => {
  todos = rows.map((r) => ({
    id: String(r.id),
    title: String(r.title),
    completed: Boolean(r.completed),
    order: Number(r.order),
  }));
  render();
});
// The connection's state ("connecting", "live", "offline") for tests and the hydration
// bench; TodoMVC's markup has no status element.
sync.status.subscribe((status) => {
  document.documentElement.dataset.syncState = status;
});
document.documentElement.dataset.synclineReady = "true";
