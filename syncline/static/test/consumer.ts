// An application's script typed against the npm package's declarations (types/, made by
// tsc -p tsconfig.d.json from the JSDoc): `make jstest` compiles it with tsc --noEmit, so
// declarations that break, lose a name or go `any` fail CI. Never run, only compiled.

import {
  bindInput,
  connect,
  type ClientEvent,
  type ConnectOptions,
  type Dict,
  InvalidMutation,
  ListError,
  newId,
  renderList,
  type SyncClient,
} from "@syncline/client";

const options: ConnectOptions = {
  url: "wss://example.test/sync",
  auth: { token: "t" },
  schema: { notes: { body: "text", votes: "counter" } },
  storage: false,
  tabs: true,
  backoff: [0.25, 10],
  reload: (event: ClientEvent) => console.log(event.error),
};

export async function main(): Promise<void> {
  const sync: SyncClient = await connect(options);
  sync.status.subscribe((status) => {
    const s: "connecting" | "live" | "offline" = status;
    console.log(s);
  });
  sync.pending.subscribe((n: number) => console.log(n + 1));
  const rows = sync.query({ c: "notes", order: [["votes", "desc"]] });
  const list = document.querySelector("#notes");
  const template = document.querySelector("template");
  if (list && template) {
    const stop: () => void = renderList(list, template, rows, {
      collection: "notes",
      pristine: sync.pristine,
      fill: (el: Element, row: Dict, { index }) => {
        el.textContent = `${index}: ${String(row.body)}`;
      },
    });
    stop();
  }
  const input = document.querySelector("textarea");
  if (input) {
    const unbind = bindInput(sync, input, "notes", "n1", "body", { send: "change" });
    unbind();
  }
  const id = newId();
  sync.insert("notes", id, { body: "" });
  sync.increment("notes", id, "votes", 2);
  sync.on("conflict", (draft) => sync.resolve(draft, {}));
  sync.on("reload", (e) => console.log(e.kind));
  try {
    sync.update("notes", id, { body: "x" });
  } catch (exc) {
    if (exc instanceof InvalidMutation || exc instanceof ListError) console.log(exc.message);
  }

  // What the declarations must refuse (each line fails to compile without its marker,
  // so an `any` creeping into the declarations fails this file).
  // @ts-expect-error an event kind that does not exist
  sync.on("reloaded", () => {});
  // @ts-expect-error fields are an object
  sync.update("notes", id, "x");
  // @ts-expect-error storage is a store or false
  void connect({ storage: true });
  // @ts-expect-error bindInput's send is "input" or "change"
  if (input) bindInput(sync, input, "notes", "n1", "body", { send: "blur" });
  // @ts-expect-error status is not a number
  const n: number = sync.status.value;
  console.log(n);
}
