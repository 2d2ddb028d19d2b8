// Presence (docs/protocol.md, Presence): rooms this page joined, their members live.
//
//   const room = sync.join("board:demo", { name: "Ann", editing: null });
//   room.members.subscribe((members) => draw(members));  // [{key, user, state}, ...]
//   room.on("join", (m) => ...);  room.update({ editing: "c1" });  room.leave();
//
// PresenceRooms is the sans-I/O part the protocol holds: what a room's members are
// after each `room` and `presence_diff` frame, and the `join` frames to send again
// after every welcome (a room is held per connection). Room is the application's handle:
// an observable of the members and events, and updates coalesced to a bounded rate
// (the server bounds them too; the last value always goes).

import { Value, readonly, report } from "./observable.js";
import { getOwn, isObject } from "./json.js";

/** @typedef {import("./json.js").Dict} Dict */
/** @typedef {{key: string, user: unknown, state: Dict}} Member */
/** @typedef {"join" | "update" | "leave"} ChangeKind */
/** @typedef {[ChangeKind, Member]} Change */

/** @typedef {{state: Dict, members: Map<string, Member>, me: string | null, answered: boolean}} RoomState */

/** @param {unknown} item @returns {Member} */
function member(item) {
  if (!isObject(item) || typeof getOwn(item, "key") !== "string")
    throw new TypeError("a member is {key, user, state}");
  const state = getOwn(item, "state");
  return {
    key: /** @type {string} */ (getOwn(item, "key")),
    user: getOwn(item, "user") ?? null,
    state: isObject(state) ? state : {},
  };
}

/** @param {Member | undefined} a @param {Member} b */
function same(a, b) {
  return a !== undefined && JSON.stringify([a.user, a.state]) === JSON.stringify([b.user, b.state]);
}

/** @param {unknown} value @returns {Member[]} */
function members(value) {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new TypeError("members must be a list");
  return value.map(member);
}

export class PresenceRooms {
  constructor() {
    /** @type {Map<string, RoomState>} */
    this.rooms = new Map();
  }

  /** Enter (or update) a room; the frame to send when live. @param {string} room @param {Dict} state */
  join(room, state) {
    let r = this.rooms.get(room);
    if (r === undefined) {
      r = { state, members: new Map(), me: null, answered: false };
      this.rooms.set(room, r);
    }
    r.state = state;
    return { t: "join", room, state };
  }

  /** @param {string} room @param {Dict} state @returns {Dict | null} */
  update(room, state) {
    const r = this.rooms.get(room);
    if (r === undefined) return null;
    r.state = state;
    return { t: "presence", room, state };
  }

  /** @param {string} room @returns {Dict | null} */
  leave(room) {
    return this.rooms.delete(room) ? { t: "leave", room } : null;
  }

  /** The joins to send after a welcome. @returns {Dict[]} */
  onWelcome() {
    return [...this.rooms].map(([room, r]) => {
      r.answered = false;
      return { t: "join", room, state: r.state };
    });
  }

  /** A `room` frame. @param {Dict} frame @returns {Change[] | null} */
  onRoom(frame) {
    const r = this.rooms.get(String(getOwn(frame, "room")));
    if (r === undefined) return null;
    const fresh = new Map(members(getOwn(frame, "members")).map((m) => [m.key, m]));
    /** @type {Change[]} */
    const changes = [];
    for (const [key, m] of r.members) if (!fresh.has(key)) changes.push(["leave", m]);
    for (const [key, m] of fresh) {
      const old = r.members.get(key);
      if (old === undefined) changes.push(["join", m]);
      else if (!same(old, m)) changes.push(["update", m]);
    }
    r.members = fresh;
    r.me = String(getOwn(frame, "me"));
    r.answered = true;
    return changes;
  }

  /** A `presence_diff` frame. @param {Dict} frame @returns {Change[] | null} */
  onDiff(frame) {
    const r = this.rooms.get(String(getOwn(frame, "room")));
    if (r === undefined) return null;
    /** @type {Change[]} */
    const changes = [];
    for (const m of [...members(getOwn(frame, "joins")), ...members(getOwn(frame, "updates"))]) {
      changes.push([r.members.has(m.key) ? "update" : "join", m]);
      r.members.set(m.key, m);
    }
    const leaves = getOwn(frame, "leaves") ?? [];
    if (!Array.isArray(leaves)) throw new TypeError("leaves must be a list");
    for (const key of leaves) {
      const gone = r.members.get(String(key));
      if (gone !== undefined) {
        r.members.delete(String(key));
        changes.push(["leave", gone]);
      }
    }
    return changes;
  }

  /**
   * An `error` frame about a room this client asked for: the room is left. Returns the
   * room's name, or null when the error is about something else.
   * @param {Dict} frame
   * @param {(ref: string) => boolean} isQuery  a query id holds the same name
   * @returns {string | null}
   */
  onError(frame, isQuery) {
    const ref = getOwn(frame, "ref");
    const code = getOwn(frame, "code");
    if (typeof ref !== "string" || !this.rooms.has(ref)) return null;
    if (code !== "room_refused" && code !== "not_joined" && (code !== "limit" || isQuery(ref)))
      return null;
    this.rooms.delete(ref);
    return ref;
  }
}

/**
 * A room this page joined: `members` (an observable list), `me` (this page's key),
 * `on("join" | "update" | "leave" | "refused", listener)`, `update(state)`, `leave()`.
 */
export class Room {
  /**
   * @param {string} name
   * @param {object} hooks
   * @param {(room: Room, state: Dict) => void} hooks.send  send this page's state now
   * @param {(room: Room) => void} hooks.leave
   * @param {number} [hooks.perSecond]  updates sent per second at most (20)
   */
  constructor(name, hooks) {
    this.name = name;
    this._hooks = hooks;
    /** @type {Value<Member[]>} */
    this._members = new Value(/** @type {Member[]} */ ([]));
    /** Every member, this page's own included (its key is `me`). */
    this.members = readonly(this._members);
    /** @type {string | null} */
    this.me = null;
    /** @type {Dict | null} the error that refused the room */
    this.error = null;
    this.left = false;
    /** @type {Map<string, Set<(payload: any) => void>>} */
    this._listeners = new Map();
    this._interval = 1 / (hooks.perSecond ?? 20);
    this._lastSent = -Infinity;
    /** @type {Dict | null} */
    this._held = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._timer = null;
  }

  /**
   * @param {ChangeKind | "refused"} kind
   * @param {(payload: any) => void} listener  a Member; for "refused", the error
   * @returns {() => void}
   */
  on(kind, listener) {
    let set = this._listeners.get(kind);
    if (set === undefined) this._listeners.set(kind, (set = new Set()));
    const wrapped = /** @param {any} p */ (p) => listener(p);
    set.add(wrapped);
    return () => set.delete(wrapped);
  }

  /** Replace this page's state in the room (coalesced: the last value wins). @param {Dict} state */
  update(state) {
    if (this.left) throw new Error(`room ${JSON.stringify(this.name)} was left`);
    const now = performance.now() / 1000;
    if (this._timer === null && now - this._lastSent >= this._interval) {
      this._lastSent = now;
      this._hooks.send(this, state);
      return;
    }
    this._held = state;
    if (this._timer === null) {
      const wait = Math.max(0, this._lastSent + this._interval - now);
      this._timer = setTimeout(() => this._flush(), wait * 1000);
    }
  }

  _flush() {
    this._timer = null;
    const held = this._held;
    this._held = null;
    if (held !== null && !this.left) {
      this._lastSent = performance.now() / 1000;
      this._hooks.send(this, held);
    }
  }

  leave() {
    if (this.left) return;
    this.left = true;
    if (this._timer !== null) clearTimeout(this._timer);
    this._timer = null;
    this._hooks.leave(this);
    this._members.set([]);
  }

  /**
   * The protocol moved this room: show its members, tell the listeners.
   * @param {RoomState | undefined} state
   * @param {Change[]} changes
   * @param {Dict | null} error
   */
  _changed(state, changes, error) {
    if (error !== null) {
      this.error = error;
      this.left = true;
      this._emit("refused", error);
      this._members.set([]);
      return;
    }
    if (state !== undefined) {
      this.me = state.me;
      this._members.set([...state.members.values()]);
    }
    for (const [kind, m] of changes) this._emit(kind, m);
  }

  /** @param {string} kind @param {unknown} payload */
  _emit(kind, payload) {
    for (const listener of [...(this._listeners.get(kind) ?? [])]) {
      try {
        listener(payload);
      } catch (exc) {
        report(exc);
      }
    }
  }
}
