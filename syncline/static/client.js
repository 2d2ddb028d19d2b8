// The browser client (docs/browser-client.md), served at /sync/client.js:
//
//   import { connect } from "/sync/client.js";
//   const sync = await connect();   // hydrates from #syncline-state, then goes live
//
// connect() reads the page's embedded state with JSON.parse(element.textContent), opens
// the socket, builds the replica from the state without any request while the handshake
// goes on, and resolves; this page's Web Lock and the pending-queue store (IndexedDB)
// open in the background (a write made before they are ready is saved, then sent, once
// they are). The connection loop:
//
//   offline --> connecting --welcome--> live
//      ^            |                    |
//      +-- jittered backoff (0.25 s doubling to 10 s) <-- socket closed
//   (a refusal such as reload or unauthorized stops the loop: offline for good)
//
// Every local write applies to the view at once, is queued, saved to IndexedDB, and
// sent once the save is durable; other tabs see it at once over a BroadcastChannel. On
// reconnect the protocol resends every unanswered mutation and resubscribes since its
// cursor. Elements bound with data-sl-id / data-sl-field are patched in place.

import { patchKeys } from "./bind.js";
import { Link } from "./connection.js";
import { formatCursor } from "./cursor.js";
import { hasOwn, isObject } from "./json.js";
import { Value, readonly, report } from "./observable.js";
import { mutFrame, splitKey } from "./ops.js";
import { ClientProtocol, clientEvent } from "./protocol.js";
import { parseQuery } from "./query.js";
import { InvalidMutation, Replica } from "./replica.js";
import { makeSchema } from "./schema.js";
import { memoryStore, openStoreWithin, queueOf } from "./storage.js";
import { PeerEdits, TabChannel, adoptOrphans, holdLock } from "./tabs.js";

export { InvalidMutation } from "./replica.js";
export { QueryError } from "./query.js";

/** @typedef {import("./json.js").Dict} Dict */
/** @typedef {import("./ops.js").Mutation} Mutation */
/** @typedef {import("./ops.js").Op} Op */
/** @typedef {import("./ops.js").SetValue} SetValue */
/** @typedef {import("./replica.js").Draft} Draft */
/** @typedef {import("./replica.js").MutationBuilder} MutationBuilder */
/** @typedef {import("./protocol.js").ClientEvent} ClientEvent */
/** @typedef {import("./schema.js").SchemaSpec} SchemaSpec */
/** @typedef {import("./storage.js").QueueStore} QueueStore */
/** @typedef {import("./bind.js").Renderer} Renderer */
/** @typedef {import("./connection.js").SocketLike} SocketLike */
/** @typedef {import("./tabs.js").TabMessage} TabMessage */
/**
 * @template T
 * @typedef {import("./observable.js").Observable<T>} Observable
 */

/** @typedef {"connecting" | "live" | "offline"} Status */

/**
 * What `on(kind, listener)` listens to. "conflict" listeners get the Draft (answer it
 * with resolve); "change" listeners get {keys}; the others get the event
 * ({kind, mutationId, fields, error, reason, keys, status, frame}).
 * @typedef {"change" | "conflict" | "overwritten" | "merged" | "rejected" | "dropped" | "reset" | "reload" | "error" | "status" | "ack" | "*"} ListenKind
 */

/**
 * @typedef {object} Limits  what the server refuses without using a mutation id up
 * @property {number} maxFrameBytes
 * @property {number} maxOps
 * @property {number} maxString
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
 * @property {(url: string) => SocketLike} [socket]  how to open a WebSocket
 * @property {Partial<Limits>} [limits]
 * @property {LockManager | null} [locks]  default navigator.locks
 * @property {Document} [document]  the page (default: the global document)
 */

const DEFAULT_LIMITS = { maxFrameBytes: 1 << 20, maxOps: 500, maxString: 100_000 };

/** A random client id for this page instance (invariant 4): "tab-" and a UUID. */
export function newClientId() {
  return `tab-${uuid4()}`;
}

/** @returns {string} */
function uuid4() {
  const c = globalThis.crypto;
  if (typeof c.randomUUID === "function") return c.randomUUID(); // secure contexts only
  const b = c.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * A new record id: a UUIDv7 string, unique without coordination and sortable by
 * creation time (model.py new_id).
 * @returns {string}
 */
export function newId() {
  const b = globalThis.crypto.getRandomValues(new Uint8Array(16));
  let ms = Date.now();
  for (let i = 5; i >= 0; i--) {
    b[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

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
    this.replica = new Replica(makeSchema(spec, schemaHash), this.clientId);
    this.protocol = new ClientProtocol(this.replica, {
      schemaHash,
      credentials: options.auth ?? null,
    });
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
    /** @type {Value<Status>} */
    this._status = new Value(/** @type {Status} */ ("offline"));
    this._pending = new Value(0);
    /** "connecting" | "live" | "offline" */
    this.status = readonly(this._status);
    /** The number of mutations not yet confirmed (sent or not). */
    this.pending = readonly(this._pending);
    /** @type {Map<string, Set<(payload: any) => void>>} */
    this._listeners = new Map();
    /** @type {Set<{collection: string, refresh: () => void}>} */
    this._queries = new Set();
    /** How many times changed records were shown: a query's rows are current if none since. */
    this._renders = 0;
    /** @type {QueueStore} */
    this.store = memoryStore();
    /** @type {Promise<unknown>} every queued save, in order */
    this._saving = Promise.resolve();
    /** @type {Promise<void>} settles once the page's lock and store are in place */
    this._storeReady = Promise.resolve();
    /** @type {string | null} */
    this._queueSig = JSON.stringify(queueSig(this));
    /** @type {string | null} */
    this._editsSig = null;
    /** @type {Link | null} */
    this._link = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._retryTimer = null;
    this._backoff = options.backoff ?? [0.25, 10];
    this._delay = this._backoff[0];
    this._closed = false;
    this._peers = new PeerEdits();
    /** @type {Op[][]} */
    this._overlay = [];
    /** @type {TabChannel | null} */
    this._tabs = null;
    /** @type {{release: () => void} | null} */
    this._lock = null;
    this._adopting = false;
    /** A queue could not be adopted: try again once this page is live again. */
    this._adoptRetry = false;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._adoptTimer = null;
    /** Dead pages' queues this page is sending: shown and counted until confirmed. */
    this._adopted = new PeerEdits();
    /** The browser says it is offline: no connection until it says online. */
    this._browserOffline = false;
    /** Back online while the last socket was still closing: connect when it has. */
    this._connectOnClose = false;
    this._bindRoot = options.bind === false ? null : (options.bind ?? doc ?? null);
    /** @type {(() => void)[]} */
    this._cleanup = [];
    /** The embedded state, loaded by _start once the connection is on its way. */
    this._state = state;
  }

  async _start() {
    const tabs = this.options.tabs !== false;
    if (this.options.storage) this.store = this.options.storage;
    // The page's lock and the IndexedDB store open together, in the background: on a
    // large page the browser answers them late (it is busy laying the page out), and
    // neither the connection nor reading needs them. A write made meanwhile is saved,
    // and so sent, once the store is in place (invariant 3): see _saveQueue.
    const locking = tabs
      ? holdLock(this.clientId, this.options.locks === undefined ? undefined : this.options.locks)
          .catch((exc) => {
            report(exc);
            return null;
          })
      : Promise.resolve(null);
    const opening =
      this.options.storage === false || this.options.storage
        ? Promise.resolve(null)
        : openStoreWithin(3000);
    this._storeReady = Promise.all([locking, opening]).then(([lock, opened]) =>
      this._held(tabs, lock, opened),
    );
    this._listen(globalThis, "online", () => this._online());
    this._listen(globalThis, "offline", () => this._offline());
    this._listen(globalThis, "pagehide", () => this._pageHide());
    const nav = /** @type {{onLine?: boolean} | undefined} */ (globalThis.navigator);
    if (nav && nav.onLine === false) this._browserOffline = true;
    this._connect();
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
   * @param {QueueStore | null} opened
   */
  _held(tabs, lock, opened) {
    if (this._closed) {
      lock?.release();
      opened?.close();
      return;
    }
    this._lock = lock;
    if (opened !== null) {
      // Only a page that holds its lock may keep its queue where other pages look for
      // queues to adopt: an unlocked queue could be adopted while this page still sends
      // it, and one mutation would go out twice.
      if (lock !== null) this.store = opened;
      else opened.close();
    }
    if (tabs) {
      this._tabs = new TabChannel(this.clientId, (message) => this._onTabMessage(message));
      this._tabs.post({ t: "hello", client: this.clientId });
    }
    if (tabs && this._lock !== null) void this._adopt();
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
    return this._renders === 0;
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
    const parsed = parseQuery(query, this.replica.schema);
    /** @type {Value<Dict[]>} */
    const value = new Value(/** @type {Dict[]} */ ([]), {
      equals: sameRows,
      start: () => {
        // Unwatched, the rows may have gone stale; run the query again only if so.
        if (seen !== this._renders) handle.refresh();
        this._queries.add(handle);
      },
      stop: () => this._queries.delete(handle),
    });
    let seen = this._renders;
    const handle = {
      collection: parsed.collection,
      refresh: () => {
        seen = this._renders;
        value.set(this.replica.query(parsed));
      },
    };
    handle.refresh();
    return readonly(value);
  }

  /**
   * Ask the server for more queries ({query id: query}); their records join the replica.
   * @param {Record<string, unknown>} queries
   */
  subscribe(queries) {
    this._checkOpen();
    this.protocol.subscribe(queries);
    void this._link?.flush();
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
    if (mutation !== null) void this._link?.flush();
    return mutation;
  }

  /**
   * Refuse here what the server would refuse without using the id up.
   * @param {Mutation} mutation
   */
  _checkLimits(mutation) {
    const frame = mutFrame(mutation);
    const text = JSON.stringify(frame);
    const size = new TextEncoder().encode(text).length;
    /** @type {string | null} */
    let problem = null;
    if (size > this.limits.maxFrameBytes) problem = `the mutation is ${size} bytes`;
    else if (mutation.ops.length > this.limits.maxOps)
      problem = `more than ${this.limits.maxOps} ops`;
    else problem = stringProblem(frame, this.limits.maxString, 0);
    if (problem !== null) {
      this.replica.discardLast(mutation);
      throw new InvalidMutation(`the server would refuse this mutation: ${problem}`);
    }
  }

  _checkOpen() {
    if (this._closed) throw new Error("this client is closed");
  }

  // --- events ------------------------------------------------------------------------

  /**
   * Call `listener` for each event of `kind` ("*": all). Returns a function that removes it.
   * @param {ListenKind} kind
   * @param {(payload: any) => void} listener
   * @returns {() => void}
   */
  on(kind, listener) {
    let set = this._listeners.get(kind);
    if (!set) {
      set = new Set();
      this._listeners.set(kind, set);
    }
    const wrapped = /** @param {any} payload */ (payload) => listener(payload);
    set.add(wrapped);
    return () => {
      set.delete(wrapped);
    };
  }

  /**
   * @param {string} kind
   * @param {unknown} payload
   */
  _emit(kind, payload) {
    for (const listener of [
      ...(this._listeners.get(kind) ?? []),
      ...(this._listeners.get("*") ?? []),
    ]) {
      try {
        listener(payload);
      } catch (exc) {
        report(exc);
      }
    }
  }

  // --- after anything moved ----------------------------------------------------------

  /**
   * Bookkeeping after the replica or the protocol moved: save, tell other tabs, show
   * their edits, patch the page, refresh queries, report.
   * @param {ClientEvent[]} events
   */
  _after(events) {
    this._saveQueue();
    this._announce(false);
    const all = [...events, ...this._refreshOverlay()];
    /** @type {Set<string>} */
    const keys = new Set();
    for (const e of all) if (e.kind === "changed") for (const k of e.keys) keys.add(k);
    if (keys.size) this._render(keys);
    this._pending.set(this.replica.pending.length + this._adopted.count());
    const status = this._statusNow();
    if (status === "live" && this._status.value !== "live" && this._adoptRetry) {
      this._adoptRetry = false;
      queueMicrotask(() => void this._adopt());
    }
    this._setStatus(status);
    for (const e of events) this._dispatch(e);
    const overlayKeys = new Set(all.slice(events.length).flatMap((e) => e.keys));
    if (overlayKeys.size) this._emit("change", { keys: [...overlayKeys] });
  }

  /** @param {ClientEvent} e @param {string} [adoptedFrom] */
  _dispatch(e, adoptedFrom) {
    if (e.kind === "changed") {
      this._emit("change", { keys: e.keys });
    } else if (e.kind === "conflict") {
      this._emit("conflict", e.draft);
    } else {
      this._emit(e.kind, adoptedFrom === undefined ? e : { ...e, adoptedFrom });
    }
  }

  /** @param {Set<string>} keys */
  _render(keys) {
    this._renders++;
    if (this._bindRoot) {
      try {
        patchKeys(this._bindRoot, keys, (c, id) => this.replica.get(c, id), this.options.render);
      } catch (exc) {
        report(exc);
      }
    }
    const collections = new Set([...keys].map((k) => splitKey(k)[0]));
    for (const q of [...this._queries]) if (collections.has(q.collection)) q.refresh();
  }

  /** @returns {Status} */
  _statusNow() {
    if (this._browserOffline) return "offline";
    if (this.protocol.state === "live") return "live";
    if (this._link !== null && this.protocol.state !== "failed") return "connecting";
    return "offline";
  }

  /** @param {Status} status */
  _setStatus(status) {
    if (status === this._status.value) return;
    this._status.set(status);
    this._emit("status", clientEvent("status", { status }));
  }

  // --- persistence -------------------------------------------------------------------

  _saveQueue() {
    const sig = JSON.stringify(queueSig(this));
    if (sig === this._queueSig) return;
    this._queueSig = sig;
    const queue = queueOf(this.replica);
    // Saved in the store the page keeps, once it has one (_held).
    this._saving = this._saving
      .then(() => this._storeReady)
      .then(() => this.store.save(queue))
      .catch(report);
  }

  // --- the connection loop -----------------------------------------------------------

  /** @returns {SocketLike} */
  _openSocket() {
    const url = this.options.url ?? defaultUrl();
    const open = this.options.socket ?? ((/** @type {string} */ u) => new WebSocket(u));
    return open(url);
  }

  _connect() {
    this._retryTimer = null;
    if (this._closed || this.protocol.state === "failed" || this._link !== null) return;
    if (this._browserOffline) return; // the "online" event connects
    let socket;
    try {
      socket = this._openSocket();
    } catch (exc) {
      report(exc);
      this._scheduleReconnect();
      return;
    }
    const link = new Link(this.protocol, socket, {
      settled: () => this._saving,
      persist: () => this._saveQueue(),
      onEvents: (events) => this._after(events),
      onClose: ({ wentLive }) => {
        if (this._link === link) this._link = null;
        this._after([]);
        if (this._closed || this.protocol.state === "failed") return;
        if (wentLive) this._delay = this._backoff[0];
        if (this._browserOffline) return; // the "online" event reconnects
        if (this._connectOnClose) {
          // Back online while this socket was still closing: go on at once.
          this._connectOnClose = false;
          this._connect();
          return;
        }
        this._scheduleReconnect();
      },
    });
    this._link = link;
    this._setStatus("connecting");
  }

  _scheduleReconnect() {
    if (this._retryTimer !== null || this._closed) return;
    // Equal jitter: half the delay, plus a random part of the other half.
    const wait = this._delay / 2 + (Math.random() * this._delay) / 2;
    this._delay = Math.min(this._backoff[1], this._delay * 2);
    this._retryTimer = setTimeout(() => this._connect(), wait * 1000);
  }

  _reconnectNow() {
    if (this._retryTimer === null) return;
    clearTimeout(this._retryTimer);
    this._connect();
  }

  /** The browser is back online: connect at once (no backoff wait). */
  _online() {
    if (this._closed) return;
    this._browserOffline = false;
    this._delay = this._backoff[0];
    if (this._retryTimer !== null) clearTimeout(this._retryTimer);
    this._retryTimer = null;
    if (this._link === null) this._connect();
    else this._connectOnClose = true; // the old socket is still closing
    this._setStatus(this._statusNow());
    if (this._adoptRetry) {
      this._adoptRetry = false;
      void this._adopt();
    }
  }

  /**
   * The browser went offline. A socket may outlive that (Chromium keeps an open one
   * while offline), holding frames that cannot leave: close it, stop retrying, and keep
   * the writes queued (they are saved in IndexedDB) until the "online" event.
   */
  _offline() {
    if (this._closed) return;
    this._browserOffline = true;
    this._connectOnClose = false;
    if (this._retryTimer !== null) clearTimeout(this._retryTimer);
    this._retryTimer = null;
    // The link stays until its close event (no second connection meanwhile); the
    // status says offline at once.
    this._link?.close(1000, "client: offline");
    this._after([]);
  }

  /** Stop: close the connection, release this page's lock, stop listening to tabs. */
  close() {
    if (this._closed) return;
    this._closed = true;
    if (this._retryTimer !== null) clearTimeout(this._retryTimer);
    this._retryTimer = null;
    if (this._adoptTimer !== null) clearTimeout(this._adoptTimer);
    this._adoptTimer = null;
    this._link?.close(1000, "client closed");
    this._adoptRetry = false;
    for (const undo of this._cleanup.splice(0)) undo();
    this._tabs?.post({ t: "bye", client: this.clientId });
    this._tabs?.close();
    this._tabs = null;
    this._lock?.release();
    this._lock = null;
    this._queries.clear();
    this._setStatus("offline");
  }

  // --- other tabs --------------------------------------------------------------------

  /**
   * Tell other tabs this tab's pending mutations, when they changed (or when asked).
   * @param {boolean} force
   */
  _announce(force) {
    if (!this._tabs) return;
    const muts = this.replica.pending.map((p) => ({
      id: p.mutation.id,
      ops: p.mutation.ops,
      acked: p.acked,
      seq: p.seq,
    }));
    const epoch = this.replica.cursor?.epoch ?? null;
    const sig = JSON.stringify([epoch, muts.map((m) => [m.id, m.acked, m.seq])]);
    if (!force && sig === this._editsSig) return;
    this._editsSig = sig;
    this._tabs.post({ t: "edits", client: this.clientId, epoch, muts });
  }

  /** @param {TabMessage} message */
  _onTabMessage(message) {
    if (this._closed) return;
    if (message.t === "hello") {
      this._announce(true);
      return;
    }
    if (message.t === "bye") {
      this._peers.forget(message.client);
      // Its lock is released as the page goes: look for its queue a little later.
      if (this._adoptTimer === null) {
        this._adoptTimer = setTimeout(() => {
          this._adoptTimer = null;
          void this._adopt();
        }, 1000);
      }
    } else {
      this._peers.update(message.client, message.epoch, message.muts);
    }
    this._after([]);
  }

  /** @returns {ClientEvent[]} */
  _refreshOverlay() {
    const cursor = this.replica.cursor;
    // Adopted queues were made before anything this page does: under it, like peers'.
    const overlay = [...this._adopted.overlay(cursor), ...this._peers.overlay(cursor)];
    const same =
      overlay.length === this._overlay.length &&
      overlay.every((ops, i) => ops === this._overlay[i]);
    if (same) return [];
    this._overlay = overlay;
    return this.replica.setOverlay(overlay).map((e) => clientEvent(e.kind, { keys: e.keys }));
  }

  async _adopt() {
    if (this._adopting || this._closed) return;
    this._adopting = true;
    try {
      await adoptOrphans({
        store: this.store,
        clientId: this.clientId,
        schema: this.replica.schema,
        schemaHash: this.protocol.schemaHash,
        credentials: this.protocol.credentials,
        openSocket: () => this._openSocket(),
        locks: this.options.locks,
        onShow: (client, epoch, muts) => {
          if (this._closed) return;
          this._adopted.update(client, epoch, muts);
          this._after([]);
        },
        onEvents: (events, client) => {
          for (const e of events) {
            if (e.kind === "conflict" && e.draft) this.replica.drafts.push(e.draft);
            if (ADOPTED_EVENTS.has(e.kind)) this._dispatch(e, client);
          }
          this._after([]);
        },
        onDrafts: (drafts) => {
          this.replica.drafts.push(...drafts);
          this._after([]);
          for (const draft of drafts) this._emit("conflict", draft);
        },
      });
      // A queue shown here but no longer stored was sent (by this page: everything in
      // it is answered; or by another): stop showing what has no answer. One still
      // stored could not be sent: keep showing it, and try again once live.
      const stored = new Set((await this.store.list()).map((q) => q.client));
      this._adoptRetry = false;
      for (const client of this._adopted.clients()) {
        if (stored.has(client)) this._adoptRetry = true;
        else this._adopted.forget(client);
      }
      this._after([]);
    } catch (exc) {
      report(exc);
    } finally {
      this._adopting = false;
    }
  }

  _pageHide() {
    this._tabs?.post({ t: "bye", client: this.clientId });
    if (!this.replica.pending.length && !this.replica.drafts.length) {
      // Nothing to adopt: leave no queue behind (best effort; the page may stay in the
      // back-forward cache, so the next change saves it again).
      this._queueSig = null;
      const store = this.store;
      this._saving = this._saving.then(() => store.remove(this.clientId)).catch(() => {});
    }
  }
}

const ADOPTED_EVENTS = new Set(["conflict", "overwritten", "merged", "rejected", "dropped"]);

/**
 * What decides whether the queue must be saved again.
 * @param {SyncClient} client
 */
function queueSig(client) {
  const r = client.replica;
  return [
    r.nextId,
    r.pending.map((p) => [p.mutation.id, p.acked, p.seq]),
    r.drafts.map((d) => d.mutationId),
  ];
}

/**
 * @param {Dict[]} a
 * @param {Dict[]} b
 * @returns {boolean}
 */
function sameRows(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    const x = a[i];
    const y = b[i];
    const kx = Object.keys(x);
    if (kx.length !== Object.keys(y).length) return false;
    for (const k of kx) {
      if (!hasOwn(y, k)) return false;
      const u = x[k];
      const v = y[k];
      if (u === v) continue; // the common case, a scalar: no JSON text needed
      if (typeof u !== "object" || typeof v !== "object" || JSON.stringify(u) !== JSON.stringify(v))
        return false;
    }
  }
  return true;
}

/**
 * The first string longer than the limit (in code points), or nesting deeper than 32.
 * @param {unknown} value
 * @param {number} limit
 * @param {number} depth
 * @returns {string | null}
 */
function stringProblem(value, limit, depth) {
  if (depth > 32) return "nested more than 32 levels deep";
  if (typeof value === "string") {
    if (value.length > limit) {
      let n = 0;
      for (const _ of value) n++;
      if (n > limit) return `a string of ${n} characters exceeds the limit of ${limit}`;
    }
    return null;
  }
  if (Array.isArray(value)) {
    for (const v of value) {
      const p = stringProblem(v, limit, depth + 1);
      if (p) return p;
    }
  } else if (isObject(value)) {
    for (const k of Object.keys(value)) {
      const p = stringProblem(k, limit, depth + 1) ?? stringProblem(value[k], limit, depth + 1);
      if (p) return p;
    }
  }
  return null;
}

