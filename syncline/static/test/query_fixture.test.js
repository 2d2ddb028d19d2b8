// Cross-language parity: every case of the conformance kit's query.json
// (tests/fixtures/protocol/, written by tests/gen_query_fixture.py from Python's
// syncline/query.py; format: the kit's README.md) run against query.js: the rows that
// match, their order with the limit applied, the canonical wire form, or a refusal.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { jsonEqual } from "../json.js";
import { QueryError, matches, parseQuery, queryToWire, sortRows } from "../query.js";
import { makeSchema } from "../schema.js";
import { BOARD, KIT_DIR } from "./board.js";

/** @typedef {Record<string, unknown>} Row */

const fixture = JSON.parse(readFileSync(new URL("query.json", KIT_DIR), "utf8"));
const schema = makeSchema(BOARD, null, { strict: true });
/** @type {any[]} */
const CASES = fixture.cases;

test("the fixture has the cases it promises", () => {
  assert.ok(CASES.filter((c) => !c.refused).length >= 30);
  assert.ok(CASES.filter((c) => c.refused).length >= 20);
});

test("matches, sortRows and queryToWire give what Python gives, for every case", () => {
  /** @type {unknown[]} */
  const failures = [];
  CASES.forEach((c, i) => {
    if (c.refused) return;
    const query = parseQuery(c.query, schema);
    /** @type {Row[]} */
    const rows = fixture.row_sets[c.rows];
    const matching = rows.filter((r) => matches(query, r));
    const got = {
      matching: matching.map((r) => r.id),
      result: sortRows(query, matching).map((r) => r.id),
      normalized: JSON.parse(JSON.stringify(queryToWire(query))),
    };
    const expected = { matching: c.matching, result: c.result, normalized: c.normalized };
    if (!jsonEqual(got, expected)) failures.push({ i, query: c.query, expected, got });
  });
  assert.deepEqual(failures, []);
});

test("parseQuery refuses what Python refuses, with a QueryError", () => {
  /** @type {unknown[]} */
  const failures = [];
  CASES.forEach((c, i) => {
    if (!c.refused) return;
    try {
      parseQuery(c.query, schema);
      failures.push({ i, query: c.query, got: "accepted" });
    } catch (exc) {
      if (!(exc instanceof QueryError)) failures.push({ i, query: c.query, got: String(exc) });
    }
  });
  assert.deepEqual(failures, []);
});
