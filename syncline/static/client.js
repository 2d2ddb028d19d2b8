// The browser client (docs/browser-client.md), served at /sync/client.js:
//
//   import { connect } from "/sync/client.js";
//   const sync = await connect();   // hydrates from #syncline-state, then goes live
//
// connect() reads the page's embedded state with JSON.parse(element.textContent), opens
// the socket, builds the replica from the state without any request while the handshake
// goes on, and resolves; this page's Web Lock and the pending-queue store (IndexedDB)
// open in the background (a write made before they are ready is saved, then sent, once
// they are).
//
// Every local write applies to the view at once, is queued, saved to IndexedDB, and
// sent once the save is durable; other tabs see it at once over a BroadcastChannel. On
// reconnect the protocol resends every unanswered mutation and resubscribes since its
// cursor. Elements bound with data-sl-id / data-sl-field are patched in place.
//
// This module is the facade: SyncClient holds one of each part and does the
// bookkeeping after anything moved (_after). Each part has one job:
//
//   replica.js    server state at a cursor plus pending mutations (the one owner of
//                 the client's state: records, query members, queue)
//   protocol.js   the wire protocol, sans I/O (what to send, what a frame means)
//   session.js    the connection loop: a socket at a time, jittered backoff, online /
//                 offline (its state diagram is there); connection.js drives one socket
//   storage.js    the pending queue kept durable (QueueKeeper) in IndexedDB
//   tabs.js       other tabs: shared edits, and when to adopt dead pages' queues
//                 (adopt.js sends them; locks.js holds the page's Web Lock)
//   views.js      bound elements patched and live queries refreshed (bind.js patches)
//   listeners.js  on(kind, listener); reload.js the default answer to "reload"
//   limits.js     what the server would refuse without using an id up
//   ids.js        client ids and record ids

import { formatCursor } from "./cursor.js";
import { newClientId } from "./ids.js";
import { isObject } from "./json.js";
import { DEFAULT_LIMITS, limitProblem } from "./limits.js";
import { Listeners } from "./listeners.js";
import { claimPage } from "./locks.js";
import { Value, readonly, report } from "./observable.js";
import { Room } from "./presence.js";
import { ClientProtocol, clientEvent } from "./protocol.js";
import { parseQuery } from "./query.js";
import { InvalidMutation, Replica } from "./replica.js";
import { makeSchema } from "./schema.js";
import { Session } from "./session.js";
import { reloadPage } from "./reload.js";
import {
  QueueKeeper,
  memoryStore,
  openStoreWithin,
  previousHistory,
  tabIdentity,
} from "./storage.js";
import { PageTabs } from "./tabs.js";
import { Views } from "./views.js";
// Not used here: imported so that the browser asks for ops.js (and so textmerge.js) in
// the first wave of modules, not a round trip later through limits.js and views.js; it
// keeps the module fetch waterfall at three levels, as it was before the split.
import "./ops.js";

export { newClientId, newId } from "./ids.js";
export { InvalidMutation } from "./replica.js";
export { QueryError } from "./query.js";
// Browser helpers: a keyed list from a <template>, an input bound both ways.
export { ListError, renderList } from "./list.js";
export { bindInput } from "./input.js";
export { mapSelection } from "./caret.js";
export { Room } from "./presence.js";

/** @typedef {import("./json.js").Dict} Dict */
/** @typedef {import("./ops.js").Mutation} Mutation */
/** @typedef {import("./ops.js").SetValue} SetValue */
/** @typedef {import("./replica.js").Draft} Draft */
/** @typedef {import("./replica.js").MutationBuilder} MutationBuilder */
/** @typedef {import("./protocol.js").ClientEvent} ClientEvent */
/** @typedef {import("./schema.js").SchemaSpec} SchemaSpec */
/** @typedef {import("./storage.js").QueueStore} QueueStore */
/** @typedef {import("./bind.js").Renderer} Renderer */
/** @typedef {import("./connection.js").SocketLike} SocketLike */
/** @typedef {import("./limits.js").Limits} Limits */
/** @typedef {import("./session.js").Status} Status */
/**
 * @template T
 * @typedef {import("./observable.js").Observable<T>} Observable
 */

/**
 * What `on(kind, listener)` listens to. "conflict" listeners get the Draft (answer it
 * with resolve); "change" listeners get {keys}; the others get the event
 * ({kind, mutationId, fields, error, reason, keys, status, frame}).
 * @typedef {"change" | "conflict" | "overwritten" | "merged" | "rejected" | "dropped" | "undo-partial" | "reset" | "reload" | "error" | "status" | "ack" | "*"} ListenKind
 */

/**
 * @typedef {object} ConnectOptions
 * @property {string} [url]  the WebSocket endpoint; default ws(s)://<this host>/sync
 * @property {unknown} [state]  the embedded state; default: parsed from #syncline-state
 * @property {string} [stateId]  the id of the embedded state's element ("syncline-state")
 * @property {string} [schemaHash]  the schema hash, for a page that embeds no state
 * @property {SchemaSpec} [schema]  field policies (text, counter, set, ...) so optimistic
 *   edits show as the server will merge them; without it every field is lww locally
 * @property {Dict} [auth]  credentials sent in hello.auth (never in a URL)
 * @property {Renderer} [render]  custom text for bound fields
 * @property {ParentNode | false} [bind]  where to patch bound elements (document); false: nowhere
 * @property {string} [clientId]  default: a new random id for this page load
 * @property {QueueStore | false} [storage]  default IndexedDB; false: memory only
 * @property {boolean} [tabs]  share edits with other tabs and adopt dead tabs' queues (true)
 * @property {[number, number]} [backoff]  first and longest reconnect wait, seconds
 * @property {number} [undoPause]  edits of one text (or lww string) field less than this
 *   many seconds apart are one undo entry (1)
 * @property {(url: string) => SocketLike} [socket]  how to open a WebSocket
 * @property {Partial<Limits>} [limits]
 * @property {LockManager | null} [locks]  default navigator.locks
 * @property {Document} [document]  the page (default: the global document)
 * @property {false | ((event: ClientEvent) => void)} [reload]  what a "reload" event does
 *   when no on("reload") listener handles it: by default the page reloads once the
 *   pending queue is saved (reload.js); false: nothing; a function: call it
 */

/**
 * The page's embedded state: JSON.parse of the element's text (never innerHTML, never
 * eval). Null when the page has none.
 * @param {string} [id]
 * @param {Document} [doc]
 * @returns {unknown}
 */
export function readEmbeddedState(id = "syncline-state", doc = globalThis.document) {
  const el = doc ? doc.getElementById(id) : null;
  if (!el) return null;
  return JSON.parse(el.textContent ?? "");
}

/** @returns {string} */
function defaultUrl() {
  const loc = globalThis.location;
  return `${loc.protocol === "https:" ? "wss:" : "ws:"}//${loc.host}/sync`;
}

/**
 * Hydrate from the page and go live.
 * @param {ConnectOptions} [options]
 * @returns {Promise<SyncClient>}
 */
export async function connect(options = {}) {
  const client = new SyncClient(options);
  await client._start();
  return client;
}

export class SyncClient {
  /** @param {ConnectOptions} options */
  constructor(options) {
    this.options = options;
    const doc = options.document ?? globalThis.document;
    const state =
      options.state !== undefined ? options.state : readEmbeddedState(options.stateId, doc);
    const embeddedHash = isObject(state) && typeof state.schema === "string" ? state.schema : null;
    const schemaHash = options.schemaHash ?? embeddedHash;
    if (schemaHash === null) {
      throw new Error(
        "no #syncline-state on this page: pass connect({ state }) or connect({ schemaHash })",
      );
    }
    this.clientId = options.clientId ?? newClientId();
    if (this.clientId.length < 8 || this.clientId.length > 128) {
      throw new Error("a client id has 8 to 128 characters");
    }
    // Field policies: the application's own description wins; else the page's.
    const embeddedFields = isObject(state) && isObject(state.fields) ? state.fields : null;
    const spec = options.schema ?? /** @type {SchemaSpec | null} */ (embeddedFields);
    this.replica = new Replica(makeSchema(spec, schemaHash), this.clientId, {
      undoPause: options.undoPause,
    });
    this.protocol = new ClientProtocol(this.replica, {
      schemaHash,
      credentials: options.auth ?? null,
    });
    /** @type {Limits} */
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
    /** @type {Value<Status>} */
    this._status = new Value(/** @type {Status} */ ("offline"));
    this._pending = new Value(0);
    /** "connecting" | "live" | "offline" */
    this.status = readonly(this._status);
    /** The number of mutations not yet confirmed (sent or not). */
    this.pending = readonly(this._pending);
    this._canUndo = new Value(false);
    this._canRedo = new Value(false);
    /** Whether undo() / redo() have an entry (observables). */
    this.canUndo = readonly(this._canUndo);
    this.canRedo = readonly(this._canRedo);
    this.replica.tab = options.storage === false ? null : tabIdentity();
    this._listeners = new Listeners();
    /** @type {Map<string, Room>} presence rooms joined (presence.js) */
    this._rooms = new Map();
    this._views = new Views(
      this.replica,
      options.bind === false ? null : (options.bind ?? doc ?? null),
      options.render,
    );
    this._queue = new QueueKeeper(this.replica, memoryStore());
    const nav = /** @type {{onLine?: boolean} | undefined} */ (globalThis.navigator);
    this._session = new Session(this.protocol, {
      openSocket: () => this._openSocket(),
      backoff: options.backoff,
      offline: Boolean(nav && nav.onLine === false),
      settled: () => this._queue.settled(),
      persist: () => this._queue.save(),
      onEvents: (events) => this._after(events),
      onClosed: () => this._after([]),
      onStatus: () => this._setStatus(this._session.status),
    });
    this._tabs = new PageTabs({
      replica: this.replica,
      protocol: this.protocol,
      store: () => this._queue.store,
      openSocket: () => this._openSocket(),
      locks: options.locks,
      changed: () => this._after([]),
      adoptedEvent: (e, client) => this._dispatch(e, client),
      conflict: (draft) => this._listeners.emit("conflict", draft),
    });
    /** @type {{release: () => void} | null} this page's Web Lock (locks.js) */
    this._lock = null;
    this._closed = false;
    /** @type {(() => void)[]} */
    this._cleanup = [];
    /** The embedded state, loaded by _start once the connection is on its way. */
    this._state = state;
  }

  /** The store the pending queue is kept in (memory until IndexedDB is open). */
  get store() {
    return this._queue.store;
  }

  async _start() {
    const tabs = this.options.tabs !== false;
    if (this.options.storage) this._queue.use(this.options.storage);
    // The page's lock and the IndexedDB store open in the background: neither the
    // connection nor reading needs them. A write made meanwhile is saved, and so sent,
    // once the store is in place (invariant 3): see QueueKeeper.
    const storage = this.options.storage;
    const claimed = claimPage(this.clientId, {
      tabs,
      locks: this.options.locks,
      open: storage === false || storage ? null : () => openStoreWithin(3000),
    });
    this._queue.waitFor(claimed.then(({ lock, store }) => this._held(tabs, lock, store)));
    this._listen(globalThis, "online", () => this._online());
    this._listen(globalThis, "offline", () => this._offline());
    this._listen(globalThis, "pagehide", () => this._pageHide());
    this._session.start();
    // Hydrate while the handshake goes on: the socket's events are tasks, so the
    // protocol holds the page's state before the first of them runs.
    try {
      if (this._state !== null && this._state !== undefined) this.protocol.hydrate(this._state);
    } catch (exc) {
      this.close();
      throw exc;
    } finally {
      this._state = null;
    }
    this._pending.set(this.replica.pending.length);
  }

  /**
   * The lock and the store are ready: keep the store, listen to other tabs, adopt.
   * @param {boolean} tabs
   * @param {{release: () => void} | null} lock
   * @param {QueueStore | null} store  the store to keep (null: keep the one in use)
   */
  _held(tabs, lock, store) {
    if (this._closed) {
      lock?.release();
      store?.close();
      return;
    }
    this._lock = lock;
    if (store !== null) this._queue.use(store);
    if (tabs) this._tabs.open();
    // A reload of this tab: take its undo stacks before adoption sends (and deletes)
    // the previous page's queue.
    const adopt = () => {
      if (tabs && this._lock !== null && !this._closed) void this._tabs.adopt();
    };
    previousHistory(this._queue.store, this.replica.tab, this.clientId)
      .then((history) => {
        const r = this.replica;
        if (history !== null && !this._closed && !r.history.canUndo && !r.history.canRedo) {
          r.history = history;
          this._after([]);
        }
      })
      .catch(report)
      .finally(adopt);
  }

  /**
   * @param {unknown} target
   * @param {string} type
   * @param {() => void} listener
   */
  _listen(target, type, listener) {
    const t = /** @type {EventTarget | undefined} */ (target);
    if (!t || typeof t.addEventListener !== "function") return;
    t.addEventListener(type, listener);
    this._cleanup.push(() => t.removeEventListener(type, listener));
  }

  // --- reading -----------------------------------------------------------------------

  /** The replica's cursor, or null. */
  get cursor() {
    const c = this.replica.cursor;
    return c === null ? null : formatCursor(c);
  }

  /**
   * Nothing has changed since the page's embedded state was loaded: the replica shows
   * what the server rendered from it, so an application's first render may keep the
   * server's HTML as it is. False from the first change on (a write, a server change,
   * another tab's edit), for good.
   */
  get pristine() {
    return this._views.renders === 0;
  }

  /** Live, every subscription answered, nothing pending. */
  get synced() {
    return this.protocol.synced;
  }

  /** Edits a manual conflict stopped: answer each with resolve(). @returns {Draft[]} */
  get drafts() {
    return [...this.replica.drafts];
  }

  /**
   * The record as the user sees it (pending edits applied), or null.
   * @param {string} collection
   * @param {string} id
   * @returns {Dict | null}
   */
  get(collection, id) {
    return this.replica.get(collection, id);
  }

  /**
   * A query run on the local replica (the page's queries and any subscribed since):
   * its rows ({id, ...fields}), updated after every change that alters them.
   * @param {unknown} query  {c, where, order, limit}
   * @returns {Observable<Dict[]>}
   */
  query(query) {
    return this._views.query(parseQuery(query, this.replica.schema));
  }

  /**
   * Ask the server for more queries ({query id: query}); their records join the replica.
   * @param {Record<string, unknown>} queries
   */
  subscribe(queries) {
    this._checkOpen();
    this.protocol.subscribe(queries);
    this._session.flush();
  }

  // --- writing -----------------------------------------------------------------------

  /** @param {string} collection @param {string} id @param {Record<string, unknown>} fields @returns {Mutation} */
  insert(collection, id, fields) {
    return this._local(() => this.replica.insert(collection, id, fields));
  }

  /** @param {string} collection @param {string} id @param {Record<string, unknown>} fields @returns {Mutation} */
  update(collection, id, fields) {
    return this._local(() => this.replica.update(collection, id, fields));
  }

  /** @param {string} collection @param {string} id @returns {Mutation} */
  delete(collection, id) {
    return this._local(() => this.replica.delete(collection, id));
  }

  /** @param {string} collection @param {string} id @param {string} field @param {number} [by] @returns {Mutation} */
  increment(collection, id, field, by = 1) {
    return this._local(() => this.replica.increment(collection, id, field, by));
  }

  /** @param {string} collection @param {string} id @param {string} field @param {...SetValue} values @returns {Mutation} */
  add(collection, id, field, ...values) {
    return this._local(() => this.replica.add(collection, id, field, ...values));
  }

  /** @param {string} collection @param {string} id @param {string} field @param {...SetValue} values @returns {Mutation} */
  remove(collection, id, field, ...values) {
    return this._local(() => this.replica.remove(collection, id, field, ...values));
  }

  /**
   * Several ops as one mutation (all or nothing, invariant 5):
   * sync.batch((b) => { b.update(...); b.increment(...); }, { mode: "whole" }).
   * @param {(b: MutationBuilder) => void} build
   * @param {{mode?: "whole" | "partial"}} [options]
   * @returns {Mutation | null}  null when build added no op
   */
  batch(build, options = {}) {
    return this._local(() => this.replica.batch(build, options.mode ?? "whole"));
  }

  /**
   * Answer a draft: `choices` maps each conflicting field to the value to keep (a field
   * left out, or undefined, keeps theirs). Returns the new mutation, if any.
   * @param {Draft} draft
   * @param {Record<string, unknown>} choices
   * @returns {Mutation | null}
   */
  resolve(draft, choices) {
    /** @type {Record<string, unknown>} */
    const kept = Object.create(null);
    for (const key of Object.keys(choices))
      if (choices[key] !== undefined) kept[key] = choices[key];
    return this._local(() => this.replica.resolve(draft, kept));
  }

  // --- undo and redo (undo.js) -------------------------------------------------------

  /**
   * Every edit made while `fn` runs is one undo entry.
   * @template T
   * @param {() => T} fn
   * @returns {T}
   */
  undoGroup(fn) {
    try {
      return this.replica.undoGroup(fn);
    } finally {
      this._after([]); // the entry exists once the group ends: canUndo, the saved stacks
    }
  }

  /**
   * Undo this tab's newest undo entry with a new mutation, sent like any other (queued
   * while offline). Fields someone else changed since are skipped ("undo-partial"
   * listeners get {keys, fields, mutationId}) or, for manual ones, come back as a draft
   * ("conflict"). Null when there is nothing to undo.
   * @returns {import("./undo.js").UndoOutcome | null}
   */
  undo() {
    return this._invert(() => this.replica.undo());
  }

  /** Redo the newest undo, by the same rules. @returns {import("./undo.js").UndoOutcome | null} */
  redo() {
    return this._invert(() => this.replica.redo());
  }

  /**
   * @param {() => import("./undo.js").UndoOutcome | null} step
   * @returns {import("./undo.js").UndoOutcome | null}
   */
  _invert(step) {
    this._checkOpen();
    /** @type {import("./undo.js").UndoOutcome | null} */
    let outcome = null;
    this._local(() => {
      outcome = step();
      const id = outcome?.mutationId ?? null;
      return id === null ? null : (this.replica.pending.find((p) => p.mutation.id === id)?.mutation ?? null);
    });
    for (const e of this.replica.undoEvents(outcome)) {
      if (e.kind === "conflict") this._listeners.emit("conflict", e.draft);
      else this._listeners.emit(e.kind, { kind: e.kind, mutationId: e.mutationId, keys: e.keys, fields: e.fields });
    }
    return outcome;
  }

  /**
   * @template {Mutation | null} M
   * @param {() => M} make
   * @returns {M}
   */
  _local(make) {
    this._checkOpen();
    const mutation = make();
    if (mutation !== null) this._checkLimits(mutation);
    const keys = mutation ? mutation.ops.map((op) => `${op.c}:${op.id}`) : [];
    this._after(
      keys.length ? [clientEvent("changed", { mutationId: mutation?.id ?? null, keys })] : [],
    );
    // Send it now (once saved), not when the next server frame happens to arrive.
    if (mutation !== null) this._session.flush();
    return mutation;
  }

  /**
   * Refuse here what the server would refuse without using the id up.
   * @param {Mutation} mutation
   */
  _checkLimits(mutation) {
    const problem = limitProblem(mutation, this.limits);
    if (problem !== null) {
      this.replica.discardLast(mutation);
      throw new InvalidMutation(`the server would refuse this mutation: ${problem}`);
    }
  }

  _checkOpen() {
    if (this._closed) throw new Error("this client is closed");
  }

  // --- presence ----------------------------------------------------------------------

  /**
   * Enter a presence room (docs/browser-client.md, Presence) with this page's state (a
   * small JSON object); joined again after every reconnect until left. Joining a room
   * already joined updates the state and returns the same Room.
   * @param {string} name
   * @param {Dict} [state]
   * @returns {Room}
   */
  join(name, state = {}) {
    this._checkOpen();
    let room = this._rooms.get(name);
    if (room === undefined || room.left) {
      room = new Room(name, {
        send: (r, s) => {
          this.protocol.sendPresence(this.protocol.presence.update(r.name, s));
          this._session.flush();
        },
        leave: (r) => {
          if (this._rooms.get(r.name) === r) this._rooms.delete(r.name);
          this.protocol.sendPresence(this.protocol.presence.leave(r.name));
          this._session.flush();
        },
      });
      this._rooms.set(name, room);
    }
    this.protocol.sendPresence(this.protocol.presence.join(name, state));
    this._session.flush();
    return room;
  }

  // --- events ------------------------------------------------------------------------

  /**
   * Call `listener` for each event of `kind` ("*": all). Returns a function that removes it.
   * @param {ListenKind} kind
   * @param {(payload: any) => void} listener
   * @returns {() => void}
   */
  on(kind, listener) {
    return this._listeners.on(kind, listener);
  }

  // --- after anything moved ----------------------------------------------------------

  /**
   * Bookkeeping after the replica or the protocol moved: save, tell other tabs, show
   * their edits, patch the page, refresh queries, report.
   * @param {ClientEvent[]} events
   */
  _after(events) {
    this._queue.save();
    this._tabs.announce(false);
    const all = [...events, ...this._tabs.refreshOverlay()];
    /** @type {Set<string>} */
    const keys = new Set();
    for (const e of all) if (e.kind === "changed") for (const k of e.keys) keys.add(k);
    if (keys.size) this._views.render(keys);
    this._pending.set(this.replica.pending.length + this._tabs.adoptedCount);
    this._canUndo.set(this.replica.canUndo);
    this._canRedo.set(this.replica.canRedo);
    const status = this._session.status;
    if (status === "live" && this._status.value !== "live" && this._tabs.takeRetry()) {
      queueMicrotask(() => void this._tabs.adopt());
    }
    this._setStatus(status);
    for (const e of events) this._dispatch(e);
    const overlayKeys = new Set(all.slice(events.length).flatMap((e) => e.keys));
    if (overlayKeys.size) this._listeners.emit("change", { keys: [...overlayKeys] });
  }

  /** @param {ClientEvent} e @param {string} [adoptedFrom] */
  _dispatch(e, adoptedFrom) {
    if (e.kind === "presence") {
      const room = this._rooms.get(e.reason ?? "");
      if (room === undefined) return;
      room._changed(this.protocol.presence.rooms.get(room.name), e.changes ?? [], e.error);
      if (room.left) this._rooms.delete(room.name);
    } else if (e.kind === "changed") {
      this._listeners.emit("change", { keys: e.keys });
    } else if (e.kind === "conflict") {
      this._listeners.emit("conflict", e.draft);
    } else {
      this._listeners.emit(e.kind, adoptedFrom === undefined ? e : { ...e, adoptedFrom });
      if (e.kind === "reload" && !this._listeners.count("reload")) this._defaultReload(e);
    }
  }

  /**
   * Nobody listens to "reload": do what connect({ reload }) says (reload the page).
   * @param {ClientEvent} e
   */
  _defaultReload(e) {
    const option = this.options.reload;
    if (option === false) return;
    if (typeof option === "function") option(e);
    else void reloadPage(this._queue.settled());
  }

  /** @param {Status} status */
  _setStatus(status) {
    if (status === this._status.value) return;
    this._status.set(status);
    this._listeners.emit("status", clientEvent("status", { status }));
  }

  // --- the page's life ---------------------------------------------------------------

  /** @returns {SocketLike} */
  _openSocket() {
    const url = this.options.url ?? defaultUrl();
    const open = this.options.socket ?? ((/** @type {string} */ u) => new WebSocket(u));
    return open(url);
  }

  /** The browser is back online: connect at once (no backoff wait), adopt if due. */
  _online() {
    if (this._closed) return;
    this._session.online();
    if (this._tabs.takeRetry()) void this._tabs.adopt();
  }

  /** The browser went offline: writes stay queued (saved) until it is back. */
  _offline() {
    if (this._closed) return;
    this._session.offline();
    this._after([]);
  }

  _pageHide() {
    this._tabs.bye();
    this._queue.forgetIfEmpty();
  }

  /** Stop: close the connection, release this page's lock, stop listening to tabs. */
  close() {
    if (this._closed) return;
    this._closed = true;
    this._session.close();
    for (const undo of this._cleanup.splice(0)) undo();
    this._tabs.close();
    this._lock?.release();
    this._lock = null;
    this._views.clear();
    this._setStatus("offline");
  }
}
