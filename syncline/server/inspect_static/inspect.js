// The inspector page: polls the summary once a second and renders it as tables.
// No framework, no inline script (the page's CSP allows scripts from 'self' only);
// every value goes in with textContent, never as HTML.

const SUMMARY = new URL("summary", import.meta.url);
const PERIOD_MS = 1000;

/** @param {string} id */
function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the inspector page has no #${id}`);
  return el;
}

/** @param {number | null | undefined} t */
function clock(t) {
  return t ? new Date(t * 1000).toISOString().slice(11, 23) : "";
}

/**
 * @param {string} tableId
 * @param {Array<Array<unknown>>} rows
 * @param {Array<Record<string, string>>} [attrs]
 */
function fill(tableId, rows, attrs = []) {
  const body = byId(tableId).querySelector("tbody");
  if (!body) return;
  const out = rows.map((cells, i) => {
    const tr = document.createElement("tr");
    for (const [k, v] of Object.entries(attrs[i] || {})) tr.setAttribute(k, v);
    for (const cell of cells) {
      const td = document.createElement("td");
      td.textContent = cell === null || cell === undefined ? "" : String(cell);
      tr.append(td);
    }
    return tr;
  });
  body.replaceChildren(...out);
}

/**
 * @param {number} total
 * @param {number} shown
 */
function counted(total, shown) {
  return shown >= total ? `(${total})` : `(${total}, ${shown} shown)`;
}

/** @param {any} s */
function render(s) {
  const log = s.log || {};
  byId("log-head").textContent = log.error
    ? `log unreadable: ${log.error}`
    : `head ${log.head} · floor ${log.floor} · epoch ${log.epoch}`;
  const r = s.reader || {};
  byId("reader").textContent =
    `reader at ${r.position} · ${r.joined} joined · ${r.steps} steps · ` +
    `${Number(r.step_seconds || 0).toFixed(3)} s in steps · backplane ` +
    `${s.backplane.kind} ${s.backplane.state || ""}`;
  byId("mutations").textContent = Object.entries(s.mutations || {})
    .map(([k, n]) => `${k} ${n}`)
    .join(" · ") || "no mutations yet";

  const conns = s.connections;
  byId("conn-count").textContent = counted(conns.total, conns.shown.length);
  fill(
    "connections",
    conns.shown.map((/** @type {any} */ c) => [
      c.client_id || "(no hello yet)",
      c.principal,
      Object.entries(c.queries).map(([q, k]) => `${q}: ${k}`).join("\n") +
        (c.subscriptions > Object.keys(c.queries).length ? `\n… ${c.subscriptions} in all` : ""),
      c.cursor,
      c.outbox,
    ]),
    conns.shown.map((/** @type {any} */ c) => ({ "data-client-id": c.client_id || "" })),
  );

  byId("query-count").textContent = counted(s.queries.total, s.queries.shown.length);
  fill("queries", s.queries.shown.map((/** @type {any} */ q) => [q.key, q.connections]));

  fill(
    "events",
    s.events.map((/** @type {any} */ e) => [
      clock(e.time),
      e.kind,
      e.client_id,
      e.mid,
      e.kind === "reject" ? `${e.code}${e.permanent ? "" : " (temporary)"}` : "",
      e.kind === "reject"
        ? [e.collection, e.id, e.field].filter(Boolean).join(" ")
        : e.conflicts
            .map((/** @type {any} */ c) =>
              `${c.collection} ${c.id} ${c.field ?? "(deleted)"}` +
              (c.values ? ` mine=${c.values.mine} theirs=${c.values.theirs}` : ""))
            .join("\n"),
      e.message || "",
    ]),
    s.events.map((/** @type {any} */ e) => ({ "data-kind": e.kind, "data-client-id": e.client_id || "" })),
  );

  fill(
    "changes",
    (log.changes || []).map((/** @type {any} */ c) => [
      c.seq,
      clock(c.time),
      c.kind,
      c.collection,
      c.id,
      c.client_id,
      c.values
        ? Object.entries(c.values).map(([f, v]) => `${f}=${v}`).join(" ")
        : c.fields.join(" "),
    ]),
  );
}

async function poll() {
  const status = byId("status");
  try {
    const response = await fetch(SUMMARY, { cache: "no-store", credentials: "same-origin" });
    if (!response.ok) throw new Error(`the summary answered ${response.status}`);
    render(await response.json());
    status.dataset.state = "live";
    status.textContent = `updated ${clock(Date.now() / 1000)}`;
  } catch (err) {
    status.dataset.state = "error";
    status.textContent = String(err instanceof Error ? err.message : err);
  }
  setTimeout(poll, PERIOD_MS);
}

poll();
