// The npm package lists every module of the client (package.json "files"), and each
// module imports only modules of the package: a new module cannot be left out of it.

import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { test } from "node:test";

const dir = new URL("../", import.meta.url);

/**
 * The package modules a module imports (import ... from "./x.js", import "./x.js").
 * @param {string} file
 * @returns {string[]}
 */
function importsOf(file) {
  const source = readFileSync(new URL(file, dir), "utf8");
  return [...source.matchAll(/^(?:import|export) (?:[^;]*? from )?"\.\/([^"]+)";/gms)].map(
    (m) => m[1],
  );
}

test("package.json lists exactly the client's modules", () => {
  const pkg = JSON.parse(readFileSync(new URL("package.json", dir), "utf8"));
  const modules = readdirSync(dir)
    .filter((f) => f.endsWith(".js"))
    .sort();
  assert.deepEqual([...pkg.files].sort(), modules);
  for (const file of modules) {
    for (const target of importsOf(file)) {
      assert.ok(modules.includes(target), `${file} imports ${target}, not in the package`);
    }
  }
});

test("the browser finds every module within three waves of fetches from client.js", () => {
  // Each wave is a round trip: a module imported only by a module of wave n arrives in
  // wave n + 1. client.js imports ops.js for this reason alone.
  /** @type {Map<string, number>} */
  const wave = new Map([["client.js", 1]]);
  let frontier = ["client.js"];
  while (frontier.length) {
    /** @type {string[]} */
    const next = [];
    for (const file of frontier) {
      for (const target of importsOf(file)) {
        if (wave.has(target)) continue;
        wave.set(target, (wave.get(file) ?? 0) + 1);
        next.push(target);
      }
    }
    frontier = next;
  }
  const late = [...wave].filter(([, n]) => n > 3).map(([file]) => file);
  assert.deepEqual(late, [], "modules the browser would find a round trip later");
});
