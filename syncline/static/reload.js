// The default answer to a `reload` event (the server runs another schema than the one
// this page was built for: docs/protocol.md, error codes): reload the page, once the
// pending queue is saved, so the next page load adopts and sends it (tabs.js). The
// application decides instead when it listens to "reload" itself, or passes
// connect({ reload: false }) (do nothing) or a function (call it). A page reloaded by
// this handler less than a minute ago does not reload again for the same reason: a
// page served stale (a cache holding the old HTML) would otherwise reload forever.

/** sessionStorage key: when this handler last reloaded this tab (ms since the epoch). */
export const RELOADED_AT = "syncline-reloaded-at";
const AGAIN_AFTER_MS = 60_000;

/**
 * What the default handler needs of the page (the globals, unless a test gives its own).
 * @typedef {object} ReloadPage
 * @property {{reload: () => void}} location
 * @property {Pick<Storage, "getItem" | "setItem"> | null} storage  sessionStorage
 * @property {() => number} now
 */

/** @returns {ReloadPage | null} */
function thisPage() {
  const g = /** @type {any} */ (globalThis);
  if (!g.location || typeof g.location.reload !== "function") return null;
  /** @type {Pick<Storage, "getItem" | "setItem"> | null} */
  let storage = null;
  try {
    storage = g.sessionStorage ?? null;
  } catch {
    storage = null; // storage disabled: reload without the guard
  }
  return { location: g.location, storage, now: () => Date.now() };
}

/**
 * Reload the page once `saved` settles, unless this handler reloaded it a moment ago.
 * Resolves to whether it reloaded.
 * @param {Promise<unknown>} saved  the pending queue's last save
 * @param {ReloadPage | null} [page]
 * @returns {Promise<boolean>}
 */
export async function reloadPage(saved, page = thisPage()) {
  if (page === null) return false;
  try {
    await saved;
  } catch {
    // A failed save was reported where it failed; the reload goes ahead.
  }
  const at = Number(safeGet(page.storage, RELOADED_AT));
  if (Number.isFinite(at) && at > 0 && page.now() - at < AGAIN_AFTER_MS) {
    console.warn(
      "syncline: the server still asks for a reload a moment after one; not reloading again " +
        "(is the page's HTML cached?)",
    );
    return false;
  }
  try {
    page.storage?.setItem(RELOADED_AT, String(page.now()));
  } catch {
    // Storage full or disabled: reload without the guard.
  }
  page.location.reload();
  return true;
}

/**
 * @param {Pick<Storage, "getItem"> | null} storage
 * @param {string} key
 * @returns {string | null}
 */
function safeGet(storage, key) {
  try {
    return storage ? storage.getItem(key) : null;
  } catch {
    return null;
  }
}
