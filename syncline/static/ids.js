// Identifiers made in the browser without asking anyone: a client id per page load
// (invariant 4: each page numbers its own mutations) and record ids (UUIDv7, sortable by
// creation time, as model.py new_id makes them).

/** A random client id for this page instance (invariant 4): "tab-" and a UUID. */
export function newClientId() {
  return `tab-${uuid4()}`;
}

/**
 * A new record id: a UUIDv7 string, unique without coordination and sortable by
 * creation time (model.py new_id).
 * @returns {string}
 */
export function newId() {
  const b = globalThis.crypto.getRandomValues(new Uint8Array(16));
  let ms = Date.now();
  for (let i = 5; i >= 0; i--) {
    b[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  return uuidText(b, 0x70);
}

/** @returns {string} */
function uuid4() {
  const c = globalThis.crypto;
  if (typeof c.randomUUID === "function") return c.randomUUID(); // secure contexts only
  return uuidText(c.getRandomValues(new Uint8Array(16)), 0x40);
}

/**
 * Sixteen bytes as a UUID of the given version (0x40: v4, 0x70: v7), RFC 4122 variant.
 * @param {Uint8Array} b
 * @param {number} version
 * @returns {string}
 */
function uuidText(b, version) {
  b[6] = (b[6] & 0x0f) | version;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
