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

test("a cached prefix is shared by reference and survives its sequence until the blocks are needed", () => {
  const alloc = new BlockAllocator(6);
  const tokens = Array.from({ length: 10 }, (_, i) => i + 1);
  const a = new SequenceKv(alloc, 4);
  a.reserve(10);
  a.length = 10;
  a.publishFullBlocks(tokens);
  assert.equal(alloc.cachedBlocks, 2, "only full blocks are named");

  const b = new SequenceKv(alloc, 4);
  assert.equal(b.reuseCachedPrefix([...tokens.slice(0, 8), 99]), 8);
  assert.deepEqual([...b.blockTable], [...a.blockTable.slice(0, 2)]);
  assert.equal(alloc.freeBlocks, 3, "shared blocks are counted once");
  a.free();
  assert.equal(alloc.freeBlocks, 4, "blocks b still uses stay taken");
  b.free();
  assert.equal(alloc.freeBlocks, 6);
  assert.equal(alloc.cachedBlocks, 2, "unused named blocks stay cached");

  const c = new SequenceKv(alloc, 4);
  assert.equal(c.reuseCachedPrefix(tokens.slice(0, 8)), 4, "the last token is always computed");
  c.free();
  const d = new SequenceKv(alloc, 4);
  d.reserve(24);
  assert.equal(alloc.cachedBlocks, 0, "cached blocks are reused once fresh ones run out");
  d.free();
  assert.equal(new SequenceKv(alloc, 4).reuseCachedPrefix(tokens), 0);
});

test("a different earlier block changes every later block's name", () => {
  const alloc = new BlockAllocator(8);
  const a = new SequenceKv(alloc, 2);
  a.reserve(4);
  a.length = 4;
  a.publishFullBlocks([1, 2, 3, 4]);
  const b = new SequenceKv(alloc, 2);
  assert.equal(b.reuseCachedPrefix([9, 9, 3, 4, 5]), 0);
});
