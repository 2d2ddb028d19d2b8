// What a page must not forget (invariant 3): its pending mutations, kept in IndexedDB
// (database "syncline", object store "pending", keyed by client id) before they are
// first sent, so that if the page dies another page can send them under this client id
// and these mutation numbers (tabs.js adopts them).
//
// A saved queue is stored as JSON text ({client, json}), so whatever keys its data holds
// come back as data, never as prototypes. Where IndexedDB is missing or refuses (some
// private modes), a memory store keeps the page working without surviving it.

import { cloneJson, getOwn, isObject } from "./json.js";
import { report } from "./observable.js";
import { History } from "./undo.js";
import { conflictFromWire } from "./wire.js";

/** @typedef {import("./ops.js").Mutation} Mutation */
/** @typedef {import("./replica.js").Draft} Draft */
/** @typedef {import("./replica.js").Replica} Replica */

export const DB_NAME = "syncline";
export const STORE_NAME = "pending";

/**
 * @typedef {object} SavedQueue
 * @property {string} client  the client id the mutations are numbered for
 * @property {number} nextId
 * @property {{mutation: Mutation, acked: boolean, seq: number | null}[]} pending
 * @property {Draft[]} drafts
 * @property {number} saved  when (ms since the epoch)
 * @property {unknown} [history]  the undo and redo stacks (undo.js History.toWire)
 * @property {string | null} [tab]  the browser tab that made them (tabIdentity)
 */

/**
 * @typedef {object} QueueStore
 * @property {(queue: SavedQueue) => Promise<void>} save  resolves once durable
 * @property {(client: string) => Promise<SavedQueue | null>} load
 * @property {() => Promise<SavedQueue[]>} list
 * @property {(client: string) => Promise<void>} remove
 * @property {() => void} close
 * @property {string} kind  "indexeddb" or "memory"
 */

/**
 * The replica's queue, as saved.
 * @param {Replica} replica
 * @returns {SavedQueue}
 */
export function queueOf(replica) {
  return {
    client: replica.clientId,
    nextId: replica.nextId,
    pending: replica.pending.map((p) => ({ mutation: p.mutation, acked: p.acked, seq: p.seq })),
    drafts: replica.drafts,
    saved: Date.now(),
    history: replica.history.toWire(),
    tab: replica.tab ?? null,
  };
}

/**
 * What decides whether the queue must be saved again.
 * @param {Replica} r
 * @returns {string}
 */
function queueSig(r) {
  return JSON.stringify([
    r.nextId,
    r.pending.map((p) => [p.mutation.id, p.acked, p.seq]),
    r.drafts.map((d) => d.mutationId),
    r.history.toWire(),
  ]);
}

/**
 * Keeps one page's queue saved: save() after anything moved queues a save when the
 * queue changed, in order, into whichever store the page keeps once it has one
 * (use()); settled() resolves when every queued save is durable, so the connection
 * sends nothing that is not on disk (invariant 3).
 */
export class QueueKeeper {
  /**
   * @param {Replica} replica
   * @param {QueueStore} store  the store until use() gives the page's own
   */
  constructor(replica, store) {
    this.replica = replica;
    this.store = store;
    /** @type {Promise<unknown>} every queued save, in order */
    this._saving = Promise.resolve();
    /** @type {Promise<unknown>} settles once the page's lock and store are in place */
    this._ready = Promise.resolve();
    /** @type {string | null} the queue as last saved (null: save whatever it is) */
    this._sig = queueSig(replica);
  }

  /**
   * Saves wait for this: the store the page keeps is not known before it settles.
   * @param {Promise<unknown>} ready
   */
  waitFor(ready) {
    this._ready = ready;
  }

  /** @param {QueueStore} store  the store the page keeps from now on */
  use(store) {
    this.store = store;
  }

  /** Queue a save if the queue changed since the last one. */
  save() {
    const sig = queueSig(this.replica);
    if (sig === this._sig) return;
    this._sig = sig;
    const queue = queueOf(this.replica);
    this._saving = this._saving
      .then(() => this._ready)
      .then(() => this.store.save(queue))
      .catch(report);
  }

  /** Resolves when every queued save is durable (the same promise until a new save). */
  settled() {
    return this._saving;
  }

  /**
   * The page goes: with nothing to adopt, leave no queue behind (best effort; the page
   * may stay in the back-forward cache, so the next change saves it again).
   */
  forgetIfEmpty() {
    const r = this.replica;
    if (r.pending.length || r.drafts.length) return;
    // A tab's undo stacks stay for its next page (a reload), which takes them.
    if (r.tab !== null && (r.history.canUndo || r.history.canRedo)) return;
    this._sig = null;
    const store = this.store;
    const client = this.replica.clientId;
    this._saving = this._saving.then(() => store.remove(client)).catch(() => {});
  }
}

/**
 * Put a saved queue into a replica of the same client id.
 * @param {Replica} replica
 * @param {SavedQueue} queue
 */
export function restoreQueue(replica, queue) {
  replica.pending = queue.pending.map((p) => ({
    mutation: p.mutation,
    acked: p.acked,
    seq: p.seq,
  }));
  replica.drafts = [...queue.drafts];
  const last = Math.max(0, ...queue.pending.map((p) => p.mutation.id));
  replica.nextId = Math.max(queue.nextId, last + 1);
  replica._view = null;
}

/**
 * A saved queue from its JSON text, checked; null if it is not one.
 * @param {string} text
 * @returns {SavedQueue | null}
 */
export function decodeQueue(text) {
  try {
    const obj = cloneJson(JSON.parse(text));
    const client = getOwn(obj, "client");
    const nextId = getOwn(obj, "nextId");
    const pending = getOwn(obj, "pending");
    const drafts = getOwn(obj, "drafts") ?? [];
    if (typeof client !== "string" || typeof nextId !== "number") return null;
    if (!Array.isArray(pending) || !Array.isArray(drafts)) return null;
    return {
      client,
      nextId,
      pending: pending.map((p) => {
        const mutation = /** @type {Mutation} */ (getOwn(p, "mutation"));
        if (!isObject(mutation) || !Number.isInteger(mutation.id) || !Array.isArray(mutation.ops)) {
          throw new TypeError("not a mutation");
        }
        const seq = getOwn(p, "seq");
        return {
          mutation,
          acked: getOwn(p, "acked") === true,
          seq: typeof seq === "number" ? seq : null,
        };
      }),
      drafts: drafts.map((d) => ({
        mutationId: Number(getOwn(d, "mutationId")),
        conflicts: /** @type {unknown[]} */ (getOwn(d, "conflicts") ?? []).map(conflictFromWire),
        ops: /** @type {Draft["ops"]} */ (getOwn(d, "ops") ?? []),
      })),
      saved: Number(getOwn(obj, "saved") ?? 0),
      history: getOwn(obj, "history") ?? null,
      tab: typeof getOwn(obj, "tab") === "string" ? /** @type {string} */ (getOwn(obj, "tab")) : null,
    };
  } catch {
    return null;
  }
}

/** A store that lives as long as the page (no IndexedDB). @returns {QueueStore} */
export function memoryStore() {
  /** @type {Map<string, string>} */
  const rows = new Map();
  return {
    kind: "memory",
    async save(queue) {
      rows.set(queue.client, JSON.stringify(queue));
    },
    async load(client) {
      const text = rows.get(client);
      return text === undefined ? null : decodeQueue(text);
    },
    async list() {
      return [...rows.values()].map(decodeQueue).filter((q) => q !== null);
    },
    async remove(client) {
      rows.delete(client);
    },
    close() {},
  };
}

/**
 * @template T
 * @param {IDBRequest<T>} request
 * @returns {Promise<T>}
 */
function done(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/** @param {IDBTransaction} tx @returns {Promise<void>} */
function committed(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error ?? new Error("the IndexedDB transaction was aborted"));
  });
}

/**
 * The IndexedDB store, or a memory store where IndexedDB is missing or refuses.
 * @param {{indexedDB?: IDBFactory | null, name?: string}} [options]
 * @returns {Promise<QueueStore>}
 */
export async function openStore(options = {}) {
  const factory = options.indexedDB === undefined ? globalThis.indexedDB : options.indexedDB;
  if (!factory) return memoryStore();
  try {
    const request = factory.open(options.name ?? DB_NAME, 1);
    request.onupgradeneeded = () => {
      const db = request.result;
      if (!db.objectStoreNames.contains(STORE_NAME))
        db.createObjectStore(STORE_NAME, { keyPath: "client" });
    };
    const db = await done(request);
    return indexedDbStore(db);
  } catch {
    return memoryStore();
  }
}

/**
 * @param {IDBDatabase} db
 * @returns {QueueStore}
 */
function indexedDbStore(db) {
  /** @param {IDBTransactionMode} mode */
  const tx = (mode) =>
    mode === "readwrite"
      ? db.transaction(STORE_NAME, mode, { durability: "strict" })
      : db.transaction(STORE_NAME, mode);
  return {
    kind: "indexeddb",
    async save(queue) {
      const t = tx("readwrite");
      t.objectStore(STORE_NAME).put({ client: queue.client, json: JSON.stringify(queue) });
      await committed(t);
    },
    async load(client) {
      const row = await done(tx("readonly").objectStore(STORE_NAME).get(client));
      const text = getOwn(row, "json");
      return typeof text === "string" ? decodeQueue(text) : null;
    },
    async list() {
      const rows = await done(tx("readonly").objectStore(STORE_NAME).getAll());
      /** @type {SavedQueue[]} */
      const out = [];
      for (const row of rows) {
        const text = getOwn(row, "json");
        const queue = typeof text === "string" ? decodeQueue(text) : null;
        if (queue) out.push(queue);
      }
      return out;
    },
    async remove(client) {
      const t = tx("readwrite");
      t.objectStore(STORE_NAME).delete(client);
      await committed(t);
    },
    close() {
      db.close();
    },
  };
}

/**
 * The IndexedDB store if it opens within `ms`, else a memory store; a store that opens
 * after that is closed, so no connection to the database is left behind.
 * @param {number} ms
 * @param {() => Promise<QueueStore>} [open]
 * @returns {Promise<QueueStore>}
 */
export function openStoreWithin(ms, open = () => openStore()) {
  return new Promise((resolve) => {
    let settled = false;
    const timer = setTimeout(() => {
      settled = true;
      resolve(memoryStore());
    }, ms);
    open().then(
      (store) => {
        if (settled) {
          store.close(); // too late: this page already went on with a memory store
          return;
        }
        settled = true;
        clearTimeout(timer);
        resolve(store);
      },
      () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(memoryStore());
      },
    );
  });
}

/**
 * This browser tab's identity, kept in sessionStorage (which survives a reload and is
 * per tab): a reloaded page finds its undo stacks by it. Null where sessionStorage is
 * missing or refuses.
 * @param {Storage | undefined} [storage]
 * @returns {string | null}
 */
export function tabIdentity(storage = globalThis.sessionStorage) {
  try {
    if (!storage) return null;
    const held = storage.getItem("syncline-tab");
    if (held) return held;
    const made = `tab-${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`;
    storage.setItem("syncline-tab", made);
    return made;
  } catch {
    return null;
  }
}

/**
 * The undo stacks a previous page of this tab left in `store` (the newest), detached
 * for this page's client id; null if there are none.
 * @param {QueueStore} store
 * @param {string | null} tab
 * @param {string} client  this page's client id
 * @returns {Promise<History | null>}
 */
export async function previousHistory(store, tab, client) {
  if (tab === null) return null;
  const mine = (await store.list()).filter(
    (q) => q.tab === tab && q.client !== client && isObject(q.history),
  );
  mine.sort((a, b) => b.saved - a.saved);
  if (!mine.length) return null;
  try {
    return History.fromWire(mine[0].history).detached();
  } catch {
    return null;
  }
}
