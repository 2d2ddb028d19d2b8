// Cross-language parity: for every case of the conformance kit's textmerge.json
// (tests/fixtures/protocol/, written by tests/gen_textmerge_fixture.py from Python's
// syncline/textmerge.py; the algorithm is in the kit's README.md), the JS port gives
// the identical merge and the identical hunks, offsets in code points.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { MAX_EDIT_DISTANCE, diffHunks, merge3 } from "../textmerge.js";

const fixture = JSON.parse(
  readFileSync(new URL("../../../tests/fixtures/protocol/textmerge.json", import.meta.url), "utf8"),
);

test("the fixture has the cases it promises", () => {
  assert.ok(fixture.cases.length >= 300);
  assert.equal(fixture.max_edit_distance, MAX_EDIT_DISTANCE);
});

test("merge3 gives what Python gives, for every case", () => {
  /** @type {unknown[]} */
  const failures = [];
  fixture.cases.forEach((/** @type {any} */ c, /** @type {number} */ i) => {
    const merged = merge3(c.base, c.mine, c.theirs);
    if (merged !== c.merged)
      failures.push({
        i,
        base: c.base,
        mine: c.mine,
        theirs: c.theirs,
        expected: c.merged,
        got: merged,
      });
  });
  assert.deepEqual(failures, []);
});

test("diffHunks gives what Python gives, for every case", () => {
  /** @type {unknown[]} */
  const failures = [];
  fixture.cases.forEach((/** @type {any} */ c, /** @type {number} */ i) => {
    for (const side of /** @type {const} */ (["mine", "theirs"])) {
      const got = diffHunks(c.base, c[side]);
      if (JSON.stringify(got) !== JSON.stringify(c[`${side}_hunks`]))
        failures.push({ i, side, got, expected: c[`${side}_hunks`] });
    }
  });
  assert.deepEqual(failures, []);
});
