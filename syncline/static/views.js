// What the page shows of the replica, kept current: elements bound with data-sl-id /
// data-sl-field patched in place (bind.js), and live queries (`sync.query(...)`), each an
// Observable of rows run again on the local replica after every change to its
// collection. An unwatched query is not run; when watched again it runs only if records
// were shown since (`renders` counts those times).

import { patchKeys } from "./bind.js";
import { hasOwn } from "./json.js";
import { Value, readonly, report } from "./observable.js";
import { splitKey } from "./ops.js";

/** @typedef {import("./json.js").Dict} Dict */
/** @typedef {import("./query.js").Query} Query */
/** @typedef {import("./replica.js").Replica} Replica */
/** @typedef {import("./bind.js").Renderer} Renderer */
/**
 * @template T
 * @typedef {import("./observable.js").Observable<T>} Observable
 */

export class Views {
  /**
   * @param {Replica} replica
   * @param {ParentNode | null} root  where bound elements live (null: nowhere)
   * @param {Renderer} [render]  custom text for bound fields
   */
  constructor(replica, root, render) {
    this.replica = replica;
    this.root = root;
    this.renderer = render;
    /** @type {Set<{collection: string, refresh: () => void}>} the watched queries */
    this._queries = new Set();
    /** How many times changed records were shown: a query's rows are current if none since. */
    this.renders = 0;
  }

  /**
   * Show these changed records ("collection:id"): patch the page, refresh the watched
   * queries of their collections.
   * @param {Set<string>} keys
   */
  render(keys) {
    this.renders++;
    if (this.root) {
      try {
        patchKeys(this.root, keys, (c, id) => this.replica.get(c, id), this.renderer);
      } catch (exc) {
        report(exc);
      }
    }
    const collections = new Set([...keys].map((k) => splitKey(k)[0]));
    for (const q of [...this._queries]) if (collections.has(q.collection)) q.refresh();
  }

  /**
   * A live query on the replica: its rows, updated after every change that alters them.
   * @param {Query} parsed
   * @returns {Observable<Dict[]>}
   */
  query(parsed) {
    /** @type {Value<Dict[]>} */
    const value = new Value(/** @type {Dict[]} */ ([]), {
      equals: sameRows,
      start: () => {
        // Unwatched, the rows may have gone stale; run the query again only if so.
        if (seen !== this.renders) handle.refresh();
        this._queries.add(handle);
      },
      stop: () => this._queries.delete(handle),
    });
    let seen = this.renders;
    const handle = {
      collection: parsed.collection,
      refresh: () => {
        seen = this.renders;
        value.set(this.replica.query(parsed));
      },
    };
    handle.refresh();
    return readonly(value);
  }

  /** Stop refreshing every query (the client closed). */
  clear() {
    this._queries.clear();
  }
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
