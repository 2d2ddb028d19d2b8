// This page's Web Lock, "syncline-client:<client id>", held for the page's life
// (invariant 4): a saved queue whose lock is free belongs to a page that is gone, and
// whoever takes that lock is the only page that may adopt it.

import { report } from "./observable.js";

/** @typedef {import("./storage.js").QueueStore} QueueStore */

/** @param {string} clientId @returns {string} */
export function lockName(clientId) {
  return `syncline-client:${clientId}`;
}

/** @returns {LockManager | null} */
export function defaultLocks() {
  return typeof navigator !== "undefined" && navigator.locks ? navigator.locks : null;
}

/**
 * Take this page's lock and hold it until release() (or the page's end). Resolves once
 * granted; null where Web Locks are missing (no adoption is possible there).
 * @param {string} clientId
 * @param {LockManager | null} [locks]
 * @returns {Promise<{release: () => void} | null>}
 */
export async function holdLock(clientId, locks = defaultLocks()) {
  if (!locks) return null;
  /** @type {() => void} */
  let release = () => {};
  /** @type {Promise<void>} */
  const held = new Promise((resolve) => {
    release = resolve;
  });
  await new Promise((granted, failed) => {
    locks
      .request(lockName(clientId), () => {
        granted(undefined);
        return held;
      })
      .catch(failed);
  });
  return { release };
}

/**
 * This page's lock and the store to keep its queue in, opened together in the
 * background (on a large page the browser answers both late, busy laying the page out).
 * Only a page that holds its lock may keep its queue where other pages look for queues
 * to adopt: an unlocked queue could be adopted while this page still sends it, and one
 * mutation would go out twice. So without the lock, the store opened is closed again.
 * @param {string} clientId
 * @param {object} options
 * @param {boolean} options.tabs  false: no lock (and so no store shared with other pages)
 * @param {LockManager | null} [options.locks]  default navigator.locks
 * @param {(() => Promise<QueueStore>) | null} options.open  how to open the store (null:
 *   the page keeps the store it has)
 * @returns {Promise<{lock: {release: () => void} | null, store: QueueStore | null}>}
 */
export async function claimPage(clientId, options) {
  const locking = options.tabs
    ? holdLock(clientId, options.locks === undefined ? undefined : options.locks).catch((exc) => {
        report(exc);
        return null;
      })
    : Promise.resolve(null);
  const opening = options.open ? options.open() : Promise.resolve(null);
  const [lock, opened] = await Promise.all([locking, opening]);
  if (opened !== null && lock === null) {
    opened.close();
    return { lock, store: null };
  }
  return { lock, store: opened };
}
