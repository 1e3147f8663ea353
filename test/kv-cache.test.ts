import { test } from "node:test";
import assert from "node:assert/strict";
import { BlockAllocator, SequenceKv } from "../src/engine/kv-cache.js";
import { TachyonError } from "../src/errors.js";

test("sequences get distinct slots and return their blocks", () => {
  const alloc = new BlockAllocator(8);
  const a = new SequenceKv(alloc, 4);
  const b = new SequenceKv(alloc, 4);
  a.reserve(6);
  b.reserve(9);
  assert.equal(alloc.freeBlocks, 8 - 2 - 3);
  const slots = new Set<number>();
  for (let p = 0; p < 6; p++) slots.add(a.slot(p));
  for (let p = 0; p < 9; p++) slots.add(b.slot(p));
  assert.equal(slots.size, 15, "no two positions share a slot");
  assert.equal(a.blockTable.length, 2);
  a.free();
  b.free();
  assert.equal(alloc.freeBlocks, 8);
});

test("running out of blocks is a clear error", () => {
  const alloc = new BlockAllocator(2);
  const a = new SequenceKv(alloc, 4);
  assert.throws(
    () => a.reserve(9),
    (e: unknown) => e instanceof TachyonError && /KV cache is full/.test(e.message),
  );
});
