// Cursors: opaque tokens naming a point in the server's change log (syncline/cursor.py).
// Today "<epoch>.<seq>"; a client stores and sends them back, and reads only the seq
// after the last "." to match acks (docs/protocol.md, Concepts).

/** @typedef {{epoch: string, seq: number}} Cursor */

/** The stream of changes does not follow the replica (invariant 7): resume afresh. */
export class CursorError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "CursorError";
    this.code = "cursor";
  }
}

/**
 * @param {unknown} token
 * @returns {Cursor}
 */
export function parseCursor(token) {
  if (typeof token !== "string" || token.length > 128) {
    throw new CursorError(
      `a cursor is a string such as 'e1f2.42', not ${String(token).slice(0, 60)}`,
    );
  }
  const dot = token.lastIndexOf(".");
  const epoch = dot < 0 ? "" : token.slice(0, dot);
  const seq = dot < 0 ? "" : token.slice(dot + 1);
  if (!epoch || !/^[0-9]+$/.test(seq)) {
    throw new CursorError(`malformed cursor '${token}': expected '<epoch>.<seq>'`);
  }
  return { epoch, seq: Number(seq) };
}

/** @param {Cursor} cursor @returns {string} */
export function formatCursor(cursor) {
  return `${cursor.epoch}.${cursor.seq}`;
}

/** @param {Cursor | null} a @param {Cursor | null} b @returns {boolean} */
export function sameCursor(a, b) {
  return a !== null && b !== null && a.epoch === b.epoch && a.seq === b.seq;
}
