// query.js: the reference semantics of syncline/query.py (expected values computed with
// the Python Query on the same rows).

import assert from "node:assert/strict";
import { test } from "node:test";

import { QueryError, matches, parseQuery, queryToWire, sortRows } from "../query.js";
import { makeSchema } from "../schema.js";
import { BOARD } from "./board.js";

const ROWS = [
  { id: "b", rank: 2 },
  { id: "a", rank: null },
  { id: "c", rank: true },
  { id: "d", rank: "x" },
  { id: "e", rank: 1.5 },
  { id: "f", rank: false },
  { id: "g" },
  { id: "h", rank: "\uffff" },
  { id: "i", rank: "😀" },
];

/** @param {unknown} q @param {Record<string, unknown>[]} rows */
function ids(q, rows = ROWS) {
  return sortRows(parseQuery(q), rows).map((r) => r.id);
}

/** @param {unknown} where */
function matching(where) {
  const q = parseQuery({ c: "cards", where });
  return ROWS.filter((r) => matches(q, r)).map((r) => r.id);
}

test("values sort by type (null, bool, number, string), strings by code point", () => {
  assert.deepEqual(ids({ c: "cards", order: [["rank", "asc"]] }), [
    "a",
    "g",
    "f",
    "c",
    "e",
    "b",
    "d",
    "h",
    "i",
  ]);
  assert.deepEqual(ids({ c: "cards", order: [["rank", "desc"]], limit: 3 }), ["i", "h", "d"]);
  assert.deepEqual(
    ids({ c: "cards" }, [{ id: "\uffff" }, { id: "😀" }, { id: "a" }, { id: "B" }]),
    ["B", "a", "\uffff", "😀"],
  );
});

test("ties are ordered by id, also in a descending order", () => {
  const rows = [
    { id: "z", v: 1 },
    { id: "y", v: 2 },
    { id: "x", v: 1 },
    { id: "w", v: 2 },
  ];
  assert.deepEqual(ids({ c: "cards", order: [["v", "desc"]] }, rows), ["w", "y", "x", "z"]);
  assert.deepEqual(
    ids(
      {
        c: "cards",
        order: [
          ["v", "asc"],
          ["id", "desc"],
        ],
      },
      rows,
    ),
    ["z", "x", "y", "w"],
  );
});

test("filters: null never satisfies a range; booleans are not numbers", () => {
  assert.deepEqual(matching({ rank: { gt: 1 } }), ["b", "e"]);
  assert.deepEqual(matching({ rank: { ne: null } }), ["b", "c", "d", "e", "f", "h", "i"]);
  assert.deepEqual(matching({ rank: { in: [null, "x", 2] } }), ["b", "a", "d", "g"]);
  assert.deepEqual(matching({ rank: { lte: "y" } }), ["d"]);
  assert.deepEqual(matching({ rank: 1 }), []);
  assert.deepEqual(matching({ rank: true }), ["c"]);
  assert.deepEqual(matching({ rank: { gte: 1.5, lt: 2 } }), ["e"]);
  assert.deepEqual(matching({ id: "g" }), ["g"]);
});

test("a record's keys are data: constructor is not a field it has", () => {
  const q = parseQuery({ c: "cards", where: { constructor: null } });
  assert.ok(matches(q, { id: "a" }));
  assert.ok(!matches(parseQuery({ c: "cards", where: { toString: { ne: null } } }), { id: "a" }));
});

test("bad queries are refused with a QueryError naming the problem", () => {
  const schema = makeSchema(BOARD, null, { strict: true });
  assert.throws(() => parseQuery("cards"), QueryError);
  assert.throws(() => parseQuery({ c: "cards", filter: {} }), /unknown query keys/);
  assert.throws(() => parseQuery({ where: {} }), /collection name/);
  assert.throws(() => parseQuery({ c: "nope" }, schema), /unknown collection/);
  assert.throws(() => parseQuery({ c: "cards", where: { title: "x" } }, schema), /not queryable/);
  assert.throws(
    () => parseQuery({ c: "cards", where: { status: { like: "x" } } }, schema),
    /unknown operator/,
  );
  assert.throws(
    () => parseQuery({ c: "cards", where: { status: { in: "x" } } }, schema),
    /list of scalars/,
  );
  assert.throws(() => parseQuery({ c: "cards", where: { status: [1] } }, schema), /takes a string/);
  assert.throws(
    () => parseQuery({ c: "cards", order: [["title", "asc"]] }, schema),
    /cannot order/,
  );
  assert.throws(() => parseQuery({ c: "cards", order: [["rank", "up"]] }, schema), /order item/);
  assert.throws(() => parseQuery({ c: "cards", limit: 0 }), /limit/);
  assert.throws(() => parseQuery({ c: "cards", limit: 1.5 }), /limit/);
  assert.doesNotThrow(() =>
    parseQuery({ c: "cards", where: { status: "todo", id: { in: ["a"] } } }, schema),
  );
  assert.doesNotThrow(() => parseQuery({ c: "anything", where: { title: "x" } }, makeSchema(null)));
  assert.doesNotThrow(() => parseQuery({ c: "nope" }, makeSchema(BOARD)), "a partial schema");
});

test("the canonical wire form names every operator", () => {
  const q = parseQuery({
    c: "cards",
    where: { list_id: "l1", votes: { gte: 3 } },
    order: [["votes", "desc"]],
    limit: 5,
  });
  assert.deepEqual(JSON.parse(JSON.stringify(queryToWire(q))), {
    c: "cards",
    where: { list_id: { eq: "l1" }, votes: { gte: 3 } },
    order: [["votes", "desc"]],
    limit: 5,
  });
});
