// The npm package lists every module of the client (package.json "files"), and each
// module imports only modules of the package: a new module cannot be left out of it.
// `npm pack` packs exactly the modules, their type declarations (made from the JSDoc at
// pack time), the README, the LICENSE and package.json, and the entry points it names
// are in the pack.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
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
  const listed = pkg.files.filter((/** @type {string} */ f) => f.endsWith(".js"));
  assert.deepEqual([...listed].sort(), modules);
  assert.deepEqual(
    pkg.files.filter((/** @type {string} */ f) => !f.endsWith(".js")),
    ["types/*.d.ts"],
  );
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

test("npm pack packs the modules, their declarations, README, LICENSE, and no more", () => {
  // prepack runs here too: the declarations are made from the JSDoc, as for a release.
  const out = execFileSync("npm", ["pack", "--dry-run", "--json", "--loglevel=error"], {
    cwd: dir,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    timeout: 100_000,
  });
  const [pack] = JSON.parse(out.slice(out.indexOf("[")));
  const packed = pack.files.map((/** @type {{path: string}} */ f) => f.path).sort();
  const modules = readdirSync(dir).filter((f) => f.endsWith(".js"));
  const expected = [
    ...modules,
    ...modules.map((f) => `types/${f.replace(/\.js$/, ".d.ts")}`),
    "LICENSE",
    "README.md",
    "package.json",
  ].sort();
  assert.deepEqual(packed, expected);
  const pkg = JSON.parse(readFileSync(new URL("package.json", dir), "utf8"));
  for (const entry of [pkg.main, pkg.types, pkg.exports["."].types, pkg.exports["."].default]) {
    assert.ok(packed.includes(entry.replace(/^\.\//, "")), `${entry} is not in the pack`);
  }
  const license = readFileSync(new URL("LICENSE", dir), "utf8");
  assert.equal(license, readFileSync(new URL("../../LICENSE", dir), "utf8"), "the repo's LICENSE");
  assert.match(pkg.license, /^MIT$/);
  assert.match(license, /MIT License/);
});
