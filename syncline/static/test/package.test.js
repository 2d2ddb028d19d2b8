// The npm package lists every module of the client (package.json "files"), and each
// module imports only modules of the package: a new module cannot be left out of it.

import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { test } from "node:test";

const dir = new URL("../", import.meta.url);

test("package.json lists exactly the client's modules", () => {
  const pkg = JSON.parse(readFileSync(new URL("package.json", dir), "utf8"));
  const modules = readdirSync(dir)
    .filter((f) => f.endsWith(".js"))
    .sort();
  assert.deepEqual([...pkg.files].sort(), modules);
  for (const file of modules) {
    const source = readFileSync(new URL(file, dir), "utf8");
    for (const [, target] of source.matchAll(/^(?:import|export) [^;]*? from "\.\/([^"]+)";/gms)) {
      assert.ok(modules.includes(target), `${file} imports ${target}, not in the package`);
    }
  }
});
