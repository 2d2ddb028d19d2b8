// Several tabs of one application (invariant 4): each page has its own client id, held
// with a Web Lock named "syncline-client:<id>" for the page's life.
//
// * Sharing. Tabs tell each other their pending mutations over
//   BroadcastChannel("syncline") at once, before the server answers; each tab shows
//   the others' edits under its own (Replica.setOverlay). PeerEdits keeps a peer's
//   mutation until this tab's own cursor reaches the seq of its ack (the same rule as for
//   its own, invariant 8), so no tab flickers; one that ended without effect (refused,
//   conflicted) leaves at once.
// * Adoption (adopt.js): a page sends the queues of pages that are gone; the page's
//   lock (locks.js) tells which those are.
// * PageTabs ties these together for one page: it announces this page's edits, shows
//   the peers' and the adopted ones (the replica's overlay), and adopts dead pages'
//   queues when it gets its lock, when a peer says bye, and again once live if a queue
//   could not be sent.

import { adoptOrphans } from "./adopt.js";
import { cloneJson, getOwn, isObject } from "./json.js";
import { report } from "./observable.js";
import { clientEvent } from "./protocol.js";

/** @typedef {import("./json.js").Dict} Dict */
/** @typedef {import("./cursor.js").Cursor} Cursor */
/** @typedef {import("./ops.js").Op} Op */
/** @typedef {import("./replica.js").Draft} Draft */
/** @typedef {import("./storage.js").QueueStore} QueueStore */
/** @typedef {import("./replica.js").Replica} Replica */
/** @typedef {import("./protocol.js").ClientProtocol} ClientProtocol */
/** @typedef {import("./protocol.js").ClientEvent} ClientEvent */
/** @typedef {import("./connection.js").SocketLike} SocketLike */

export const CHANNEL_NAME = "syncline";

// --- sharing optimistic edits -------------------------------------------------------

/** @typedef {{id: number, ops: Op[], acked: boolean, seq: number | null}} PeerMutation */

/** Other tabs' pending mutations, and when to stop showing each (pure). */
export class PeerEdits {
  constructor() {
    /** @type {Map<string, {epoch: string | null, muts: Map<number, PeerMutation>}>} */
    this.peers = new Map();
  }

  /**
   * A peer's pending mutations, as it announced them. One it no longer lists was
   * settled there: kept while acked with a seq this tab's cursor has not reached.
   * @param {string} client
   * @param {string | null} epoch  the epoch of the peer's cursor
   * @param {PeerMutation[]} muts
   */
  update(client, epoch, muts) {
    const old = this.peers.get(client);
    /** @type {Map<number, PeerMutation>} */
    const next = new Map();
    for (const m of muts) next.set(m.id, m);
    if (old) {
      for (const [id, m] of old.muts)
        if (!next.has(id) && m.acked && m.seq !== null) next.set(id, m);
    }
    this.peers.set(client, { epoch, muts: next });
  }

  /**
   * A peer left: its unanswered mutations will come back adopted, through the server.
   * @param {string} client
   */
  forget(client) {
    this.update(client, this.peers.get(client)?.epoch ?? null, []);
  }

  /** The clients whose mutations are held. @returns {string[]} */
  clients() {
    return [...this.peers.keys()];
  }

  /** How many mutations are held (after the last overlay()). @returns {number} */
  count() {
    let n = 0;
    for (const peer of this.peers.values()) n += peer.muts.size;
    return n;
  }

  /**
   * The ops to show under this tab's own, given its cursor; forgets what it has reached.
   * @param {Cursor | null} cursor
   * @returns {Op[][]}
   */
  overlay(cursor) {
    /** @type {Op[][]} */
    const out = [];
    for (const [client, peer] of this.peers) {
      for (const [id, m] of peer.muts) {
        const reached =
          m.acked &&
          (m.seq === null ||
            (cursor !== null && (peer.epoch !== cursor.epoch || cursor.seq >= m.seq)));
        if (reached) peer.muts.delete(id);
        else out.push(m.ops);
      }
      if (!peer.muts.size) this.peers.delete(client);
    }
    return out;
  }
}

/**
 * @typedef {{t: "edits", client: string, epoch: string | null, muts: PeerMutation[]} | {t: "hello", client: string} | {t: "bye", client: string}} TabMessage
 */

/**
 * A tab message from its JSON text, checked; null if it is not one.
 * @param {unknown} data
 * @returns {TabMessage | null}
 */
export function decodeTabMessage(data) {
  if (typeof data !== "string") return null;
  let obj;
  try {
    obj = cloneJson(JSON.parse(data));
  } catch {
    return null;
  }
  const t = getOwn(obj, "t");
  const client = getOwn(obj, "client");
  if (typeof client !== "string") return null;
  if (t === "hello" || t === "bye") return { t, client };
  if (t !== "edits") return null;
  const epoch = getOwn(obj, "epoch");
  const muts = getOwn(obj, "muts");
  if (!Array.isArray(muts)) return null;
  /** @type {PeerMutation[]} */
  const out = [];
  for (const m of muts) {
    const id = getOwn(m, "id");
    const ops = getOwn(m, "ops");
    const seq = getOwn(m, "seq");
    if (typeof id !== "number" || !Array.isArray(ops) || !ops.every(isObject)) return null;
    out.push({
      id,
      ops: /** @type {Op[]} */ (ops),
      acked: getOwn(m, "acked") === true,
      seq: typeof seq === "number" ? seq : null,
    });
  }
  return { t, client, epoch: typeof epoch === "string" ? epoch : null, muts: out };
}

/** The BroadcastChannel between this application's tabs (messages as JSON text). */
export class TabChannel {
  /**
   * @param {string} clientId
   * @param {(message: TabMessage) => void} onMessage
   * @param {typeof BroadcastChannel | null} [Channel]
   */
  constructor(
    clientId,
    onMessage,
    Channel = typeof BroadcastChannel === "undefined" ? null : BroadcastChannel,
  ) {
    this.clientId = clientId;
    /** @type {BroadcastChannel | null} */
    this.channel = Channel ? new Channel(CHANNEL_NAME) : null;
    if (this.channel) {
      this.channel.onmessage = (event) => {
        const message = decodeTabMessage(event.data);
        if (message !== null && message.client !== clientId) onMessage(message);
      };
    }
  }

  /** @param {TabMessage} message */
  post(message) {
    try {
      this.channel?.postMessage(JSON.stringify(message));
    } catch {
      // A closed channel: the page is going away.
    }
  }

  close() {
    this.channel?.close();
    this.channel = null;
  }
}

// --- one page among its tabs ----------------------------------------------------------

/** The kinds of answers to adopted mutations the application hears of. */
const ADOPTED_EVENTS = new Set(["conflict", "overwritten", "merged", "rejected", "dropped"]);

/**
 * @typedef {object} TabsHost  what PageTabs needs of its page
 * @property {Replica} replica
 * @property {ClientProtocol} protocol  its schema hash and credentials serve adoption
 * @property {() => QueueStore} store  the store the page keeps (where dead pages' queues are)
 * @property {() => SocketLike} openSocket
 * @property {LockManager | null} [locks]
 * @property {() => void} changed  something moved: the page does its bookkeeping
 * @property {(e: ClientEvent, client: string) => void} adoptedEvent  an answer to an
 *   adopted mutation, for the application
 * @property {(draft: Draft) => void} conflict  a draft a dead page left, for the application
 */

/** One page's part in sharing edits with its tabs and adopting dead pages' queues. */
export class PageTabs {
  /** @param {TabsHost} host */
  constructor(host) {
    this.host = host;
    this.clientId = host.replica.clientId;
    /** @type {TabChannel | null} */
    this._channel = null;
    this._peers = new PeerEdits();
    /** Dead pages' queues this page is sending: shown and counted until confirmed. */
    this._adopted = new PeerEdits();
    /** @type {Op[][]} the overlay last given to the replica */
    this._overlay = [];
    /** @type {string | null} */
    this._editsSig = null;
    this._adopting = false;
    /** A queue could not be adopted: try again once this page is live again. */
    this._retry = false;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._adoptTimer = null;
    this._closed = false;
  }

  /** Listen to the other tabs and say hello (they answer with their edits). */
  open() {
    if (this._closed) return;
    this._channel = new TabChannel(this.clientId, (message) => this._onMessage(message));
    this._channel.post({ t: "hello", client: this.clientId });
  }

  /** How many adopted mutations are still unconfirmed (counted as pending). */
  get adoptedCount() {
    return this._adopted.count();
  }

  /** Whether a queue is waiting to be adopted again; asking clears it. */
  takeRetry() {
    const retry = this._retry;
    this._retry = false;
    return retry;
  }

  /**
   * Tell other tabs this tab's pending mutations, when they changed (or when asked).
   * @param {boolean} force
   */
  announce(force) {
    if (!this._channel) return;
    const replica = this.host.replica;
    const muts = replica.pending.map((p) => ({
      id: p.mutation.id,
      ops: p.mutation.ops,
      acked: p.acked,
      seq: p.seq,
    }));
    const epoch = replica.cursor?.epoch ?? null;
    const sig = JSON.stringify([epoch, muts.map((m) => [m.id, m.acked, m.seq])]);
    if (!force && sig === this._editsSig) return;
    this._editsSig = sig;
    this._channel.post({ t: "edits", client: this.clientId, epoch, muts });
  }

  /**
   * Give the replica the peers' and adopted edits still to show; "changed" events for
   * the records concerned if that overlay moved.
   * @returns {ClientEvent[]}
   */
  refreshOverlay() {
    const replica = this.host.replica;
    const cursor = replica.cursor;
    // Adopted queues were made before anything this page does: under it, like peers'.
    const overlay = [...this._adopted.overlay(cursor), ...this._peers.overlay(cursor)];
    const same =
      overlay.length === this._overlay.length &&
      overlay.every((ops, i) => ops === this._overlay[i]);
    if (same) return [];
    this._overlay = overlay;
    return replica.setOverlay(overlay).map((e) => clientEvent(e.kind, { keys: e.keys }));
  }

  /** @param {TabMessage} message */
  _onMessage(message) {
    if (this._closed) return;
    if (message.t === "hello") {
      this.announce(true);
      return;
    }
    if (message.t === "bye") {
      this._peers.forget(message.client);
      // Its lock is released as the page goes: look for its queue a little later.
      if (this._adoptTimer === null) {
        this._adoptTimer = setTimeout(() => {
          this._adoptTimer = null;
          void this.adopt();
        }, 1000);
      }
    } else {
      this._peers.update(message.client, message.epoch, message.muts);
    }
    this.host.changed();
  }

  /** Adopt every queue whose page is gone (one run at a time). */
  async adopt() {
    if (this._adopting || this._closed) return;
    this._adopting = true;
    const host = this.host;
    try {
      await adoptOrphans({
        store: host.store(),
        clientId: this.clientId,
        schema: host.replica.schema,
        schemaHash: host.protocol.schemaHash,
        credentials: host.protocol.credentials,
        openSocket: host.openSocket,
        locks: host.locks,
        onShow: (client, epoch, muts) => {
          if (this._closed) return;
          this._adopted.update(client, epoch, muts);
          host.changed();
        },
        onEvents: (events, client) => {
          for (const e of events) {
            if (e.kind === "conflict" && e.draft) host.replica.drafts.push(e.draft);
            if (ADOPTED_EVENTS.has(e.kind)) host.adoptedEvent(e, client);
          }
          host.changed();
        },
        onDrafts: (drafts) => {
          host.replica.drafts.push(...drafts);
          host.changed();
          for (const draft of drafts) host.conflict(draft);
        },
      });
      // A queue shown here but no longer stored was sent (by this page: everything in
      // it is answered; or by another): stop showing what has no answer. One still
      // stored could not be sent: keep showing it, and try again once live.
      const stored = new Set((await host.store().list()).map((q) => q.client));
      this._retry = false;
      for (const client of this._adopted.clients()) {
        if (stored.has(client)) this._retry = true;
        else this._adopted.forget(client);
      }
      host.changed();
    } catch (exc) {
      report(exc);
    } finally {
      this._adopting = false;
    }
  }

  /** The page is being hidden (perhaps for good): tell the other tabs. */
  bye() {
    this._channel?.post({ t: "bye", client: this.clientId });
  }

  /** Stop: no more adoption, say bye, stop listening. */
  close() {
    this._closed = true;
    if (this._adoptTimer !== null) clearTimeout(this._adoptTimer);
    this._adoptTimer = null;
    this._retry = false;
    this.bye();
    this._channel?.close();
    this._channel = null;
  }
}
