// The link between a protocol and its socket: renumbered mutations are durable under
// their new numbers before any of them goes out (exactly-once across adoption).

import assert from "node:assert/strict";
import { test } from "node:test";

import { Link } from "../connection.js";
import { ClientProtocol } from "../protocol.js";
import { Replica } from "../replica.js";
import { makeSchema } from "../schema.js";
import { queueOf } from "../storage.js";
import { FakeSocket, settle } from "./fakes.js";

test("renumbered mutations are saved before they are sent", async () => {
  const replica = new Replica(makeSchema(null, "h"), "tab-aaaaaaaa");
  const protocol = new ClientProtocol(replica, { schemaHash: "h", credentials: null });
  for (const id of ["a", "b", "c"]) replica.insert("cards", id, { title: id });
  /** @type {string[]} */
  const log = [];
  /** @type {Promise<unknown>} */
  let saving = Promise.resolve();
  const socket = new FakeSocket("ws://test/sync");
  const realSend = socket.send.bind(socket);
  socket.send = (text) => {
    const frame = JSON.parse(text);
    if (frame.t === "mut") log.push(`send ${frame.id}:${frame.ops[0].id}`);
    realSend(text);
  };
  new Link(protocol, socket, {
    onEvents: () => {},
    onClose: () => {},
    settled: () => saving,
    persist: () => {
      const ids = queueOf(replica).pending.map((p) => `${p.mutation.id}:${p.mutation.ops[0].id}`);
      saving = saving.then(async () => {
        await new Promise((resolve) => setTimeout(resolve, 5)); // IndexedDB takes a while
        log.push(`saved ${ids.join(",")}`);
      });
    },
  });
  socket.open();
  socket.receive({ t: "welcome", v: 1, client: "tab-aaaaaaaa", epoch: "e", head: "e.0", last: 0 });
  await settle();
  await new Promise((resolve) => setTimeout(resolve, 20));
  log.length = 0;
  // The server refused #1 without using it up and says #2 and #3 are gaps.
  socket.receive({ t: "error", code: "query", message: "x", ref: 1 });
  socket.receive({ t: "reject", mid: 2, permanent: false, code: "gap", expected: 1 });
  socket.receive({ t: "reject", mid: 3, permanent: false, code: "gap", expected: 1 });
  await settle();
  await new Promise((resolve) => setTimeout(resolve, 50));
  const firstSend = log.findIndex((line) => line.startsWith("send"));
  assert.ok(firstSend > 0, `nothing was saved before sending: ${log}`);
  const lastSaveBefore = log.slice(0, firstSend).filter((l) => l.startsWith("saved")).at(-1);
  const sentIds = log.filter((l) => l.startsWith("send")).map((l) => l.slice(5));
  for (const sent of sentIds) assert.ok(lastSaveBefore?.includes(sent), `${sent} sent before saved: ${log}`);
});
