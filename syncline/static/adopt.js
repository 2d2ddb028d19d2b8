// Adopting the queues of dead pages (invariants 3, 4). A queue in IndexedDB whose lock
// is free belongs to a page that is gone. A page takes that lock (so no other page
// adopts the same queue) and sends the queue's unanswered mutations under the dead
// page's client id and numbers, over a separate short-lived WebSocket, then deletes the
// queue: a mutation the server had already applied is answered as a replay, so each
// takes effect exactly once (invariant 3). Drafts and refusals are handed to the
// adopting page. While it sends them, the adopting page shows them (onShow: the same
// PeerMutation list a tab announces, with each ack's seq), so they show at once and
// until its cursor reaches their commit, and counts them as pending.

import { Link } from "./connection.js";
import { getOwn } from "./json.js";
import { defaultLocks, lockName } from "./locks.js";
import { ClientProtocol } from "./protocol.js";
import { Replica } from "./replica.js";
import { queueOf, restoreQueue } from "./storage.js";

/** @typedef {import("./json.js").Dict} Dict */
/** @typedef {import("./ops.js").Op} Op */
/** @typedef {import("./replica.js").Draft} Draft */
/** @typedef {import("./schema.js").Schema} Schema */
/** @typedef {import("./storage.js").QueueStore} QueueStore */
/** @typedef {import("./storage.js").SavedQueue} SavedQueue */
/** @typedef {import("./protocol.js").ClientEvent} ClientEvent */
/** @typedef {import("./connection.js").SocketLike} SocketLike */
/** @typedef {import("./tabs.js").PeerMutation} PeerMutation */

/**
 * @typedef {object} AdoptOptions
 * @property {QueueStore} store
 * @property {string} clientId  this page's own (never adopted)
 * @property {Schema} schema
 * @property {string | null} schemaHash
 * @property {Dict | null} [credentials]
 * @property {() => SocketLike} openSocket  a new WebSocket to the sync endpoint
 * @property {(events: ClientEvent[], client: string) => void} [onEvents]  answers to adopted mutations
 * @property {(client: string, epoch: string | null, muts: PeerMutation[]) => void} [onShow]
 *   the queue's mutations to show, as they stand: at once, then after every answer (one
 *   acked with a seq stays listed; one that ended without effect leaves the list)
 * @property {(drafts: Draft[], client: string) => void} [onDrafts]  the dead page's open drafts
 * @property {LockManager | null} [locks]
 * @property {number} [attempts]  connections to try per queue before leaving it for later
 * @property {number} [retryDelay]  ms between them (doubling)
 */

/**
 * Adopt every saved queue whose page is gone. Resolves with the client ids adopted.
 * @param {AdoptOptions} options
 * @returns {Promise<string[]>}
 */
export async function adoptOrphans(options) {
  const locks = options.locks === undefined ? defaultLocks() : options.locks;
  if (!locks) return [];
  /** @type {string[]} */
  const adopted = [];
  for (const queue of await options.store.list()) {
    if (queue.client === options.clientId) continue;
    const done = await locks.request(
      lockName(queue.client),
      { ifAvailable: true },
      async (lock) => {
        if (lock === null) return false; // its page lives, or another page adopts it
        const fresh = await options.store.load(queue.client); // read again, under the lock
        if (fresh === null) return false;
        return adoptQueue(fresh, options);
      },
    );
    if (done) adopted.push(queue.client);
  }
  return adopted;
}

/**
 * Send one dead page's unanswered mutations, then delete its queue. False if they could
 * not all be answered (the queue stays for a later page).
 * @param {SavedQueue} queue
 * @param {AdoptOptions} options
 * @returns {Promise<boolean>}
 */
export async function adoptQueue(queue, options) {
  const replica = new Replica(options.schema, queue.client);
  restoreQueue(replica, queue);
  if (queue.drafts.length && options.onDrafts) options.onDrafts([...queue.drafts], queue.client);
  replica.drafts = [];
  const protocol = new ClientProtocol(replica, {
    schemaHash: options.schemaHash,
    credentials: options.credentials ?? null,
  });
  /** @type {Promise<unknown>} */
  let saving = Promise.resolve();
  const save = () => {
    const snapshot = queueOf(replica);
    saving = saving.then(() => options.store.save(snapshot)).catch(() => {});
  };
  save(); // the drafts now belong to the adopting page
  // What the adopting page shows: the unanswered mutations, and those acked with a seq
  // (its cursor has yet to reach them). The replica forgets a mutation on its ack (it
  // holds no subscription), so the seqs are kept here.
  /** @type {Map<number, Op[]>} */
  const opsOf = new Map();
  /** @type {Map<number, PeerMutation>} */
  const committed = new Map();
  const remember = () => {
    for (const p of replica.pending) opsOf.set(p.mutation.id, p.mutation.ops);
  };
  const show = () => {
    if (!options.onShow) return;
    /** @type {Map<number, PeerMutation>} */
    const muts = new Map(committed);
    for (const p of replica.pending) {
      if (!muts.has(p.mutation.id))
        muts.set(p.mutation.id, {
          id: p.mutation.id,
          ops: p.mutation.ops,
          acked: p.acked,
          seq: p.seq,
        });
    }
    options.onShow(queue.client, protocol.epoch ?? null, [...muts.values()]);
  };
  remember();
  show();
  const attempts = options.attempts ?? 5;
  let delay = options.retryDelay ?? 250;
  for (let attempt = 0; attempt < attempts && replica.unacked().length; attempt++) {
    if (attempt) {
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay *= 2;
    }
    await new Promise((resolve) => {
      const link = new Link(protocol, options.openSocket(), {
        settled: () => saving,
        onSent: remember, // ids may have been renumbered on welcome
        onEvents(events) {
          for (const e of events) {
            const seq = e.kind === "ack" ? getOwn(e.frame, "seq") : null;
            const ops = e.mutationId === null ? undefined : opsOf.get(e.mutationId);
            if (e.mutationId !== null && typeof seq === "number" && ops !== undefined)
              committed.set(e.mutationId, { id: e.mutationId, ops, acked: true, seq });
          }
          show();
          const answered = events.filter((e) => e.kind !== "changed" && e.kind !== "ack");
          if (answered.length && options.onEvents) options.onEvents(answered, queue.client);
          replica.drafts = []; // handed over with the conflict events
          save();
          if (!replica.unacked().length) link.close(1000, "client: adopted queue sent");
        },
        onClose: resolve,
      });
    });
    if (protocol.state === "failed") break; // refused for good: leave it for a page that can
  }
  await saving;
  if (replica.unacked().length) return false;
  await options.store.remove(queue.client);
  return true;
}
