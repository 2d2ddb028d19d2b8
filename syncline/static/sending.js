// Which of the unacked mutations to send, and when (invariant 3), for one connection at
// a time: a port of the send window of syncline/protocol/client.py.
//
// Each unacked mutation is sent once per connection, in id order, at most maxInFlight
// unanswered at a time. The server answers a connection's frames in order, so a
// temporary refusal (reject retry/rate, or an error rate naming the mutation) of
// mutation n is followed by gap refusals of those sent after it: the window waits
// until everything in flight is answered and retry_after has passed, then sends again
// from n. A resend that made no progress waits longer each time (stallBackoff), so a
// client never spins. A gap that names an id below every mutation it still holds means
// the server never saw those ids (a new database, or an id the server refused without
// using it up): the unacked mutations are renumbered from there. Resending is always
// safe: an id the server already applied is answered with the original ack (replay).

import { mutFrame } from "./ops.js";

/** @typedef {import("./json.js").Dict} Dict */
/** @typedef {import("./replica.js").Replica} Replica */

export class SendWindow {
  /**
   * @param {Replica} replica  whose unacked mutations are sent
   * @param {{maxInFlight?: number, stallBackoff?: [number, number]}} [options]
   */
  constructor(replica, options = {}) {
    this.replica = replica;
    this.maxInFlight = options.maxInFlight ?? 50;
    /** seconds: first and longest wait between resends that made no progress */
    this.stallBackoff = options.stallBackoff ?? [0.05, 5.0];
    this._sentUpto = 0;
    /** @type {Set<number>} sent on this connection, not answered yet */
    this._inFlight = new Set();
    /** @type {number | null} send again from this id, once nothing is in flight */
    this._rewindTo = null;
    /** @type {number | null} send nothing before this time (seconds) */
    this.holdUntil = null;
    this._stalls = 0; // resends since the last answer that made progress
    this._stallWaited = false;
  }

  /** A new connection: nothing of the mutations has been sent on it. */
  reset() {
    this._sentUpto = 0;
    this._inFlight.clear();
    this._rewindTo = null;
    this.holdUntil = null;
    this._stalls = 0;
    this._stallWaited = false;
  }

  /**
   * The `mut` frames to send now.
   * @param {number} now  seconds, on any steady clock
   * @returns {Dict[]}
   */
  next(now) {
    /** @type {Dict[]} */
    const out = [];
    if (this.holdUntil !== null) {
      if (now < this.holdUntil) return out;
      this.holdUntil = null;
    }
    if (this._rewindTo !== null) {
      if (this._inFlight.size) return out; // wait for every answer to what was sent before
      if (this._stalls && !this._stallWaited) {
        // The last resend made no progress: wait longer each time, never spin.
        const [base, most] = this.stallBackoff;
        this._stallWaited = true;
        this.holdUntil = now + Math.min(most, base * 2 ** (this._stalls - 1));
        return out;
      }
      let unacked = this.replica.unacked().map((m) => m.id);
      if (unacked.length && this._rewindTo < unacked[0]) {
        this.renumber(this._rewindTo);
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
   * The mutation got its answer (ack, or a refusal for good): progress.
   * @param {number} mid
   */
  answered(mid) {
    this._inFlight.delete(mid);
    this._stalls = 0;
  }

  /**
   * The server did not take it this time (no progress): it is no longer in flight.
   * @param {number} mid
   */
  refused(mid) {
    this._inFlight.delete(mid);
  }

  /**
   * Send again from `mid` (at the earliest `until`, seconds), once nothing is in flight.
   * @param {number} mid
   * @param {number | null} [until]
   */
  rewind(mid, until = null) {
    if (until !== null)
      this.holdUntil = this.holdUntil === null ? until : Math.max(this.holdUntil, until);
    this._rewindTo = this._rewindTo === null ? mid : Math.min(this._rewindTo, mid);
  }

  /**
   * Give the unacked mutations the ids first, first + 1, ... (the server never saw the
   * ids they had). Only lowers ids, and never below an answered one.
   * @param {number} first
   */
  renumber(first) {
    const replica = this.replica;
    const unacked = replica.pending.filter((p) => !p.acked);
    const ackedIds = replica.pending.filter((p) => p.acked).map((p) => p.mutation.id);
    if (!unacked.length || first >= unacked[0].mutation.id) return;
    if (ackedIds.length && first <= Math.max(...ackedIds)) return;
    let newId = first;
    for (const p of unacked) {
      p.mutation = { ...p.mutation, id: newId };
      newId += 1;
    }
    replica.nextId = newId;
  }
}
