import { test } from "node:test";
import assert from "node:assert/strict";
import type { StepRows } from "../src/backends/backend.js";
import { followsOnDevice, packStep, packedWords } from "../src/backends/cuda/step-layout.js";
import { BlockAllocator, SequenceKv } from "../src/engine/kv-cache.js";

const blockSize = 16;
const tableWidth = 32;

/** The rows of a one-token decode step of `seq`, as the executor makes them; moves seq on. */
function decodeRows(seq: SequenceKv, token: number): StepRows {
  const p = seq.length;
  seq.reserve(p + 1);
  const rows: StepRows = {
    tokens: Int32Array.of(token),
    positions: Int32Array.of(p),
    slots: Int32Array.of(seq.slot(p)),
    blockTables: [seq.blockTable],
    outputRows: Int32Array.of(0),
  };
  seq.length = p + 1;
  return rows;
}

test("a packed step: tokens, positions, slots, output rows, padded tables, fresh positions", () => {
  const a = Int32Array.of(5, 2);
  const b = Int32Array.of(7);
  const rows: StepRows = {
    tokens: Int32Array.of(11, 12, 13),
    positions: Int32Array.of(20, 21, 3),
    slots: Int32Array.of(84, 85, 115),
    blockTables: [a, a, b],
    outputRows: Int32Array.of(1, 2),
  };
  const { packed, layout } = packStep(rows, 4, false);
  assert.deepEqual(
    Array.from(packed),
    [11, 12, 13, 20, 21, 3, 84, 85, 115, 1, 2, 5, 2, 0, 0, 5, 2, 0, 0, 7, 0, 0, 0, 20, 20, 3],
  );
  assert.deepEqual(
    [
      layout.positions,
      layout.slots,
      layout.outputRowsAt,
      layout.blockTables,
      layout.fresh,
      layout.tableWidth,
    ],
    [3, 6, 9, 11, 23, 4],
  );
  assert.equal(layout.mostFresh, 2); // row 1 reads its own key and row 0's
  assert.ok(packed.length <= packedWords(3, 4));
});

test("a decode step follows the previous one on the device unless it opens a block", () => {
  const pool = new BlockAllocator(tableWidth);
  const seq = new SequenceKv(pool, blockSize);
  const other = new SequenceKv(pool, blockSize);
  let now = packStep(decodeRows(seq, 1), tableWidth, false);
  for (let t = 1; t < 150; t++) {
    // Another sequence takes blocks in between, so this one's blocks are not consecutive.
    if (t % 20 === 0) {
      other.reserve(other.length + blockSize);
      other.length += blockSize;
    }
    const opensBlock = t % blockSize === 0;
    const next = packStep(decodeRows(seq, 0), tableWidth, false);
    assert.equal(followsOnDevice(now, next, blockSize), !opensBlock, `position ${t}`);
    now = next;
  }
});

test("other steps do not follow on the device", () => {
  const pool = new BlockAllocator(tableWidth);
  const seq = new SequenceKv(pool, blockSize);
  const other = new SequenceKv(pool, blockSize);
  seq.reserve(40);
  seq.length = 3;
  other.reserve(40);
  other.length = 4;
  const now = packStep(decodeRows(seq, 1), tableWidth, false);
  const snapshot = seq.length;
  const follows = (rows: StepRows) => followsOnDevice(now, packStep(rows, tableWidth, false), blockSize);
  // The same position again (a repeated step), or two positions on.
  seq.length = snapshot - 1;
  assert.equal(follows(decodeRows(seq, 0)), false);
  seq.length = snapshot + 1;
  assert.equal(follows(decodeRows(seq, 0)), false);
  // Another sequence at the next position.
  assert.equal(follows(decodeRows(other, 0)), false);
  // Two rows, or a row that is not an output row.
  seq.length = snapshot;
  const two = decodeRows(seq, 0);
  const pair: StepRows = {
    tokens: Int32Array.of(0, 0),
    positions: Int32Array.of(two.positions[0], two.positions[0] + 1),
    slots: Int32Array.of(two.slots[0], two.slots[0] + 1),
    blockTables: [seq.blockTable, seq.blockTable],
    outputRows: Int32Array.of(0, 1),
  };
  assert.equal(follows(pair), false);
  assert.equal(follows({ ...two, outputRows: new Int32Array(0) }), false);
  // The right position with a wrong slot.
  assert.equal(follows({ ...two, slots: Int32Array.of(two.slots[0] + 1) }), false);
  assert.equal(follows(two), true);
});
