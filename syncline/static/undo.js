// Undo and redo of a replica's own mutations, by merge policy (pure, no I/O): a port of
// syncline/undo.py with the same semantics, pinned by the conformance kit's undo.json.
//
// When the replica queues a mutation the user made, History records its effects against
// the view it was made on: for a plain field the value before and after, for a counter
// the increment, for a set the elements it really added and removed, for an insert or a
// delete the record. One user action (a group) is one entry; typing coalesces: consecutive
// entries outside any group that each change only the same text (or lww string) field of
// the same record, less than `pause` seconds apart, are one entry (first before, last after).
// Any other entry, an undo or redo, or a group ends the burst. Undo turns the top entry
// into a new, ordinary mutation built against what the replica knows now, field by field:
// lww and custom fields come back only if nobody else changed them since (their confirmed
// version is one of this client's commits and their value is still the entry's), else
// they are skipped and named; manual fields someone else changed become a draft (base:
// after my change, mine: before, theirs: now); text gets the inverse edit merged onto the
// current text; counters the opposite increment; sets a remove of what the entry added
// (based on its commit, so the server keeps others' later adds) and a re-add of what it
// removed (skipped when another client changed the set since); an insert is undone by a
// delete, a delete by an insert of the last incarnation's data. Undo's own effects become
// a redo entry. Both stacks are bounded and JSON, kept with the pending queue.

import { cloneJson, dict, getOwn, jsonEqual } from "./json.js";
import { applyLocal, recordKey } from "./ops.js";
import { collectionOf, fieldKind, setKey } from "./schema.js";
import { merge3 } from "./textmerge.js";

/** @typedef {import("./json.js").Dict} Dict */
/** @typedef {import("./ops.js").Rec} Rec */
/** @typedef {import("./ops.js").Op} Op */

/** Entries each stack keeps; the oldest are forgotten first. */
export const DEFAULT_LIMIT = 100;

/** Seconds of no typing that end a burst of keystrokes (one undo entry per burst). */
export const DEFAULT_PAUSE = 1;

/**
 * The "collection\u0000id\u0000field" a typing entry changes: one "field" effect of a text or
 * lww field from a string to a string; null for anything else (undo.py typing_key).
 * @param {import("./schema.js").Schema} schema @param {Effect[]} effects
 * @returns {string | null}
 */
export function typingKey(schema, effects) {
  if (effects.length !== 1 || effects[0].k !== "field") return null;
  const e = effects[0];
  if (typeof e.before !== "string" || typeof e.after !== "string") return null;
  const coll = collectionOf(schema, e.c);
  if (coll === null) return null;
  const kind = fieldKind(coll, /** @type {string} */ (e.f));
  if (kind !== "text" && kind !== "lww") return null;
  return `${e.c}\u0000${e.id}\u0000${e.f}`;
}

/**
 * One recorded effect: {k, c, id, ...}; kinds "field" (f, before, after), "incr" (f, by),
 * "set" (f, added, removed), "insert", "delete" (data).
 * @typedef {{k: string, c: string, id: string, f?: string, before?: unknown, after?: unknown, by?: number, added?: unknown[], removed?: unknown[], data?: Dict}} Effect
 */
/** @typedef {{mids: number[], effects: Effect[]}} Entry */
/** @typedef {{c: string, id: string, field: string | null, reason: string}} Skipped */
/** @typedef {{c: string, id: string, field: string | null, base: unknown, mine: unknown, theirs: unknown, theirs_v: number}} Conflict */
/** @typedef {{mutationId: number | null, skipped: Skipped[], conflicts: Conflict[], partial: boolean}} UndoOutcome */

/** @param {Rec | null | undefined} r @returns {r is Rec} */
function live(r) {
  return r !== null && r !== undefined && !r.deleted;
}

/**
 * The effects of `ops` applied in turn to `view` (the state the user saw).
 * @param {import("./schema.js").Schema} schema
 * @param {Map<string, Rec | null>} view
 * @param {Op[]} ops
 * @returns {Effect[]}
 */
export function recordEffects(schema, view, ops) {
  /** @type {Map<string, Rec | null>} */
  const scratch = new Map();
  /** @type {Effect[]} */
  const effects = [];
  for (const op of ops) {
    const coll = collectionOf(schema, op.c);
    if (coll === null) continue;
    const key = recordKey(op.c, op.id);
    const before = scratch.has(key) ? (scratch.get(key) ?? null) : (view.get(key) ?? null);
    const after = applyLocal(coll, before, op);
    scratch.set(key, after);
    effects.push(...opEffects(op, before, after));
  }
  return effects;
}

/** @param {Op} op @param {Rec | null} before @param {Rec | null} after @returns {Effect[]} */
function opEffects(op, before, after) {
  const at = { c: op.c, id: op.id };
  if (op.op === "insert") return !live(before) && live(after) ? [{ k: "insert", ...at }] : [];
  if (!live(before) || after === null) return [];
  if (op.op === "delete") return [{ k: "delete", ...at, data: /** @type {Dict} */ (cloneJson({ ...before.data })) }];
  if (op.op === "update") {
    /** @type {Effect[]} */
    const out = [];
    for (const name of Object.keys(op.set)) {
      const old = getOwn(before.data, name) ?? null;
      const next = getOwn(after.data, name) ?? null;
      if (!jsonEqual(old, next)) {
        out.push({ k: "field", ...at, f: name, before: cloneJson(old), after: cloneJson(next) });
      }
    }
    return out;
  }
  if (op.op === "incr") return op.by ? [{ k: "incr", ...at, f: op.field, by: op.by }] : [];
  const had = new Set(/** @type {unknown[]} */ (getOwn(before.data, op.field) ?? []).map(setKey));
  const has = new Set(/** @type {unknown[]} */ (getOwn(after.data, op.field) ?? []).map(setKey));
  const added = op.op === "add" ? op.values.filter((v) => has.has(setKey(v)) && !had.has(setKey(v))) : [];
  const removed =
    op.op === "remove" ? op.values.filter((v) => had.has(setKey(v)) && !has.has(setKey(v))) : [];
  return added.length || removed.length ? [{ k: "set", ...at, f: op.field, added, removed }] : [];
}

/** A replica's undo and redo stacks, and the commits that are its own. */
export class History {
  /** @param {number} [limit] */
  constructor(limit = DEFAULT_LIMIT) {
    if (!(limit >= 1)) throw new RangeError("an undo history keeps at least one entry");
    this.limit = limit;
    /** @type {Entry[]} */
    this.undoStack = [];
    /** @type {Entry[]} */
    this.redoStack = [];
    /** @type {Map<number, number | null>} mutation id -> commit seq (null: not yet) */
    this.seqs = new Map();
    /** @type {Set<number>} seqs of this client's commits */
    this.mine = new Set();
    /** @type {Entry | null} */
    this._group = null;
    this._depth = 0;
    /** @type {{entry: Entry, key: string, at: number} | null} the typing burst on top */
    this._burst = null;
  }

  get canUndo() {
    return this.undoStack.length > 0;
  }

  get canRedo() {
    return this.redoStack.length > 0;
  }

  beginGroup() {
    this._burst = null;
    this._depth += 1;
    if (this._depth === 1) this._group = { mids: [], effects: [] };
  }

  endGroup() {
    this._depth -= 1;
    if (this._depth === 0 && this._group !== null) {
      const group = this._group;
      this._group = null;
      if (group.effects.length) {
        this._push(this.undoStack, group);
        this.redoStack.length = 0;
      }
    }
  }

  /**
   * Note a queued mutation's effects: a user action ("user"; clears the redo stack), an
   * undo ("redo": pushed on the redo stack) or a redo ("undo"). `typing` (typingKey) at
   * time `at` joins the burst on top of the undo stack when it is the same field and
   * less than `pause` later.
   * @param {number} mutationId @param {Effect[]} effects @param {string} [stack]
   * @param {string | null} [typing] @param {number} [at] @param {number} [pause]
   */
  record(mutationId, effects, stack = "user", typing = null, at = 0, pause = 0) {
    if (!effects.length) return;
    this.seqs.set(mutationId, null);
    if (stack === "user" && this._group !== null) {
      this._group.mids.push(mutationId);
      this._group.effects.push(...effects);
      return;
    }
    const burst = this._burst;
    this._burst = null;
    if (
      stack === "user" &&
      typing !== null &&
      burst !== null &&
      this.undoStack.length > 0 &&
      this.undoStack[this.undoStack.length - 1] === burst.entry &&
      burst.key === typing &&
      at - burst.at >= 0 &&
      at - burst.at < pause
    ) {
      const top = burst.entry;
      top.mids.push(mutationId);
      top.effects[0] = { ...top.effects[0], after: effects[0].after };
      this._burst = { entry: top, key: typing, at };
      this.redoStack.length = 0;
      return;
    }
    /** @type {Entry} */
    const entry = { mids: [mutationId], effects };
    if (stack === "user" && typing !== null) this._burst = { entry, key: typing, at };
    if (stack === "redo") {
      this._push(this.redoStack, entry);
      return;
    }
    this._push(this.undoStack, entry);
    if (stack === "user") this.redoStack.length = 0;
  }

  /** @param {Entry[]} stack @param {Entry} entry */
  _push(stack, entry) {
    stack.push(entry);
    stack.splice(0, Math.max(0, stack.length - this.limit));
    this._prune();
  }

  /**
   * An ack: remember the commit, or forget a mutation the server did not apply.
   * @param {number} mutationId @param {number | null} seq @param {boolean} applied
   */
  acked(mutationId, seq, applied) {
    if (seq !== null) this.mine.add(seq);
    if (!this.seqs.has(mutationId)) return;
    if (applied && seq !== null) {
      this.seqs.set(mutationId, seq);
      return;
    }
    for (const stack of [this.undoStack, this.redoStack]) {
      for (const entry of stack) {
        const i = entry.mids.indexOf(mutationId);
        if (i >= 0) {
          entry.mids.splice(i, 1);
          if (!entry.mids.length) entry.effects.length = 0;
        }
      }
      const kept = stack.filter((e) => e.mids.length);
      stack.splice(0, stack.length, ...kept);
    }
    this.seqs.delete(mutationId);
  }

  _prune() {
    const liveIds = new Set(
      [...this.undoStack, ...this.redoStack, ...(this._group ? [this._group] : [])].flatMap(
        (e) => e.mids,
      ),
    );
    for (const m of [...this.seqs.keys()]) if (!liveIds.has(m)) this.seqs.delete(m);
    const known = /** @type {number[]} */ ([...this.seqs.values()].filter((s) => s !== null));
    if (!liveIds.size) this.mine.clear();
    else if (known.length) {
      const oldest = Math.min(...known);
      for (const s of [...this.mine]) if (s < oldest) this.mine.delete(s);
    }
  }

  /** The JSON form, as syncline/undo.py History.to_wire. */
  toWire() {
    return {
      limit: this.limit,
      undo: this.undoStack.map((e) => ({ mids: [...e.mids], effects: cloneJson(e.effects) })),
      redo: this.redoStack.map((e) => ({ mids: [...e.mids], effects: cloneJson(e.effects) })),
      seqs: [...this.seqs].map(([m, s]) => [m, s]),
      mine: [...this.mine].sort((a, b) => a - b),
    };
  }

  /** @param {any} obj @returns {History} */
  static fromWire(obj) {
    const h = new History(Number(obj.limit ?? DEFAULT_LIMIT));
    /** @param {any} e @returns {Entry} */
    const entry = (e) => ({ mids: [...e.mids], effects: /** @type {Effect[]} */ (cloneJson(e.effects)) });
    h.undoStack = obj.undo.map(entry);
    h.redoStack = obj.redo.map(entry);
    h.seqs = new Map(obj.seqs.map(/** @param {[number, number | null]} p */ (p) => [p[0], p[1]]));
    h.mine = new Set(obj.mine);
    return h;
  }

  /**
   * This history for another client id (a reloaded tab's): its mutation ids renumbered
   * below 1, so they never meet the new client's. Entries whose commit was still
   * unknown stay unknown: their undo cannot tell whether someone else changed a field.
   * @returns {History}
   */
  detached() {
    const h = History.fromWire(this.toWire());
    let next = -1;
    /** @type {Map<number, number>} */
    const renamed = new Map();
    for (const entry of [...h.undoStack, ...h.redoStack]) {
      entry.mids = entry.mids.map((m) => {
        if (!renamed.has(m)) renamed.set(m, next--);
        return /** @type {number} */ (renamed.get(m));
      });
    }
    h.seqs = new Map([...this.seqs].filter(([m]) => renamed.has(m)).map(([m, s]) => [/** @type {number} */ (renamed.get(m)), s]));
    return h;
  }

  /**
   * The entry's newest commit seq once the replica has caught up with all of them; null
   * while one is still pending (then nobody's change since is known).
   * @param {Entry} entry @param {number} cursorSeq @returns {number | null}
   */
  confirmed(entry, cursorSeq) {
    const seqs = entry.mids.map((m) => this.seqs.get(m) ?? null);
    if (!seqs.length || seqs.some((s) => s === null || s > cursorSeq)) return null;
    return Math.max(.../** @type {number[]} */ (seqs));
  }
}

/**
 * The ops that invert `entry` against what the replica knows now, built on `builder`.
 * @param {import("./replica.js").Replica} replica
 * @param {import("./builder.js").MutationBuilder} builder
 * @param {Entry} entry
 * @param {History} history
 * @returns {UndoOutcome}
 */
export function plan(replica, builder, entry, history) {
  const cursorSeq = replica.cursor !== null ? replica.cursor.seq : 0;
  const committed = history.confirmed(entry, cursorSeq);
  /** @type {UndoOutcome} */
  const outcome = { mutationId: null, skipped: [], conflicts: [], partial: false };
  const inserted = new Set(entry.effects.filter((e) => e.k === "insert").map((e) => recordKey(e.c, e.id)));
  /** @type {Set<string>} */
  const restored = new Set();
  for (const e of [...entry.effects].reverse()) {
    const key = recordKey(e.c, e.id);
    if (inserted.has(key) && e.k !== "insert") continue;
    const current = builder._current(e.c, e.id);
    if (e.k === "insert") {
      if (live(current)) builder.delete(e.c, e.id);
      continue;
    }
    if (e.k === "delete") {
      if (live(current)) outcome.skipped.push({ c: e.c, id: e.id, field: null, reason: "re-created since" });
      else {
        builder.insert(e.c, e.id, /** @type {Dict} */ (cloneJson(e.data)));
        restored.add(key);
      }
      continue;
    }
    if (!live(current)) {
      outcome.skipped.push({ c: e.c, id: e.id, field: e.f ?? null, reason: "deleted since" });
      continue;
    }
    invert(replica, builder, e, current, committed, history, restored.has(key), outcome);
  }
  outcome.partial = outcome.skipped.length > 0 || outcome.conflicts.length > 0;
  return outcome;
}

/**
 * @param {import("./replica.js").Replica} replica
 * @param {import("./builder.js").MutationBuilder} builder
 * @param {Effect} e @param {Rec} current @param {number | null} committed
 * @param {History} history @param {boolean} fresh @param {UndoOutcome} outcome
 */
function invert(replica, builder, e, current, committed, history, fresh, outcome) {
  const { c, id } = e;
  const name = /** @type {string} */ (e.f);
  const kind = fieldKind(collectionOf(replica.schema, c), name);
  const conf = replica.server.get(recordKey(c, id)) ?? null;
  const version = conf !== null ? (getOwn(conf.fv, name) ?? 0) : 0;
  // Not live on the server: only a pending insert of mine (an undone delete) has it.
  const isFresh = fresh || conf === null || conf.deleted;
  // Someone else changed the field since: its confirmed version is not one of mine.
  const others = !isFresh && committed !== null && !history.mine.has(/** @type {number} */ (version));
  const now = getOwn(current.data, name) ?? null;
  /** @param {unknown} value */
  const set = (value) => {
    const fields = dict();
    fields[name] = value;
    builder.update(c, id, fields);
  };
  if (e.k === "incr") {
    builder.increment(c, id, name, -(/** @type {number} */ (e.by)));
    return;
  }
  if (e.k === "set") {
    const here = new Set(/** @type {unknown[]} */ (now ?? []).map(setKey));
    const drop = /** @type {(string | number)[]} */ ((e.added ?? []).filter((v) => here.has(setKey(v))));
    if (drop.length) {
      const base = committed !== null ? committed : replica.cursor !== null ? replica.cursor.seq : 0;
      builder._opsAppend({ op: "remove", c, id, field: name, values: drop, base });
    }
    const back = /** @type {(string | number)[]} */ ((e.removed ?? []).filter((v) => !here.has(setKey(v))));
    if (back.length && others) {
      outcome.skipped.push({ c, id, field: name, reason: "changed by someone else since" });
    } else if (back.length) builder.add(c, id, name, ...back);
    return;
  }
  if (kind === "text" && typeof now === "string") {
    if (typeof e.before === "string" && typeof e.after === "string") {
      const value = merge3(e.after, e.before, now);
      if (value !== now) set(value);
      return;
    }
  }
  const moved = !isFresh && (others || !jsonEqual(now, e.after ?? null));
  if (!moved) {
    if (!jsonEqual(now, e.before ?? null)) set(cloneJson(e.before ?? null));
    return;
  }
  if (jsonEqual(now, e.before ?? null)) return; // already back where the entry started
  if (kind === "manual") {
    outcome.conflicts.push({
      c,
      id,
      field: name,
      base: cloneJson(e.after ?? null),
      mine: cloneJson(e.before ?? null),
      theirs: cloneJson(now),
      theirs_v: /** @type {number} */ (version),
    });
    return;
  }
  outcome.skipped.push({ c, id, field: name, reason: "changed by someone else since" });
}
