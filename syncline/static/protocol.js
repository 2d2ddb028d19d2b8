// The client side of the wire protocol, sans I/O: a port of syncline/client/protocol.py
// (docs/protocol.md is the contract; tests/fixtures/protocol/ checks both ports).
//
// Theory of operation. A ClientProtocol wraps a Replica. The I/O layer tells it when a
// connection opens (connectionMade) and closes (connectionLost), feeds it every frame the
// server sends (receive), and after every call sends what dataToSend returns. Local
// edits go straight to the replica (protocol.replica.update(...)); dataToSend picks them
// up. Time (in seconds) is passed in, so tests need no clock. The state machine:
//
//   state       input                          -> state      output
//   ----------  -----------------------------  ----------  ------------------------------
//   closed      connectionMade                 hello_sent  hello (acked: answers held)
//   hello_sent  welcome                        live        mut for every unacked mutation,
//                                                          then sub since the cursor (the
//                                                          queries held), sub (the others)
//   hello_sent  error reload, unauthorized,    failed      event "reload" / "error"
//   live          version, client_id_taken
//   live        snapshot / changes             live        replica updated; events
//   live        ack / reject                   live        replica settles; events; resends
//   any         ping                           (same)      pong
//   any         connectionLost                 closed      (all is sent again next time)
//   failed      anything                       failed      nothing: the app must reload
//
// Mutations (invariant 3). Each unacked mutation is sent once per connection, in id
// order, at most maxInFlight unanswered at a time. The server answers a connection's
// frames in order, so a temporary refusal (reject retry/rate, or an error rate naming the
// mutation) of mutation n is followed by gap refusals of those sent after it: the
// protocol waits until everything in flight is answered and retry_after has passed, then
// sends again from n. A gap that names an id below every mutation it still holds means
// the server never saw those ids (a new database, or an id the server refused without
// using it up): the unacked mutations are renumbered from there. Resending is always
// safe: an id the server already applied is answered with the original ack (replay).
//
// Subscriptions (invariants 6, 7). `wanted` holds every query the application asked for.
// On welcome, the queries the replica holds are resumed by one sub since its cursor (the
// first sub of the connection); any others get a sub without since, answered by a
// snapshot. The subs follow the unacked mutations, so acks of mutations the server had
// already applied arrive before the changes that contain them, and the view never shows
// such a mutation twice. A snapshot marked reset replaces the queries' data; pending
// mutations stay on top of it. A welcome from another database (another epoch) makes
// every pending mutation unacked again, so each is sent to the new database.

import { CursorError, formatCursor } from "./cursor.js";
import { cloneJson, dict, getOwn, hasOwn, isObject } from "./json.js";
import { mutFrame, recordKey } from "./ops.js";
import { parseQuery } from "./query.js";
import { need } from "./wire.js";

/** @typedef {import("./json.js").Dict} Dict */
/** @typedef {import("./replica.js").Replica} Replica */
/** @typedef {import("./replica.js").ReplicaEvent} ReplicaEvent */
/** @typedef {import("./replica.js").Draft} Draft */

export const PROTOCOL_VERSION = 1;

/** @typedef {"closed" | "hello_sent" | "live" | "failed"} State */

/**
 * @typedef {"changed" | "conflict" | "overwritten" | "merged" | "rejected" | "dropped" | "ack" | "reset" | "reload" | "error" | "status"} EventKind
 */

/**
 * Something the application may want to know; `kind` says which fields are set.
 * @typedef {object} ClientEvent
 * @property {EventKind} kind
 * @property {number | null} mutationId
 * @property {string[]} keys  "collection:id" of the records concerned
 * @property {string[]} fields
 * @property {Draft | null} draft
 * @property {Dict | null} error
 * @property {Dict | null} frame
 * @property {string | null} reason
 * @property {string | null} status
 */

/** `error` codes after which reconnecting cannot help. */
export const FATAL_CODES = new Set(["reload", "unauthorized", "version", "client_id_taken"]);
const TEMPORARY_ERRORS = new Set(["rate", "retry"]);
const CURSOR_ERRORS = new Set(["cursor", "cursor_ahead", "cursor_too_old", "cursor_reset"]);
const SUB_ERRORS = new Set(["query", "limit", "bad_frame"]);

/**
 * @param {EventKind} kind
 * @param {Partial<ClientEvent>} [rest]
 * @returns {ClientEvent}
 */
export function clientEvent(kind, rest = {}) {
  return {
    kind,
    mutationId: null,
    keys: [],
    fields: [],
    draft: null,
    error: null,
    frame: null,
    reason: null,
    status: null,
    ...rest,
  };
}

/** @param {ReplicaEvent} e @returns {ClientEvent} */
function fromReplica(e) {
  return clientEvent(e.kind, {
    mutationId: e.mutationId,
    keys: e.keys,
    fields: e.fields,
    draft: e.draft,
    error: e.error,
  });
}

/** @param {ReplicaEvent[]} events @returns {ClientEvent[]} */
function fromReplicaAll(events) {
  return events.map(fromReplica);
}

/**
 * A frame as a fresh dict without some of its keys.
 * @param {Dict} frame
 * @param {string[]} drop
 * @returns {Dict}
 */
function without(frame, drop) {
  const out = dict();
  for (const k of Object.keys(frame)) if (!drop.includes(k)) out[k] = cloneJson(frame[k]);
  return out;
}

/** @param {unknown} value @returns {number} */
function toInt(value) {
  const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
  if (typeof n !== "number" || !Number.isInteger(n))
    throw new TypeError(`not an integer: ${String(value)}`);
  return n;
}

/** @param {unknown} value @returns {number} */
function toSeconds(value) {
  const n = typeof value === "string" && value.trim() !== "" ? Number(value) : value;
  if (typeof n !== "number" || Number.isNaN(n))
    throw new TypeError(`not a number: ${String(value)}`);
  return n;
}

/**
 * @typedef {object} ProtocolOptions
 * @property {string | null} [schemaHash]  sent in hello; default: the replica's schema hash,
 *   else the hash of the first embedded state hydrated
 * @property {Dict | null} [credentials]  sent as hello.auth
 * @property {number} [maxInFlight]
 * @property {[number, number]} [stallBackoff]  seconds: first and longest wait between
 *   resends that made no progress
 * @property {number} [defaultRetryAfter]  seconds, when a refusal names none
 */

/** One client's protocol state across connections (see the comment at the top). */
export class ClientProtocol {
  /**
   * @param {Replica} replica
   * @param {ProtocolOptions} [options]
   */
  constructor(replica, options = {}) {
    this.replica = replica;
    /** @type {string | null} */
    this.schemaHash = options.schemaHash ?? replica.schema.hash ?? null;
    this.credentials = options.credentials
      ? /** @type {Dict} */ (cloneJson(options.credentials))
      : null;
    this.maxInFlight = options.maxInFlight ?? 50;
    this.stallBackoff = options.stallBackoff ?? [0.05, 5.0];
    this.defaultRetryAfter = options.defaultRetryAfter ?? 0.1;
    /** @type {State} */
    this.state = "closed";
    /** @type {Map<string, Dict>} every query asked for, as written */
    this.wanted = new Map();
    /** @type {string | null} */
    this.epoch = null;
    /** @type {number | null} */
    this.serverLast = null;
    /** @type {Dict | null} the error frame that stopped this client */
    this.fatal = null;
    /** @type {string | null} the server sent something unusable: close and reconnect */
    this.closeRequested = null;
    /** @type {Dict[]} */
    this._out = [];
    /** @type {Dict[]} */
    this._subsAfterWelcome = [];
    /** @type {Set<string>} wanted queries that need a snapshot */
    this._unanswered = new Set();
    /** @type {Set<string>[]} subs sent, not yet answered */
    this._subBatches = [];
    this._resuming = false; // a sub since the cursor is not answered yet
    /** @type {Map<string, Dict>} */
    this._resumeQueries = new Map();
    this._sentUpto = 0;
    /** @type {Set<number>} */
    this._inFlight = new Set();
    /** @type {number | null} */
    this._rewindTo = null;
    /** @type {number | null} */
    this._holdUntil = null;
    this._stalls = 0; // resends since the last answer that made progress
    this._stallWaited = false;
  }

  // --- what the application asks for -------------------------------------------------

  /**
   * Build the replica from a page's embedded state (docs/protocol.md, Embedded state)
   * without fetching; the next connection resumes from its cursor.
   * @param {unknown} state  {v, schema, cursor, queries, records}
   * @returns {ClientEvent[]}
   */
  hydrate(state) {
    if (this.state !== "closed") {
      throw new Error("hydrate before connecting: the connection has its own cursor");
    }
    if (!isObject(state)) throw new TypeError("the embedded state is not an object");
    const version = hasOwn(state, "v") ? state.v : PROTOCOL_VERSION;
    if (version !== PROTOCOL_VERSION) {
      throw new Error(`embedded state of protocol version ${String(version)} is not supported`);
    }
    const pageSchema = hasOwn(state, "schema") ? state.schema : this.schemaHash;
    if (this.schemaHash === null && typeof pageSchema === "string") this.schemaHash = pageSchema;
    if (pageSchema !== this.schemaHash) {
      throw new Error(
        `the page was rendered with schema ${String(pageSchema)}, this client has ` +
          `${String(this.schemaHash)}: reload with matching code`,
      );
    }
    const snapshot = {
      cursor: need(state, "cursor"),
      queries: need(state, "queries"),
      records: need(state, "records"),
    };
    const events = this._loadSnapshot(snapshot);
    const queries = /** @type {Dict} */ (snapshot.queries);
    for (const qid of Object.keys(queries)) {
      this.wanted.set(qid, /** @type {Dict} */ (cloneJson(queries[qid])));
      this._unanswered.delete(qid);
    }
    return events;
  }

  /**
   * Ask for queries ({query id: query}); a live connection sends `sub` now, otherwise the
   * next one does. Throws a QueryError for a bad query.
   * @param {Record<string, unknown>} queries
   */
  subscribe(queries) {
    /** @type {Map<string, Dict>} */
    const wires = new Map();
    for (const qid of Object.keys(queries)) {
      const q = queries[qid];
      parseQuery(q, this.replica.schema); // refuse a bad query here, not later
      wires.set(qid, /** @type {Dict} */ (cloneJson(q))); // sent as written
    }
    if (!wires.size) return;
    for (const [qid, q] of wires) {
      this.wanted.set(qid, q);
      this._unanswered.add(qid);
    }
    if (this.state === "live") this._sendSub(wires);
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
   * Live, every subscription answered, and no pending mutation (each acked and reached
   * by the cursor, invariant 8).
   */
  get synced() {
    return (
      this.state === "live" &&
      !this._resuming &&
      this._subBatches.length === 0 &&
      this._unanswered.size === 0 &&
      this.replica.pending.length === 0
    );
  }

  /**
   * The highest mutation id such that this client holds the answer to it and to every id
   * below it (hello.acked).
   */
  get acked() {
    const unacked = this.replica.pending.filter((p) => !p.acked).map((p) => p.mutation.id);
    return unacked.length ? Math.min(...unacked) - 1 : this.replica.nextId - 1;
  }

  // --- the transport -----------------------------------------------------------------

  connectionMade() {
    if (this.state === "failed") return;
    this._resetConnection();
    this.state = "hello_sent";
    /** @type {Dict} */
    const hello = {
      t: "hello",
      v: PROTOCOL_VERSION,
      client: this.replica.clientId,
      schema: this.schemaHash,
      acked: this.acked,
    };
    if (this.credentials !== null) hello.auth = this.credentials;
    this._out.push(hello);
  }

  connectionLost() {
    if (this.state !== "failed") this.state = "closed";
    this._resetConnection();
  }

  _resetConnection() {
    this._out = [];
    this._subsAfterWelcome = [];
    this._subBatches = [];
    this._resuming = false;
    this._resumeQueries = new Map();
    this._sentUpto = 0;
    this._inFlight.clear();
    this._rewindTo = null;
    this._holdUntil = null;
    this._stalls = 0;
    this._stallWaited = false;
    this.closeRequested = null;
  }

  /**
   * Frames to send now, in order.
   * @param {number} now  seconds, on any steady clock
   * @returns {Dict[]}
   */
  dataToSend(now) {
    const out = this._out;
    this._out = [];
    if (this.state !== "live") return out;
    out.push(...this._mutationsToSend(now));
    out.push(...this._subsAfterWelcome);
    this._subsAfterWelcome = [];
    return out;
  }

  /** @param {number} now @returns {Dict[]} */
  _mutationsToSend(now) {
    /** @type {Dict[]} */
    const out = [];
    if (this._holdUntil !== null) {
      if (now < this._holdUntil) return out;
      this._holdUntil = null;
    }
    if (this._rewindTo !== null) {
      if (this._inFlight.size) return out; // wait for every answer to what was sent before
      if (this._stalls && !this._stallWaited) {
        // The last resend made no progress: wait longer each time, never spin.
        const [base, most] = this.stallBackoff;
        this._stallWaited = true;
        this._holdUntil = now + Math.min(most, base * 2 ** (this._stalls - 1));
        return out;
      }
      let unacked = this.replica.unacked().map((m) => m.id);
      if (unacked.length && this._rewindTo < unacked[0]) {
        this._renumber(this._rewindTo);
        unacked = this.replica.unacked().map((m) => m.id);
      }
      const start = unacked.length ? Math.min(this._rewindTo, ...unacked) : this._rewindTo;
      this._sentUpto = start - 1;
      this._rewindTo = null;
      this._stalls += 1;
      this._stallWaited = false;
    }
    for (const m of this.replica.unacked()) {
      if (m.id <= this._sentUpto) continue;
      if (this._inFlight.size >= this.maxInFlight) break;
      out.push(mutFrame(m));
      this._sentUpto = m.id;
      this._inFlight.add(m.id);
    }
    return out;
  }

  /**
   * When dataToSend may have something new without any input: the end of a retry_after
   * wait. Null: only input can change what is to send.
   * @returns {number | null}
   */
  nextDeadline() {
    return this.state === "live" ? this._holdUntil : null;
  }

  /**
   * Decode one frame and receive it.
   * @param {string} data
   * @param {number} now
   * @returns {ClientEvent[]}
   */
  receiveText(data, now) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch (exc) {
      return this._peerError("bad_json", `the server sent invalid JSON: ${String(exc)}`);
    }
    if (!isObject(frame))
      return this._peerError("bad_frame", "the server sent a frame that is not an object");
    return this.receive(frame, now);
  }

  /**
   * Take one decoded server frame; return what happened, for the application.
   * @param {Dict} frame
   * @param {number} now
   * @returns {ClientEvent[]}
   */
  receive(frame, now) {
    if (this.state === "failed") return [];
    const kind = getOwn(frame, "t");
    const handler = typeof kind === "string" && hasOwn(HANDLERS, kind) ? HANDLERS[kind] : undefined;
    if (handler === undefined)
      return this._peerError("unknown_frame", `unknown frame type ${JSON.stringify(kind)}`);
    try {
      return handler.call(this, frame, now);
    } catch (exc) {
      if (exc instanceof CursorError) {
        // The stream does not follow this replica (invariant 7): resume afresh.
        return this._peerError("cursor", exc.message);
      }
      return this._peerError("bad_frame", `malformed ${kind} frame: ${String(exc)}`);
    }
  }

  /**
   * The server sent something this client cannot use: reconnect and resume.
   * @param {string} code
   * @param {string} message
   * @returns {ClientEvent[]}
   */
  _peerError(code, message) {
    this.closeRequested = `${code}: ${message}`;
    const error = dict();
    error.code = code;
    error.message = message;
    return [clientEvent("error", { error })];
  }

  // --- frames from the server --------------------------------------------------------

  /** @param {Dict} frame @param {number} _now @returns {ClientEvent[]} */
  _onWelcome(frame, _now) {
    if (this.state !== "hello_sent") return [];
    this.epoch = String(need(frame, "epoch"));
    this.serverLast = toInt(getOwn(frame, "last") ?? 0);
    const cursor = this.replica.cursor;
    if (cursor !== null && cursor.epoch !== this.epoch) {
      // Another database: whatever it acknowledged lives in the old one.
      for (const p of this.replica.pending) {
        p.acked = false;
        p.seq = null;
      }
    }
    // The server never saw ids below our first unacked one: it lost them (another
    // database) or refused them without using them up. Take the ids it expects.
    this._renumber(this.serverLast + 1);
    this.state = "live";
    /** @type {Map<string, Dict>} */
    let resume = new Map();
    for (const [q, w] of this.wanted) {
      if (!this._unanswered.has(q) && this.replica.queries.has(q)) resume.set(q, w);
    }
    if (!resume.size || cursor === null) resume = new Map();
    /** @type {Map<string, Dict>} */
    const fresh = new Map();
    for (const [q, w] of this.wanted) if (!resume.has(q)) fresh.set(q, w);
    // Subs go after the first mutations (dataToSend): answers to mutations the server
    // already applied (a lost ack) then arrive before the changes that hold them, so the
    // view never counts them twice.
    if (resume.size && cursor !== null) {
      this._resuming = true;
      this._resumeQueries = resume;
      this._subsAfterWelcome.push({
        t: "sub",
        queries: queriesObject(resume),
        since: formatCursor(cursor),
      });
    }
    if (fresh.size) this._sendSub(fresh, this._subsAfterWelcome);
    return [];
  }

  /**
   * A sub without since: answered by a snapshot at the head.
   * @param {Map<string, Dict>} queries
   * @param {Dict[]} [out]
   */
  _sendSub(queries, out) {
    for (const qid of queries.keys()) this._unanswered.add(qid);
    this._subBatches.push(new Set(queries.keys()));
    (out ?? this._out).push({ t: "sub", queries: queriesObject(queries) });
  }

  /** @param {Dict} frame @param {number} _now @returns {ClientEvent[]} */
  _onSnapshot(frame, _now) {
    const queries = need(frame, "queries");
    if (!isObject(queries)) throw new TypeError("queries must be an object");
    const qids = new Set(Object.keys(queries));
    const events = this._loadSnapshot(frame);
    if (this._subBatches.length && isSubset(this._subBatches[0], qids)) this._subBatches.shift();
    const reset = getOwn(frame, "reset") ?? null;
    if (reset !== null && this._resuming && isSubset(new Set(this._resumeQueries.keys()), qids)) {
      this._resuming = false;
    }
    for (const q of qids) this._unanswered.delete(q);
    if (reset !== null) events.push(clientEvent("reset", { reason: String(reset) }));
    return events;
  }

  /** @param {unknown} snapshot @returns {ClientEvent[]} */
  _loadSnapshot(snapshot) {
    return fromReplicaAll(this.replica.loadSnapshot(snapshot));
  }

  /** @param {Dict} frame @param {number} _now @returns {ClientEvent[]} */
  _onChanges(frame, _now) {
    const events = this.replica.applyChanges(frame);
    this._resuming = false;
    return fromReplicaAll(events);
  }

  /** @param {Dict} frame @param {number} _now @returns {ClientEvent[]} */
  _onAck(frame, _now) {
    const mid = toInt(need(frame, "mid"));
    this._answered(mid);
    const entry = this.replica.pending.find((p) => p.mutation.id === mid);
    const events = [clientEvent("ack", { mutationId: mid, frame: without(frame, []) })];
    if (entry !== undefined && !entry.acked) {
      const ops = entry.mutation.ops;
      const results = /** @type {unknown[]} */ (getOwn(frame, "results") || []);
      results.forEach((result, i) => {
        if (getOwn(result, "status") === "dropped" && i < ops.length) {
          const reason = getOwn(result, "reason");
          events.push(
            clientEvent("dropped", {
              mutationId: mid,
              keys: [recordKey(ops[i].c, ops[i].id)],
              reason: reason === undefined || reason === null ? null : String(reason),
            }),
          );
        }
      });
    }
    const wire = without(frame, ["t"]);
    if (!this.wanted.size) {
      // Without subscriptions the server sends no changes, so the cursor would never
      // reach the seq: there is no view to flicker, end the mutation now.
      wire.seq = null;
    }
    events.push(...fromReplicaAll(this.replica.applyAck(wire)));
    return events;
  }

  /** @param {Dict} frame @param {number} now @returns {ClientEvent[]} */
  _onReject(frame, now) {
    const mid = toInt(need(frame, "mid"));
    if (hasOwn(frame, "permanent") ? frame.permanent : true) {
      this._answered(mid);
      const error = without(frame, ["t", "mid", "permanent", "replay"]);
      const ack = { mid, status: "rejected", seq: null, error };
      return fromReplicaAll(this.replica.applyAck(ack));
    }
    this._inFlight.delete(mid);
    if (getOwn(frame, "code") === "gap") {
      this._rewind(toInt(need(frame, "expected")));
    } else if (this.replica.unacked().some((m) => m.id === mid)) {
      const retryAfter = getOwn(frame, "retry_after") ?? null;
      const delay = retryAfter === null ? this.defaultRetryAfter : toSeconds(retryAfter);
      this._hold(now + delay);
      this._rewind(mid);
    }
    return [];
  }

  /** @param {Dict} frame @param {number} now @returns {ClientEvent[]} */
  _onError(frame, now) {
    const code = String(getOwn(frame, "code") ?? "error");
    const ref = getOwn(frame, "ref");
    if (FATAL_CODES.has(code)) {
      this.state = "failed";
      this.fatal = without(frame, []);
      const kind = code === "reload" ? "reload" : "error";
      return [clientEvent(kind, { error: without(frame, []), frame: without(frame, []) })];
    }
    const events = [clientEvent("error", { error: without(frame, []), frame: without(frame, []) })];
    const unacked = new Set(this.replica.unacked().map((m) => m.id));
    if (typeof ref === "number" && Number.isInteger(ref) && unacked.has(ref)) {
      if (TEMPORARY_ERRORS.has(code)) {
        this._inFlight.delete(ref);
        const retryAfter = getOwn(frame, "retry_after") ?? null;
        const delay = retryAfter === null ? this.defaultRetryAfter : toSeconds(retryAfter);
        this._hold(now + delay);
        this._rewind(ref);
        return events;
      }
      // Refused without using its id up: drop it; the ids after it will be renumbered
      // when the server asks for this one again (a gap).
      this._answered(ref);
      const error = without(frame, ["t", "ref"]);
      const ack = { mid: ref, status: "rejected", seq: null, error };
      return [...events, ...fromReplicaAll(this.replica.applyAck(ack))];
    }
    if (CURSOR_ERRORS.has(code) && this._resuming) {
      // The server cannot continue from this cursor: take fresh snapshots.
      this._resuming = false;
      const queries = this._resumeQueries;
      this._resumeQueries = new Map();
      this._sendSub(queries);
    } else if (SUB_ERRORS.has(code) && (this._resuming || this._subBatches.length)) {
      // Subs are answered in order, before anything sent after them.
      /** @type {Iterable<string>} */
      let refused;
      if (this._resuming) {
        this._resuming = false;
        refused = [...this._resumeQueries.keys()];
      } else {
        refused = /** @type {Set<string>} */ (this._subBatches.shift());
      }
      for (const qid of [...refused]) {
        this.wanted.delete(qid);
        this._unanswered.delete(qid);
      }
    }
    return events;
  }

  /** @param {Dict} frame @param {number} _now @returns {ClientEvent[]} */
  _onPing(frame, _now) {
    const n = getOwn(frame, "n") ?? null;
    this._out.push(n === null ? { t: "pong" } : { t: "pong", n });
    return [];
  }

  /** @returns {ClientEvent[]} */
  _onPong() {
    return [];
  }

  // --- mutation bookkeeping ----------------------------------------------------------

  /** @param {number} mid */
  _answered(mid) {
    this._inFlight.delete(mid);
    this._stalls = 0;
  }

  /** @param {number} until */
  _hold(until) {
    this._holdUntil = this._holdUntil === null ? until : Math.max(this._holdUntil, until);
  }

  /** @param {number} mid */
  _rewind(mid) {
    this._rewindTo = this._rewindTo === null ? mid : Math.min(this._rewindTo, mid);
  }

  /**
   * Give the unacked mutations the ids first, first + 1, ... (the server never saw the
   * ids they had). Only lowers ids, and never below an answered one.
   * @param {number} first
   */
  _renumber(first) {
    const unacked = this.replica.pending.filter((p) => !p.acked);
    const ackedIds = this.replica.pending.filter((p) => p.acked).map((p) => p.mutation.id);
    if (!unacked.length || first >= unacked[0].mutation.id) return;
    if (ackedIds.length && first <= Math.max(...ackedIds)) return;
    let newId = first;
    for (const p of unacked) {
      p.mutation = { ...p.mutation, id: newId };
      newId += 1;
    }
    this.replica.nextId = newId;
  }
}

/** @typedef {(this: ClientProtocol, frame: Dict, now: number) => ClientEvent[]} Handler */

/** @type {Record<string, Handler>} */
const HANDLERS = Object.assign(Object.create(null), {
  welcome: ClientProtocol.prototype._onWelcome,
  snapshot: ClientProtocol.prototype._onSnapshot,
  changes: ClientProtocol.prototype._onChanges,
  ack: ClientProtocol.prototype._onAck,
  reject: ClientProtocol.prototype._onReject,
  error: ClientProtocol.prototype._onError,
  ping: ClientProtocol.prototype._onPing,
  pong: ClientProtocol.prototype._onPong,
});

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
