// Which queries the client wants, and which of them the server has answered (invariants
// 6, 7), across connections: a port of the subscription bookkeeping of
// syncline/protocol/client.py.
//
// `wanted` holds every query the application asked for, as written. On welcome, the
// queries the replica holds are resumed by one sub since its cursor (the first sub of
// the connection); any others get a sub without since, answered by a snapshot. Subs are
// answered in order, so a refusal (query, limit, bad_frame) names the oldest sub not
// yet answered: its queries are no longer wanted. A cursor refusal of the resuming sub
// asks for fresh snapshots instead. The replica holds the queries' data (and which
// records each holds); this holds only what was asked and what is still unanswered.

import { formatCursor } from "./cursor.js";
import { cloneJson, dict } from "./json.js";
import { parseQuery } from "./query.js";

/** @typedef {import("./json.js").Dict} Dict */
/** @typedef {import("./cursor.js").Cursor} Cursor */
/** @typedef {import("./replica.js").Replica} Replica */

const CURSOR_ERRORS = new Set(["cursor", "cursor_ahead", "cursor_too_old", "cursor_reset"]);
const SUB_ERRORS = new Set(["query", "limit", "bad_frame"]);

export class Subscriptions {
  /** @param {Replica} replica  where the answers go (its schema checks queries) */
  constructor(replica) {
    this.replica = replica;
    /** @type {Map<string, Dict>} every query asked for, as written */
    this.wanted = new Map();
    /** @type {Set<string>} wanted queries that need a snapshot */
    this._unanswered = new Set();
    /** @type {Set<string>[]} subs sent on this connection, not yet answered */
    this._batches = [];
    /** A sub since the cursor is not answered yet. */
    this.resuming = false;
    /** @type {Map<string, Dict>} the queries of that sub */
    this._resumeQueries = new Map();
  }

  /** A new connection: no sub is on its way. */
  reset() {
    this._batches = [];
    this.resuming = false;
    this._resumeQueries = new Map();
  }

  /** Nothing asked for is unanswered. */
  get settled() {
    return !this.resuming && this._batches.length === 0 && this._unanswered.size === 0;
  }

  /**
   * The page's embedded queries: wanted, and answered by the page.
   * @param {Dict} queries
   */
  hydrated(queries) {
    for (const qid of Object.keys(queries)) {
      this.wanted.set(qid, /** @type {Dict} */ (cloneJson(queries[qid])));
      this._unanswered.delete(qid);
    }
  }

  /**
   * Want these queries (a QueryError for a bad one, before anything changes).
   * @param {Record<string, unknown>} queries
   * @returns {Map<string, Dict>}  the queries as they will be sent
   */
  want(queries) {
    /** @type {Map<string, Dict>} */
    const wires = new Map();
    for (const qid of Object.keys(queries)) {
      const q = queries[qid];
      parseQuery(q, this.replica.schema); // refuse a bad query here, not later
      wires.set(qid, /** @type {Dict} */ (cloneJson(q))); // sent as written
    }
    for (const [qid, q] of wires) {
      this.wanted.set(qid, q);
      this._unanswered.add(qid);
    }
    return wires;
  }

  /**
   * Whether each of these queries has its data (or was refused: not wanted).
   * @param {Iterable<string>} queryIds
   * @returns {boolean}
   */
  answered(queryIds) {
    for (const qid of queryIds) {
      if (this.wanted.has(qid) && !(this.replica.queries.has(qid) && !this._unanswered.has(qid))) {
        return false;
      }
    }
    return true;
  }

  /**
   * A sub without since, answered by a snapshot at the head.
   * @param {Map<string, Dict>} queries
   * @returns {Dict}
   */
  sub(queries) {
    for (const qid of queries.keys()) this._unanswered.add(qid);
    this._batches.push(new Set(queries.keys()));
    return { t: "sub", queries: queriesObject(queries) };
  }

  /**
   * The subs to send after welcome: one since the cursor for the queries the replica
   * holds, one without for the others.
   * @param {Cursor | null} cursor  the replica's
   * @returns {Dict[]}
   */
  onWelcome(cursor) {
    /** @type {Dict[]} */
    const out = [];
    /** @type {Map<string, Dict>} */
    let resume = new Map();
    for (const [q, w] of this.wanted) {
      if (!this._unanswered.has(q) && this.replica.queries.has(q)) resume.set(q, w);
    }
    if (!resume.size || cursor === null) resume = new Map();
    /** @type {Map<string, Dict>} */
    const fresh = new Map();
    for (const [q, w] of this.wanted) if (!resume.has(q)) fresh.set(q, w);
    if (resume.size && cursor !== null) {
      this.resuming = true;
      this._resumeQueries = resume;
      out.push({ t: "sub", queries: queriesObject(resume), since: formatCursor(cursor) });
    }
    if (fresh.size) out.push(this.sub(fresh));
    return out;
  }

  /**
   * A snapshot answered these queries.
   * @param {Set<string>} qids
   * @param {unknown} reset  the snapshot's reset reason, or null
   */
  onSnapshot(qids, reset) {
    if (this._batches.length && isSubset(this._batches[0], qids)) this._batches.shift();
    if (reset !== null && this.resuming && isSubset(new Set(this._resumeQueries.keys()), qids)) {
      this.resuming = false;
    }
    for (const q of qids) this._unanswered.delete(q);
  }

  /** Changes arrived: the sub since the cursor was taken. */
  onChanges() {
    this.resuming = false;
  }

  /**
   * An error that names no mutation: perhaps a refusal of the oldest sub.
   * @param {string} code
   * @returns {Dict[]}  subs to send instead (fresh snapshots after a cursor refusal)
   */
  onError(code) {
    if (CURSOR_ERRORS.has(code) && this.resuming) {
      // The server cannot continue from this cursor: take fresh snapshots.
      this.resuming = false;
      const queries = this._resumeQueries;
      this._resumeQueries = new Map();
      return [this.sub(queries)];
    }
    if (SUB_ERRORS.has(code) && (this.resuming || this._batches.length)) {
      // Subs are answered in order, before anything sent after them.
      /** @type {Iterable<string>} */
      let refused;
      if (this.resuming) {
        this.resuming = false;
        refused = [...this._resumeQueries.keys()];
      } else {
        refused = /** @type {Set<string>} */ (this._batches.shift());
      }
      for (const qid of [...refused]) {
        this.wanted.delete(qid);
        this._unanswered.delete(qid);
      }
    }
    return [];
  }
}

/**
 * {query id: query} as a null-prototype object (a query id may be "__proto__").
 * @param {Map<string, Dict>} queries
 * @returns {Dict}
 */
function queriesObject(queries) {
  const out = dict();
  for (const [qid, q] of queries) out[qid] = q;
  return out;
}

/**
 * @param {Set<string>} a
 * @param {Set<string>} b
 * @returns {boolean}  every element of a is in b
 */
function isSubset(a, b) {
  for (const x of a) if (!b.has(x)) return false;
  return true;
}
