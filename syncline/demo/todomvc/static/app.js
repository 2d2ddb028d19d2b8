// TodoMVC on syncline: the list is a live query of the local replica, which the server
// rendered first; every change is optimistic and synced to the server and other tabs.
// @ts-check

import { connect, newId } from "/sync/client.js";

const ENTER = "Enter";
const ESCAPE = "Escape";

const sync = await connect({ bind: false }); // this page renders its list itself
// This visitor's list is the page's query {where: {session: {eq: <id>}}}.
const session = /** @type {{where: {session: {eq: string}}}} */ (
  JSON.parse(/** @type {HTMLElement} */ (document.getElementById("syncline-state")).textContent ?? "{}")
    .queries.todos
).where.session.eq;

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

const todosQuery = sync.query({ c: "todos", where: { session }, order: [["order", "asc"]] });

/** The filter named by the URL's hash: all, active or completed. */
function filter() {
  const route = location.hash.replace(/^#\/?/, "");
  return route === "active" || route === "completed" ? route : "all";
}

/** @param {Todo} todo */
function visible(todo) {
  const f = filter();
  return f === "all" || (f === "active" ? !todo.completed : todo.completed);
}

/** Reconcile the server-rendered list with the replica's rows, keyed by id. */
function render() {
  const editing = list.querySelector("li.editing");
  const existing = new Map(
    [...list.querySelectorAll("li")].map((li) => [li.dataset.slId?.slice("todos:".length) ?? "", li]),
  );
  /** @type {HTMLLIElement[]} */
  const wanted = [];
  for (const todo of todos) {
    if (!visible(todo)) continue;
    let li = /** @type {HTMLLIElement | undefined} */ (existing.get(todo.id));
    if (!li) li = createItem(todo.id);
    existing.delete(todo.id);
    li.classList.toggle("completed", todo.completed);
    const toggle = /** @type {HTMLInputElement} */ (li.querySelector(".toggle"));
    toggle.checked = todo.completed;
    const label = /** @type {HTMLLabelElement} */ (li.querySelector("label"));
    if (label.textContent !== todo.title) label.textContent = todo.title;
    if (li !== editing) /** @type {HTMLInputElement} */ (li.querySelector(".edit")).value = todo.title;
    wanted.push(li);
  }
  for (const li of existing.values()) li.remove();
  wanted.forEach((li, i) => {
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] ?? null);
  });

  const remaining = todos.filter((t) => !t.completed).length;
  main.hidden = footer.hidden = todos.length === 0;
  toggleAll.checked = todos.length > 0 && remaining === 0;
  count.replaceChildren(
    Object.assign(document.createElement("strong"), { textContent: String(remaining) }),
    ` ${remaining === 1 ? "item" : "items"} left`,
  );
  clearCompleted.hidden = remaining === todos.length;
  for (const a of document.querySelectorAll(".filters a")) {
    a.classList.toggle("selected", a.getAttribute("href") === `#/${filter() === "all" ? "" : filter()}`);
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
  li.append(view, Object.assign(document.createElement("input"), { className: "edit" }));
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
  const input = /** @type {HTMLInputElement} */ (li.querySelector(".edit"));
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
document.documentElement.dataset.synclineReady = "true";
