// The client-side replica (pure): server state at a cursor, plus pending mutations — a
// port of syncline/replica.py with the same semantics.
//
// Theory of operation (invariant 8):
//
// * `server` holds records exactly as the server sent them, at `cursor`.
// * `pending` holds this client's mutations, in id order, not yet reflected in `server`.
//   The view is `server` with every pending op applied again on top (applyLocal), so
//   local edits show at once. (The browser adds one layer the Python replica does not
//   have: `overlay`, other tabs' optimistic edits, applied under this tab's own.)
// * An ack gives a pending mutation its commit seq; the mutation stays pending until
//   `cursor` reaches that seq (the change itself has then arrived), so nothing flickers.
//   An ack without seq (rejected, conflicted, nothing changed) drops it at once. A
//   `manual` conflict becomes a Draft for the user.
// * Text edits are kept as (prev, mine) and merged again onto whatever is below them on
//   every rebase.
//
// Ops get their bases here: each updated field's base version comes from `server` (what
// the server confirmed), each `prev` from the view (what the user saw). The replica does
// no I/O: a transport feeds it frames and sends what it returns. It is the one owner of
// the client's state (the protocol keeps no copy): records, which records each query
// holds (`_members`: a record no query holds is dropped), the queue. MutationBuilder
// (builder.js) makes the ops; wire.js checks what the server sent.

import { CursorError, parseCursor, sameCursor } from "./cursor.js";
import { MutationBuilder } from "./builder.js";
import { cloneJson, dict, getOwn, hasOwn, isObject, toJson } from "./json.js";
import { applyLocal, recordFromWire, recordKey } from "./ops.js";
import { parseQuery, matches, sortRows } from "./query.js";
import { collectionOf, makeSchema } from "./schema.js";
import { conflictFromWire, integer, list, need, object } from "./wire.js";
import { DEFAULT_PAUSE, History, plan, recordEffects, typingKey } from "./undo.js";

export { InvalidMutation, MutationBuilder, PolicyViolation } from "./builder.js";

/** @typedef {import("./json.js").Dict} Dict */
/** @typedef {import("./cursor.js").Cursor} Cursor */
/** @typedef {import("./ops.js").Rec} Rec */
/** @typedef {import("./ops.js").Op} Op */
/** @typedef {import("./ops.js").UpdateOp} UpdateOp */
/** @typedef {import("./ops.js").Mutation} Mutation */
/** @typedef {import("./ops.js").SetValue} SetValue */
/** @typedef {import("./query.js").Query} Query */
/** @typedef {import("./schema.js").Schema} Schema */
/** @typedef {import("./schema.js").SchemaSpec} SchemaSpec */

/**
 * @typedef {object} Pending
 * @property {Mutation} mutation
 * @property {number | null} seq  the commit seq from its ack
 * @property {boolean} acked
 */

/**
 * A conflict in its wire form (ack.results[].conflicts[]); `field` null: an update of a
 * deleted record.
 * @typedef {{c: string, id: string, field: string | null, base: unknown, mine: unknown, theirs: unknown, theirs_v: number}} Conflict
 */

/**
 * Edits the server would not apply because a `manual` field conflicted. `ops` is the
 * whole mutation when nothing of it was applied (`whole` mode), and empty when the rest
 * committed (`partial`); resolve() sends them again with the user's choices.
 * @typedef {{mutationId: number, conflicts: Conflict[], ops: Op[]}} Draft
 */

/**
 * @typedef {"changed" | "conflict" | "overwritten" | "merged" | "rejected" | "dropped" | "undo-partial"} ReplicaEventKind
 */

/**
 * @typedef {object} ReplicaEvent
 * @property {ReplicaEventKind} kind
 * @property {number | null} mutationId
 * @property {string[]} keys  "collection:id" of the records concerned
 * @property {string[]} fields
 * @property {Draft | null} draft
 * @property {Dict | null} error
 */

/**
 * @param {ReplicaEventKind} kind
 * @param {Partial<ReplicaEvent>} [rest]
 * @returns {ReplicaEvent}
 */
function event(kind, rest = {}) {
  return { kind, mutationId: null, keys: [], fields: [], draft: null, error: null, ...rest };
}

export class Replica {
  /**
   * @param {Schema | SchemaSpec | null} schema  null: any collection, every field lww
   * @param {string} clientId
   * @param {{undoPause?: number, clock?: () => number}} [options]  undoPause: seconds of
   *   no typing that end one undo entry (default 1); clock: the time in seconds
   */
  constructor(schema, clientId, options = {}) {
    const undoPause = options.undoPause ?? DEFAULT_PAUSE;
    if (!(typeof undoPause === "number" && undoPause >= 0)) {
      throw new RangeError(`undoPause must be a number of seconds >= 0, got ${String(undoPause)}`);
    }
    /** Seconds of no typing that end one undo entry (undo.js). */
    this.undoPause = undoPause;
    /** @type {() => number} */
    this.clock = options.clock ?? (() => Date.now() / 1000);
    this.schema = makeSchema(schema);
    this.clientId = clientId;
    /** @type {Cursor | null} */
    this.cursor = null;
    /** @type {Map<string, Rec>} records as the server sent them, by "collection:id" */
    this.server = new Map();
    /** @type {Pending[]} */
    this.pending = [];
    /** @type {Draft[]} */
    this.drafts = [];
    /** @type {Map<string, Query>} */
    this.queries = new Map();
    /** @type {Op[][]} other tabs' optimistic edits, shown under this tab's own */
    this.overlay = [];
    /** The id the next mutation gets. */
    this.nextId = 1;
    /** @type {Map<string, Set<string>>} */
    this._members = new Map();
    /** @type {Map<string, Rec | null> | null} */
    this._view = null;
    /** Undo and redo of this replica's own edits (undo.js). */
    this.history = new History();
    this._recording = "user";
    /** @type {string | null} the browser tab this replica's page is in (storage.js) */
    this.tab = null;
  }

  // --- state from the server ---------------------------------------------------------

  /**
   * Hydrate from a snapshot (as embedded in a page, or sent after `sub`).
   * @param {unknown} snapshot  {cursor, queries, records}
   * @returns {ReplicaEvent[]}
   */
  loadSnapshot(snapshot) {
    const cursor = parseCursor(need(snapshot, "cursor"));
    if (this.cursor !== null && cursor.epoch !== this.cursor.epoch) {
      this.server.clear();
      this._members.clear();
    }
    const queries = object(need(snapshot, "queries"), "queries");
    const records = object(need(snapshot, "records"), "records");
    // Check everything before changing anything.
    const parsed = Object.keys(queries).map(
      (qid) => /** @type {[string, Query]} */ ([qid, parseQuery(queries[qid], this.schema)]),
    );
    this.cursor = cursor;
    /** @type {string[]} */
    const keys = [];
    for (const [qid, query] of parsed) {
      keys.push(...this._resetQuery(qid, query, list(getOwn(records, qid) ?? [], "records")));
    }
    return this._settle(keys);
  }

  /**
   * @param {string} qid
   * @param {Query} query
   * @param {unknown[]} records
   * @returns {string[]}
   */
  _resetQuery(qid, query, records) {
    const old = this._members.get(qid) ?? new Set();
    this._members.delete(qid);
    this.queries.set(qid, query);
    /** @type {Set<string>} */
    const members = new Set();
    for (const obj of records) {
      const record = recordFromWire(obj);
      const key = recordKey(query.collection, record.id);
      this.server.set(key, record);
      members.add(key);
    }
    this._members.set(qid, members);
    const gone = [...old].filter((k) => !members.has(k));
    for (const key of gone) this._dropIfOrphan(key);
    return [...members, ...gone];
  }

  /** @param {string} key */
  _dropIfOrphan(key) {
    for (const m of this._members.values()) if (m.has(key)) return;
    this.server.delete(key);
  }

  /**
   * Apply a `changes` frame: from the replica's cursor to a newer one.
   * @param {unknown} changes  {from, to, q}
   * @returns {ReplicaEvent[]}
   */
  applyChanges(changes) {
    const since = parseCursor(need(changes, "from"));
    const to = parseCursor(need(changes, "to"));
    if (this.cursor === null || !sameCursor(since, this.cursor)) {
      const held = this.cursor ? `${this.cursor.epoch}.${this.cursor.seq}` : "None";
      throw new CursorError(
        `changes from ${since.epoch}.${since.seq} do not follow the replica's cursor ${held}`,
      );
    }
    const q = object(need(changes, "q"), "q");
    /** @type {string[]} */
    const keys = [];
    for (const qid of Object.keys(q)) {
      const query = this.queries.get(qid);
      if (query === undefined) continue; // an unsubscribed query's late changes
      for (const item of list(q[qid], "items")) keys.push(...this._applyItem(qid, query, item));
    }
    this.cursor = to;
    return this._settle(keys);
  }

  /**
   * @param {string} qid
   * @param {Query} query
   * @param {unknown} item
   * @returns {string[]}
   */
  _applyItem(qid, query, item) {
    const kind = need(item, "k");
    if (kind === "reset")
      return this._resetQuery(qid, query, list(need(item, "records"), "records"));
    const c = hasOwn(item, "c") ? String(getOwn(item, "c")) : query.collection;
    const key = recordKey(c, String(need(item, "id")));
    let members = this._members.get(qid);
    if (members === undefined) {
      members = new Set();
      this._members.set(qid, members);
    }
    if (kind === "enter") {
      this.server.set(key, recordFromWire(item));
      members.add(key);
    } else if (kind === "patch") {
      const record = this.server.get(key);
      if (record === undefined)
        throw new CursorError(`patch for ${key} which this replica does not hold`);
      const data = object(need(item, "data"), "data");
      const fv = object(need(item, "fv"), "fv");
      const v = integer(need(item, "v"), "v");
      const inc = integer(need(item, "inc"), "inc");
      for (const k of Object.keys(data)) record.data[k] = cloneJson(data[k]);
      for (const k of Object.keys(fv)) record.fv[k] = integer(fv[k], "fv");
      record.v = v;
      record.inc = inc;
    } else if (kind === "remove") {
      members.delete(key);
      this._dropIfOrphan(key);
    }
    return [key];
  }

  /**
   * The answer to a mutation: an `ack` frame (without `t`), or a refusal given the same
   * shape (`status: "rejected"`, `seq: null`, `error`).
   * @param {unknown} ackWire
   * @returns {ReplicaEvent[]}
   */
  applyAck(ackWire) {
    const mid = integer(need(ackWire, "mid"), "mid");
    const status = need(ackWire, "status");
    const seqValue = getOwn(ackWire, "seq") ?? null;
    const seq = seqValue === null ? null : integer(seqValue, "seq");
    const results = list(getOwn(ackWire, "results") ?? [], "results").map((r) => ({
      status: need(r, "status"),
      overwritten: list(getOwn(r, "overwritten") ?? [], "overwritten").map(String),
      merged: list(getOwn(r, "merged") ?? [], "merged").map(String),
      conflicts: list(getOwn(r, "conflicts") ?? [], "conflicts").map(conflictFromWire),
    }));
    const errorValue = getOwn(ackWire, "error");
    const error = isObject(errorValue) ? /** @type {Dict} */ (cloneJson(errorValue)) : null;
    const entry = this.pending.find((p) => p.mutation.id === mid);
    if (entry === undefined) return []; // an ack for a mutation already settled (a replay)
    /** @type {ReplicaEvent[]} */
    const events = [];
    entry.acked = true;
    entry.seq = seq;
    this.history.acked(mid, seq, status === "applied" || status === "duplicate");
    for (const result of results) {
      if (result.overwritten.length) {
        events.push(event("overwritten", { mutationId: mid, fields: result.overwritten }));
      }
      if (result.merged.length)
        events.push(event("merged", { mutationId: mid, fields: result.merged }));
    }
    if (status === "conflict" || results.some((r) => r.conflicts.length)) {
      const conflicts = results.flatMap((r) => r.conflicts);
      const ops = status === "conflict" ? [...entry.mutation.ops] : [];
      /** @type {Draft} */
      const draft = { mutationId: mid, conflicts, ops };
      this.drafts.push(draft);
      events.push(event("conflict", { mutationId: mid, draft }));
    }
    if (status === "rejected") events.push(event("rejected", { mutationId: mid, error }));
    const keys = entry.mutation.ops.map((op) => recordKey(op.c, op.id));
    return [...events, ...this._settle(keys)];
  }

  // --- local writes ------------------------------------------------------------------

  /**
   * Build one mutation from several ops: `build(b)` calls b.insert / b.update / ...; the
   * mutation is queued when it returns (nothing is queued if it throws).
   * @param {(b: MutationBuilder) => void} build
   * @param {"whole" | "partial"} [mode]
   * @returns {Mutation | null}  null when no op was added
   */
  batch(build, mode = "whole") {
    const builder = new MutationBuilder(this);
    build(builder);
    if (builder.ops.length) builder.mutation = this._queue(builder.ops, mode);
    return builder.mutation;
  }

  /**
   * @param {Op[]} ops
   * @param {"whole" | "partial"} mode
   * @returns {Mutation}
   */
  _queue(ops, mode) {
    const base = this.cursor !== null ? this.cursor.seq : 0;
    /** @type {Mutation} */
    const mutation = { id: this.nextId, ops, base, mode };
    this.nextId += 1;
    const effects = recordEffects(this.schema, this.view(), ops);
    const typing = typingKey(this.schema, effects);
    this.history.record(mutation.id, effects, this._recording, typing, this.clock(), this.undoPause);
    this.pending.push({ mutation, seq: null, acked: false });
    this._view = null;
    return mutation;
  }

  // --- undo and redo (undo.js) -------------------------------------------------------

  /**
   * Every mutation queued while `fn` runs is one undo entry.
   * @template T
   * @param {() => T} fn
   * @returns {T}
   */
  undoGroup(fn) {
    this.history.beginGroup();
    try {
      return fn();
    } finally {
      this.history.endGroup();
    }
  }

  get canUndo() {
    return this.history.canUndo;
  }

  get canRedo() {
    return this.history.canRedo;
  }

  /** Queue the inverse of the newest undo entry (null: nothing to undo). */
  undo() {
    return this._invert(this.history.undoStack, "redo");
  }

  /** Queue the inverse of the newest undo (null: nothing to redo). */
  redo() {
    return this._invert(this.history.redoStack, "undo");
  }

  /**
   * @param {import("./undo.js").Entry[]} stack
   * @param {string} pushTo
   * @returns {import("./undo.js").UndoOutcome | null}
   */
  _invert(stack, pushTo) {
    const entry = stack.pop();
    if (entry === undefined) return null;
    const builder = new MutationBuilder(this);
    const outcome = plan(this, builder, entry, this.history);
    if (builder.ops.length) {
      this._recording = pushTo;
      try {
        outcome.mutationId = this._queue(builder.ops, "whole").id;
      } finally {
        this._recording = "user";
      }
    }
    if (outcome.conflicts.length) {
      this.drafts.push({ mutationId: outcome.mutationId ?? 0, conflicts: outcome.conflicts, ops: [] });
    }
    return outcome;
  }

  /**
   * The events an undo's outcome raises: "undo-partial" naming what it skipped,
   * "conflict" for the draft it made.
   * @param {import("./undo.js").UndoOutcome | null} outcome
   * @returns {ReplicaEvent[]}
   */
  undoEvents(outcome) {
    if (outcome === null) return [];
    /** @type {ReplicaEvent[]} */
    const events = [];
    const mutationId = outcome.mutationId;
    if (outcome.skipped.length) {
      const keys = [...new Set(outcome.skipped.map((s) => recordKey(s.c, s.id)))];
      const fields = [...new Set(outcome.skipped.flatMap((s) => (s.field ? [s.field] : [])))];
      events.push(event("undo-partial", { mutationId, keys, fields }));
    }
    if (outcome.conflicts.length) {
      events.push(event("conflict", { mutationId, draft: this.drafts[this.drafts.length - 1] }));
    }
    return events;
  }

  /** @param {(b: MutationBuilder) => void} build @returns {Mutation} */
  _one(build) {
    return /** @type {Mutation} */ (this.batch(build));
  }

  /** @param {string} collection @param {string} id @param {Record<string, unknown>} fields */
  insert(collection, id, fields) {
    return this._one((b) => b.insert(collection, id, fields));
  }

  /** @param {string} collection @param {string} id @param {Record<string, unknown>} fields */
  update(collection, id, fields) {
    return this._one((b) => b.update(collection, id, fields));
  }

  /** @param {string} collection @param {string} id */
  delete(collection, id) {
    return this._one((b) => b.delete(collection, id));
  }

  /** @param {string} collection @param {string} id @param {string} field @param {number} [by] */
  increment(collection, id, field, by = 1) {
    return this._one((b) => b.increment(collection, id, field, by));
  }

  /** @param {string} collection @param {string} id @param {string} field @param {...SetValue} values */
  add(collection, id, field, ...values) {
    return this._one((b) => b.add(collection, id, field, ...values));
  }

  /** @param {string} collection @param {string} id @param {string} field @param {...SetValue} values */
  remove(collection, id, field, ...values) {
    return this._one((b) => b.remove(collection, id, field, ...values));
  }

  /**
   * Answer a draft: `choices` maps each conflicting field to the value to keep (a field
   * left out keeps theirs). The answer is a new mutation, based on theirs for the chosen
   * fields, carrying the draft's other edits again. Null if there is nothing to send.
   * @param {Draft} draft
   * @param {Record<string, unknown>} choices
   * @returns {Mutation | null}
   */
  resolve(draft, choices) {
    this.drafts = this.drafts.filter((d) => d !== draft);
    /** @type {Map<string, Conflict>} */
    const conflicted = new Map();
    for (const c of draft.conflicts) {
      if (c.field) conflicted.set(JSON.stringify([c.c, c.id, c.field]), c);
    }
    /** @type {Op[]} */
    const ops = draft.ops.length
      ? [...draft.ops]
      : [...conflicted.values()].map((c) => {
          const set = dict();
          set[/** @type {string} */ (c.field)] = c.mine;
          return /** @type {UpdateOp} */ ({
            op: "update",
            c: c.c,
            id: c.id,
            set,
            base: dict(),
            prev: dict(),
          });
        });
    return this.batch((b) => {
      for (const op of ops) {
        if (op.op !== "update") {
          b._opsAppend(op);
          continue;
        }
        const fields = dict();
        const base = /** @type {Record<string, number>} */ (dict());
        const prev = dict();
        for (const name of Object.keys(op.set)) {
          const mine = op.set[name];
          const c = conflicted.get(JSON.stringify([op.c, op.id, name]));
          if (c === undefined) {
            fields[name] = mine;
            base[name] = /** @type {number | undefined} */ (getOwn(op.base, name)) ?? 0;
            if (hasOwn(op.prev, name)) prev[name] = op.prev[name];
          } else if (hasOwn(choices, name)) {
            fields[name] = toJson(choices[name]);
            base[name] = c.theirs_v;
            prev[name] = c.theirs;
          }
        }
        if (Object.keys(fields).length) {
          b._opsAppend({
            op: "update",
            c: op.c,
            id: op.id,
            set: fields,
            base,
            prev,
            inc: op.inc ?? null,
          });
        }
      }
    });
  }

  /** Mutations to (re)send, in order, after (re)connecting. @returns {Mutation[]} */
  unacked() {
    return this.pending.filter((p) => !p.acked).map((p) => p.mutation);
  }

  /**
   * Take back the mutation just queued (it was never sent): its id is reused.
   * @param {Mutation} mutation
   */
  discardLast(mutation) {
    this.pending = this.pending.filter((p) => p.mutation !== mutation);
    if (this.nextId === mutation.id + 1) this.nextId = mutation.id;
    this._view = null;
  }

  /**
   * Show other tabs' optimistic edits (each an op list) under this tab's own.
   * @param {Op[][]} mutations
   * @returns {ReplicaEvent[]}  a "changed" event for the records concerned
   */
  setOverlay(mutations) {
    const keys = [...this.overlay, ...mutations].flatMap((ops) =>
      ops.map((op) => recordKey(op.c, op.id)),
    );
    this.overlay = mutations;
    this._view = null;
    return keys.length ? [event("changed", { keys: [...new Set(keys)] })] : [];
  }

  // --- reads -------------------------------------------------------------------------

  /** @returns {Map<string, Rec | null>} */
  view() {
    if (this._view === null) {
      /** @type {Map<string, Rec | null>} */
      const view = new Map(this.server);
      const layers = [...this.overlay, ...this.pending.map((p) => p.mutation.ops)];
      for (const ops of layers) {
        for (const op of ops) {
          const coll = collectionOf(this.schema, op.c);
          if (coll === null) continue;
          const key = recordKey(op.c, op.id);
          view.set(key, applyLocal(coll, view.get(key) ?? null, op));
        }
      }
      this._view = view;
    }
    return this._view;
  }

  /**
   * The record as the user sees it (pending edits applied), or null. A fresh object
   * with a null prototype: `id` plus the fields.
   * @param {string} collection
   * @param {string} id
   * @returns {Dict | null}
   */
  get(collection, id) {
    const r = this.view().get(recordKey(collection, id));
    return r === undefined || r === null || r.deleted ? null : row(r);
  }

  /**
   * Run a query on the view (pending edits applied).
   * @param {Query} query
   * @returns {Dict[]}
   */
  query(query) {
    /** @type {Dict[]} */
    const rows = [];
    const prefix = `${query.collection}:`;
    for (const [key, r] of this.view()) {
      // The key is "<collection>:<id>": its collection, without splitting every key.
      if (r === null || r.deleted || !key.startsWith(prefix) || key.indexOf(":") !== prefix.length - 1)
        continue;
      const one = row(r);
      if (matches(query, one)) rows.push(one);
    }
    return sortRows(query, rows);
  }

  /** The confirmed state only: what convergence compares with the server. @returns {Map<string, Dict>} */
  serverData() {
    return new Map([...this.server].map(([k, r]) => [k, { ...r.data }]));
  }

  // --- internals ---------------------------------------------------------------------

  /**
   * Drop pending mutations the cursor has reached; refresh the view.
   * @param {string[]} keys
   * @returns {ReplicaEvent[]}
   */
  _settle(keys) {
    /** @type {Pending[]} */
    const keep = [];
    for (const p of this.pending) {
      const reached =
        p.acked && (p.seq === null || (this.cursor !== null && p.seq <= this.cursor.seq));
      if (reached) keys.push(...p.mutation.ops.map((op) => recordKey(op.c, op.id)));
      else keep.push(p);
    }
    this.pending = keep;
    this._view = null;
    return keys.length ? [event("changed", { keys: [...new Set(keys)] })] : [];
  }
}

/** @param {Rec} r @returns {Dict} */
function row(r) {
  const out = dict();
  for (const k of Object.keys(r.data)) out[k] = r.data[k];
  out.id = r.id;
  return out;
}
