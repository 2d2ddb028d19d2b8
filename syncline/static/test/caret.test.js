// caret.js: a selection carried through an edit made under it.

import assert from "node:assert/strict";
import { test } from "node:test";

import { mapSelection } from "../caret.js";

test("text inserted or removed before the caret shifts it; after it, leaves it", () => {
  assert.deepEqual(mapSelection("hello world", "oh hello world", 8, 8), [11, 11]);
  assert.deepEqual(mapSelection("hello world", "hello world!!", 8, 8), [8, 8]);
  assert.deepEqual(mapSelection("hello world", "world", 8, 8), [2, 2]);
  assert.deepEqual(mapSelection("hello world", "hello", 3, 3), [3, 3]);
});

test("edits on both sides of the caret in one change each count", () => {
  // Someone fixed a word before the caret and another after it, in one merge.
  assert.deepEqual(mapSelection("teh cat sat on teh mat", "the cat sat on the mat", 8, 8), [8, 8]);
  assert.deepEqual(mapSelection("a b c", "XX a b c YY", 3, 3), [6, 6]);
});

test("text typed at the caret by someone else goes after it", () => {
  assert.deepEqual(mapSelection("ab", "aXb", 1, 1), [1, 1]);
});

test("a selection keeps its text; a hunk around an end puts it at the hunk's edge", () => {
  assert.deepEqual(mapSelection("one two three", "zero one two three", 4, 7), [9, 12]);
  // "two" replaced under the selection's end: the end goes after the replacement.
  assert.deepEqual(mapSelection("one two three", "one 2 three", 0, 6), [0, 5]);
  // The caret was inside text someone deleted: it goes where the text was.
  assert.deepEqual(mapSelection("alpha beta gamma", "alpha gamma", 8, 8), [6, 6]);
});

test("offsets are UTF-16 units in and out, the diff is over code points", () => {
  // The fox is two UTF-16 units: the caret after "fox" moves by the inserted text only.
  const before = "The \u{1F98A} fox";
  const after = "Big The \u{1F98A} fox";
  assert.deepEqual(mapSelection(before, after, before.length, before.length), [
    after.length,
    after.length,
  ]);
  assert.deepEqual(mapSelection("\u{1F98A}a", "\u{1F98A}\u{1F98A}a", 2, 2), [2, 2]);
});

test("no change, or offsets past the end", () => {
  assert.deepEqual(mapSelection("same", "same", 2, 3), [2, 3]);
  assert.deepEqual(mapSelection("abc", "Xabc", 99, 99), [4, 4]);
});
