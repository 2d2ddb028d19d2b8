// Deterministic three-way text merge, in Unicode code points: a port of
// syncline/textmerge.py that must give identical results (tests/fixtures/protocol/textmerge.json
// checks it case by case).
//
// Theory of operation: merge3(base, mine, theirs) diffs base->mine and base->theirs with
// Myers' O(ND) algorithm over code points (common prefix and suffix trimmed first), turns
// each diff into hunks [start, end, replacement] in base coordinates, and applies both
// hunk lists to base. Hunks that do not overlap both apply. Hunks that overlap (or insert
// at the same point) are the declared fallback: the overlapping region becomes theirs'
// version followed by mine's, so no one's text is lost; equal hunks apply once. No
// time-outs: the same inputs always give the same output.
//
// Offsets are code points (docs/protocol.md, Ops): strings are split with Array.from,
// never indexed by UTF-16 unit, so an emoji is one unit as it is in Python.

export const MAX_EDIT_DISTANCE = 2000;

/** @typedef {[number, number, string]} Hunk  Replace base[start:end] (code points) with the string. */

/**
 * The edits that turn `base` into `next`, as hunks in base coordinates (code points).
 * @param {string} base
 * @param {string} next
 * @returns {Hunk[]}
 */
export function diffHunks(base, next) {
  if (base === next) return [];
  return hunks(Array.from(base), Array.from(next));
}

/**
 * @param {string[]} base
 * @param {string[]} next
 * @returns {Hunk[]}
 */
function hunks(base, next) {
  let prefix = 0;
  const limit = Math.min(base.length, next.length);
  while (prefix < limit && base[prefix] === next[prefix]) prefix += 1;
  let suffix = 0;
  while (
    suffix < limit - prefix &&
    base[base.length - 1 - suffix] === next[next.length - 1 - suffix]
  ) {
    suffix += 1;
  }
  const a = base.slice(prefix, base.length - suffix);
  const b = next.slice(prefix, next.length - suffix);
  const script = myers(a, b);
  if (script === null) return [[prefix, prefix + a.length, b.join("")]];
  /** @type {Hunk[]} */
  const out = [];
  let i = 0;
  let j = 0;
  /** @type {number | null} */
  let start = null;
  /** @type {string[]} */
  let ins = [];
  for (const op of script) {
    if (op === "=") {
      if (start !== null) {
        out.push([prefix + start, prefix + i, ins.join("")]);
        start = null;
        ins = [];
      }
      i += 1;
      j += 1;
      continue;
    }
    if (start === null) start = i;
    if (op === "-") {
      i += 1;
    } else {
      ins.push(b[j]);
      j += 1;
    }
  }
  if (start !== null) out.push([prefix + start, prefix + i, ins.join("")]);
  return out;
}

/**
 * Shortest edit script as a list of "=", "-", "+"; deletions before insertions.
 * Null when the edit distance passes MAX_EDIT_DISTANCE.
 * @param {string[]} a
 * @param {string[]} b
 * @returns {string[] | null}
 */
function myers(a, b) {
  const n = a.length;
  const m = b.length;
  if (n === 0) return new Array(m).fill("+");
  if (m === 0) return new Array(n).fill("-");
  const offset = n + m;
  let v = new Int32Array(2 * offset + 2);
  /** @type {Int32Array[]} */
  const trace = [];
  const dMax = Math.min(offset, MAX_EDIT_DISTANCE);
  for (let d = 0; d <= dMax; d++) {
    trace.push(v.slice());
    for (let k = -d; k <= d; k += 2) {
      let x;
      if (k === -d || (k !== d && v[offset + k - 1] < v[offset + k + 1])) {
        x = v[offset + k + 1];
      } else {
        x = v[offset + k - 1] + 1;
      }
      let y = x - k;
      while (x < n && y < m && a[x] === b[y]) {
        x += 1;
        y += 1;
      }
      v[offset + k] = x;
      if (x >= n && y >= m) return backtrack(trace, a, b, offset, d);
    }
  }
  return null;
}

/**
 * @param {Int32Array[]} trace
 * @param {string[]} a
 * @param {string[]} b
 * @param {number} offset
 * @param {number} dEnd
 * @returns {string[]}
 */
function backtrack(trace, a, b, offset, dEnd) {
  let x = a.length;
  let y = b.length;
  /** @type {string[]} */
  const script = [];
  for (let d = dEnd; d > 0; d--) {
    const v = trace[d];
    const k = x - y;
    let prevK;
    if (k === -d || (k !== d && v[offset + k - 1] < v[offset + k + 1])) {
      prevK = k + 1;
    } else {
      prevK = k - 1;
    }
    const prevX = v[offset + prevK];
    const prevY = prevX - prevK;
    while (x > prevX && y > prevY) {
      script.push("=");
      x -= 1;
      y -= 1;
    }
    script.push(x === prevX ? "+" : "-");
    x = prevX;
    y = prevY;
  }
  while (x > 0 && y > 0) {
    script.push("=");
    x -= 1;
    y -= 1;
  }
  script.reverse();
  return script;
}

/**
 * Merge my edit of `base` into `theirs` (the committed text).
 * @param {string} base
 * @param {string} mine
 * @param {string} theirs
 * @returns {string}
 */
export function merge3(base, mine, theirs) {
  if (mine === base || mine === theirs) return theirs;
  if (theirs === base) return mine;
  return applyBoth(Array.from(base), diffHunks(base, theirs), diffHunks(base, mine));
}

/**
 * @param {Hunk} h1
 * @param {Hunk} h2
 * @returns {boolean}
 */
function overlaps(h1, h2) {
  const [s1, e1] = h1;
  const [s2, e2] = h2;
  if (s1 === e1 && s2 === e2) return s1 === s2; // two inserts at one point
  if (s1 === e1) return (s2 < s1 && s1 < e2) || s1 === s2;
  if (s2 === e2) return (s1 < s2 && s2 < e1) || s1 === s2;
  return s1 < e2 && s2 < e1;
}

/**
 * @param {string[]} base
 * @param {Hunk[]} theirs
 * @param {Hunk[]} mine
 * @returns {string}
 */
function applyBoth(base, theirs, mine) {
  /** @type {string[]} */
  const out = [];
  let pos = 0;
  let ti = 0;
  let mi = 0;
  while (ti < theirs.length || mi < mine.length) {
    // Take the next group: a hunk plus every hunk of either side that overlaps it,
    // transitively.
    /** @type {Hunk[]} */
    let groupT;
    /** @type {Hunk[]} */
    let groupM;
    if (mi >= mine.length || (ti < theirs.length && theirs[ti][0] <= mine[mi][0])) {
      groupT = [theirs[ti]];
      groupM = [];
      ti += 1;
    } else {
      groupT = [];
      groupM = [mine[mi]];
      mi += 1;
    }
    let start = (groupT.length ? groupT : groupM)[0][0];
    let end = Math.max(...groupT.concat(groupM).map((h) => h[1]));
    let grew = true;
    while (grew) {
      grew = false;
      /** @type {Hunk} */
      const probe = [start, end, ""];
      if (ti < theirs.length) {
        const next = theirs[ti];
        if (overlaps(next, probe) || groupM.some((h) => overlaps(next, h))) {
          groupT.push(next);
          ti += 1;
          grew = true;
        }
      }
      if (mi < mine.length) {
        const next = mine[mi];
        if (overlaps(next, probe) || groupT.some((h) => overlaps(next, h))) {
          groupM.push(next);
          mi += 1;
          grew = true;
        }
      }
      const all = groupT.concat(groupM);
      end = Math.max(...all.map((h) => h[1]));
      start = Math.min(...all.map((h) => h[0]));
    }
    out.push(base.slice(pos, start).join(""));
    const region = base.slice(start, end);
    const tText = applyHunks(region, groupT, start);
    const mText = applyHunks(region, groupM, start);
    if (!groupM.length || tText === mText) {
      out.push(tText);
    } else if (!groupT.length) {
      out.push(mText);
    } else {
      out.push(tText + mText);
    }
    pos = end;
  }
  out.push(base.slice(pos).join(""));
  return out.join("");
}

/**
 * @param {string[]} region
 * @param {Hunk[]} hunkList
 * @param {number} origin
 * @returns {string}
 */
function applyHunks(region, hunkList, origin) {
  /** @type {string[]} */
  const out = [];
  let pos = 0;
  for (const [s, e, text] of hunkList) {
    out.push(region.slice(pos, s - origin).join(""));
    out.push(text);
    pos = e - origin;
  }
  out.push(region.slice(pos).join(""));
  return out.join("");
}
