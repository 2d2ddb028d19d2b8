// Where a caret goes when the text around it changes (bindInput, input.js): a text
// merge replaces an input's value under the user, and the selection must follow the
// text it was in, not its old offsets. The edit is found by diffing the old value
// against the new one (textmerge.js diffHunks: common prefix and suffix trimmed, then
// Myers over code points), and each end of the selection is carried through the hunks:
// text inserted or removed before it shifts it, text after it leaves it, and a hunk
// around it puts it at the hunk's edge. Offsets in and out are UTF-16 units, as the DOM
// counts them (selectionStart); the diff counts code points, as the merge does.

import { diffHunks } from "./textmerge.js";

/**
 * A DOM offset (UTF-16 units) as a code-point offset.
 * @param {string} text
 * @param {number} offset
 * @returns {number}
 */
function toPoints(text, offset) {
  return Array.from(text.slice(0, offset)).length;
}

/**
 * A code-point offset as a DOM offset (UTF-16 units).
 * @param {string} text
 * @param {number} points
 * @returns {number}
 */
function toUnits(text, points) {
  return Array.from(text).slice(0, points).join("").length;
}

/**
 * Carry a code-point offset through the hunks that turn the old text into the new.
 * @param {import("./textmerge.js").Hunk[]} hunks
 * @param {number} p
 * @param {boolean} isStart  the start of a selection stays before a hunk around it
 * @returns {number}
 */
function carry(hunks, p, isStart) {
  let delta = 0;
  for (const [s, e, text] of hunks) {
    const inserted = Array.from(text).length;
    // A hunk at or after the offset leaves it (text typed at the caret by someone
    // else goes after it: the caret stays by the user's own text).
    if (p <= s) break;
    if (p >= e) {
      delta += inserted - (e - s);
      continue;
    }
    // Inside text that was replaced: the start goes to the hunk's start, the end after
    // its replacement.
    return s + delta + (isStart ? 0 : inserted);
  }
  return p + delta;
}

/**
 * The selection [start, end] in `before`, carried into `after`.
 * @param {string} before
 * @param {string} after
 * @param {number} start  UTF-16 offset in before
 * @param {number} end  UTF-16 offset in before (>= start)
 * @returns {[number, number]}  UTF-16 offsets in after
 */
export function mapSelection(before, after, start, end) {
  if (before === after) return [start, end];
  const hunks = diffHunks(before, after);
  const a = toPoints(before, Math.max(0, Math.min(start, before.length)));
  const b = toPoints(before, Math.max(0, Math.min(end, before.length)));
  const collapsed = a === b;
  const na = carry(hunks, a, !collapsed);
  const nb = collapsed ? na : Math.max(na, carry(hunks, b, false));
  return [toUnits(after, na), toUnits(after, nb)];
}
