// query.js: what is particular to the JS port (records as JS objects, its error
// messages). The reference semantics of syncline/query.py (filters, order, ties, nulls,
// limits, refusals) are checked on every case of the conformance kit's query.json, which
// Python computes, by query_fixture.test.js.

import assert from "node:assert/strict";
import { test } from "node:test";

import { QueryError, matches, parseQuery, queryToWire } from "../query.js";
import { makeSchema } from "../schema.js";
import { BOARD } from "./board.js";

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
