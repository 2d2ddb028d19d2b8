// The client side of the wire protocol, sans I/O: a port of syncline/protocol/client.py
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
// Mutations (invariant 3): which unacked mutations go out, when, and from where they are
// sent again after a refusal is the send window's job (sending.js). Subscriptions
// (invariants 6, 7): what is wanted and what is answered is Subscriptions' job
// (subscriptions.js); the replica holds the data. On welcome the subs follow the
// unacked mutations, so acks of mutations the server had already applied arrive before
// the changes that contain them, and the view never shows such a mutation twice. A
// snapshot marked reset replaces the queries' data; pending mutations stay on top of it.
// A welcome from another database (another epoch) makes every pending mutation unacked
// again, so each is sent to the new database.

import { CursorError } from "./cursor.js";
import { cloneJson, dict, getOwn, hasOwn, isObject } from "./json.js";
import { recordKey } from "./ops.js";
import { PresenceRooms } from "./presence.js";
import { SendWindow } from "./sending.js";
import { Subscriptions } from "./subscriptions.js";
import { need } from "./wire.js";

/** @typedef {import("./json.js").Dict} Dict */
/** @typedef {import("./replica.js").Replica} Replica */
/** @typedef {import("./replica.js").ReplicaEvent} ReplicaEvent */
/** @typedef {import("./replica.js").Draft} Draft */

export const PROTOCOL_VERSION = 1;

/** @typedef {"closed" | "hello_sent" | "live" | "failed"} State */

/**
 * @typedef {"changed" | "conflict" | "overwritten" | "merged" | "rejected" | "dropped" | "undo-partial" | "ack" | "reset" | "reload" | "error" | "status" | "presence"} EventKind
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
 * @property {import("./presence.js").Change[]} [changes]  "presence": what changed (reason:
 *   the room's name; error: set when the room refused this client)
 */

/** `error` codes after which reconnecting cannot help. */
export const FATAL_CODES = new Set(["reload", "unauthorized", "version", "client_id_taken"]);
// `retry` and the store conditions that refuse writes for a while (docs/protocol.md).
const TEMPORARY_ERRORS = new Set(["rate", "retry", "storage_full", "read_only", "unavailable"]);

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
    this.defaultRetryAfter = options.defaultRetryAfter ?? 0.1;
    /** @type {State} */
    this.state = "closed";
    this.subscriptions = new Subscriptions(replica);
    this.window = new SendWindow(replica, options);
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
    /** Presence rooms joined (presence.js), joined again after every welcome. */
    this.presence = new PresenceRooms();
  }

  /**
   * Queue a presence frame (join, presence, leave) if live; after a welcome, every
   * room held is joined again anyway.
   * @param {Dict | null} frame
   */
  sendPresence(frame) {
    if (frame !== null && this.state === "live") this._out.push(frame);
  }

  /** @type {Map<string, Dict>} every query asked for, as written */
  get wanted() {
    return this.subscriptions.wanted;
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
    this.subscriptions.hydrated(/** @type {Dict} */ (snapshot.queries));
    return events;
  }

  /**
   * Ask for queries ({query id: query}); a live connection sends `sub` now, otherwise the
   * next one does. Throws a QueryError for a bad query.
   * @param {Record<string, unknown>} queries
   */
  subscribe(queries) {
    const wires = this.subscriptions.want(queries);
    if (wires.size && this.state === "live") this._out.push(this.subscriptions.sub(wires));
  }

  /**
   * Whether each of these queries has its data (or was refused: not wanted).
   * @param {Iterable<string>} queryIds
   * @returns {boolean}
   */
  answered(queryIds) {
    return this.subscriptions.answered(queryIds);
  }

  /**
   * Live, every subscription answered, and no pending mutation (each acked and reached
   * by the cursor, invariant 8).
   */
  get synced() {
    return (
      this.state === "live" && this.subscriptions.settled && this.replica.pending.length === 0
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
    for (const r of this.presence.rooms.values()) r.answered = false; // stale until rejoined
  }

  _resetConnection() {
    this._out = [];
    this._subsAfterWelcome = [];
    this.subscriptions.reset();
    this.window.reset();
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
    out.push(...this.window.next(now));
    out.push(...this._subsAfterWelcome);
    this._subsAfterWelcome = [];
    return out;
  }

  /**
   * When dataToSend may have something new without any input: the end of a retry_after
   * wait. Null: only input can change what is to send.
   * @returns {number | null}
   */
  nextDeadline() {
    return this.state === "live" ? this.window.holdUntil : null;
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
    this.window.renumber(this.serverLast + 1);
    this.state = "live";
    // Subs go after the first mutations (dataToSend): answers to mutations the server
    // already applied (a lost ack) then arrive before the changes that hold them, so the
    // view never counts them twice.
    this._subsAfterWelcome.push(...this.subscriptions.onWelcome(cursor));
    this._subsAfterWelcome.push(...this.presence.onWelcome());
    return [];
  }

  /** @param {Dict} frame @param {number} _now @returns {ClientEvent[]} */
  _onRoom(frame, _now) {
    const changes = this.presence.onRoom(frame);
    return changes === null ? [] : [presenceEvent(frame, changes)];
  }

  /** @param {Dict} frame @param {number} _now @returns {ClientEvent[]} */
  _onPresenceDiff(frame, _now) {
    const changes = this.presence.onDiff(frame);
    return changes === null ? [] : [presenceEvent(frame, changes)];
  }

  /** @param {Dict} frame @param {number} _now @returns {ClientEvent[]} */
  _onSnapshot(frame, _now) {
    const queries = need(frame, "queries");
    if (!isObject(queries)) throw new TypeError("queries must be an object");
    const qids = new Set(Object.keys(queries));
    const events = this._loadSnapshot(frame);
    const reset = getOwn(frame, "reset") ?? null;
    this.subscriptions.onSnapshot(qids, reset);
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
    this.subscriptions.onChanges();
    return fromReplicaAll(events);
  }

  /** @param {Dict} frame @param {number} _now @returns {ClientEvent[]} */
  _onAck(frame, _now) {
    const mid = toInt(need(frame, "mid"));
    this.window.answered(mid);
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
      this.window.answered(mid);
      const error = without(frame, ["t", "mid", "permanent", "replay"]);
      const ack = { mid, status: "rejected", seq: null, error };
      return fromReplicaAll(this.replica.applyAck(ack));
    }
    this.window.refused(mid);
    if (getOwn(frame, "code") === "gap") {
      this.window.rewind(toInt(need(frame, "expected")));
    } else if (this.replica.unacked().some((m) => m.id === mid)) {
      this.window.rewind(mid, now + this._retryAfter(frame));
    }
    return [];
  }

  /** @param {Dict} frame @param {number} now @returns {ClientEvent[]} */
  _onError(frame, now) {
    const code = String(getOwn(frame, "code") ?? "error");
    const ref = getOwn(frame, "ref");
    const room = this.presence.onError(frame, (q) => this.wanted.has(q));
    if (room !== null) {
      return [clientEvent("presence", { reason: room, error: without(frame, []), frame })];
    }
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
        this.window.refused(ref);
        this.window.rewind(ref, now + this._retryAfter(frame));
        return events;
      }
      // Refused without using its id up: drop it; the ids after it will be renumbered
      // when the server asks for this one again (a gap).
      this.window.answered(ref);
      const error = without(frame, ["t", "ref"]);
      const ack = { mid: ref, status: "rejected", seq: null, error };
      return [...events, ...fromReplicaAll(this.replica.applyAck(ack))];
    }
    this._out.push(...this.subscriptions.onError(code));
    return events;
  }

  /**
   * How long a temporary refusal asks to wait, seconds.
   * @param {Dict} frame
   * @returns {number}
   */
  _retryAfter(frame) {
    const retryAfter = getOwn(frame, "retry_after") ?? null;
    return retryAfter === null ? this.defaultRetryAfter : toSeconds(retryAfter);
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
  room: ClientProtocol.prototype._onRoom,
  presence_diff: ClientProtocol.prototype._onPresenceDiff,
});

/**
 * A room's members changed: `reason` is the room's name, `changes` what changed.
 * @param {Dict} frame
 * @param {import("./presence.js").Change[]} changes
 * @returns {ClientEvent}
 */
function presenceEvent(frame, changes) {
  return clientEvent("presence", { reason: String(getOwn(frame, "room")), frame, changes });
}
