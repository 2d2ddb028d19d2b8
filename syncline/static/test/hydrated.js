// A client hydrated from the conformance kit's page state (card c1 of list l1, schema
// BOARD) over the fakes: what the helper tests (input, reload) start from.

import { readFileSync } from "node:fs";

import { connect } from "../client.js";
import { BOARD } from "./board.js";
import { FakeElement, FakeLocks, FakeSocket } from "./fakes.js";

/** @typedef {import("../client.js").SyncClient} SyncClient */
/** @typedef {import("../client.js").ConnectOptions} ConnectOptions */

export const HYDRATE = JSON.parse(
  readFileSync(
    new URL("../../../tests/fixtures/protocol/hydrate_then_subscribe_since.json", import.meta.url),
    "utf8",
  ),
).steps[0].hydrate;

/**
 * connect() on a fake page embedding HYDRATE; memory storage, no tabs.
 * @param {Partial<ConnectOptions>} [extra]
 * @returns {Promise<{sync: SyncClient, doc: any}>}
 */
export async function hydratedClient(extra = {}) {
  const state = new FakeElement({ id: "syncline-state" }, [JSON.stringify(HYDRATE)]);
  const doc = /** @type {any} */ (new FakeElement({}, [state]));
  doc.activeElement = null;
  const sync = await connect({
    document: doc,
    url: "ws://test/sync",
    socket: (url) => /** @type {any} */ (new FakeSocket(url)),
    storage: false,
    locks: /** @type {any} */ (new FakeLocks()),
    schema: BOARD,
    tabs: false,
    ...extra,
  });
  return { sync, doc };
}
