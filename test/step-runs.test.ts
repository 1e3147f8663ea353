import { test } from "node:test";
import assert from "node:assert/strict";
import type { StepRows } from "../src/backends/backend.js";
import { freshFrom, prefillTiles } from "../src/backends/cuda/step-runs.js";

/** Rows of sequences given as [block table, first position, row count] runs. */
function rows(runs: [Int32Array, number, number][]): StepRows {
  const positions: number[] = [];
  const blockTables: Int32Array[] = [];
  for (const [table, first, count] of runs) {
    for (let i = 0; i < count; i++) {
      positions.push(first + i);
      blockTables.push(table);
    }
  }
  const n = positions.length;
  return {
    tokens: new Int32Array(n),
    positions: Int32Array.from(positions),
    slots: new Int32Array(n),
    blockTables,
    outputRows: new Int32Array(0),
  };
}

test("prefill tiles: at most 64 rows, never across sequences or position gaps", () => {
  const a = new Int32Array(4);
  const b = new Int32Array(4);
  const tiles = prefillTiles(
    rows([
      [a, 0, 150],
      [b, 10, 3],
      [b, 20, 64],
      [a, 150, 1],
    ]),
  );
  assert.deepEqual(Array.from(tiles), [0, 64, 64, 64, 128, 22, 150, 3, 153, 64, 217, 1]);
});

test("prefill tiles cover every row exactly once", () => {
  const tables = [new Int32Array(1), new Int32Array(1), new Int32Array(1)];
  for (let trial = 0; trial < 50; trial++) {
    const runs: [Int32Array, number, number][] = [];
    for (let i = 0; i < 1 + (trial % 5); i++)
      runs.push([tables[(trial + i) % 3], trial * 7, 1 + ((trial * 37 + i * 11) % 130)]);
    const r = rows(runs);
    const tiles = prefillTiles(r);
    let next = 0;
    for (let t = 0; t < tiles.length; t += 2) {
      assert.equal(tiles[t], next);
      assert.ok(tiles[t + 1] >= 1 && tiles[t + 1] <= 64);
      for (let k = 1; k < tiles[t + 1]; k++) {
        assert.equal(r.blockTables[next + k], r.blockTables[next]);
        assert.equal(r.positions[next + k], r.positions[next] + k);
      }
      next += tiles[t + 1];
    }
    assert.equal(next, r.tokens.length);
  }
});

test("fresh keys: each row reads its own run's keys from the step, from the run's first position", () => {
  const a = new Int32Array(4);
  const b = new Int32Array(4);
  // a decode row, a verification of 4 rows, then sequence a again after a position gap (a new run)
  const r = rows([
    [a, 7, 1],
    [b, 30, 4],
    [a, 9, 2],
  ]);
  assert.deepEqual(Array.from(freshFrom(r)), [7, 30, 30, 30, 30, 9, 9]);
});
