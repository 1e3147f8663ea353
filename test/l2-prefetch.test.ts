import { test } from "node:test";
import assert from "node:assert/strict";
import { l2PrefetchArg } from "../src/backends/cuda/l2-prefetch.js";

/** The struct's fields: pointers, byte counts and the issuing blocks. */
function fields(arg: Uint8Array): { ptrs: number[]; bytes: number[]; blocks: number } {
  const v = new DataView(arg.buffer, arg.byteOffset, arg.byteLength);
  const at = (o: number) => Number(v.getBigUint64(o, true));
  return {
    ptrs: [0, 1, 2, 3].map((i) => at(8 * i)),
    bytes: [0, 1, 2, 3].map((i) => at(32 + 8 * i)),
    blocks: v.getInt32(64, true),
  };
}

test("an L2 prefetch takes the same leading fraction of every range", () => {
  // gate and up codes of 6 MB each and scales of 0.375 MB: a 2 MB budget is 1/6.375 of each.
  const MB = 2 ** 20;
  const ranges: [number, number][] = [
    [0x1000, 6 * MB],
    [0x9000000, 0.375 * MB],
    [0x20000000, 6 * MB],
    [0x30000000, 0.375 * MB],
  ];
  const f = fields(l2PrefetchArg(ranges, 2 * MB, 132));
  assert.deepEqual(f.ptrs, [0x1000, 0x9000000, 0x20000000, 0x30000000]);
  const total = f.bytes.reduce((a, b) => a + b, 0);
  assert.ok(total <= 2 * MB && total > 2 * MB - 4, `prefetches ${total} bytes of a 2 MB budget`);
  assert.ok(
    Math.abs(f.bytes[0] / (6 * MB) - f.bytes[1] / (0.375 * MB)) < 1e-5,
    "same fraction of codes and scales",
  );
  assert.equal(f.blocks, 132);
});

test("an L2 prefetch never passes a range's end, and no budget or no bytes means no issuing blocks", () => {
  const small = fields(l2PrefetchArg([[0x2000, 4096]], 2 ** 21, 8));
  assert.deepEqual(small.bytes, [4096, 0, 0, 0]);
  assert.equal(small.blocks, 8);
  assert.equal(fields(l2PrefetchArg([[0x2000, 4096]], 0, 8)).blocks, 0);
  assert.equal(fields(l2PrefetchArg([], 2 ** 21, 8)).blocks, 0);
  assert.throws(() => l2PrefetchArg(new Array(5).fill([0x2000, 64]), 2 ** 21, 8), /at most 4 ranges/);
});
