/**
 * A step's rows as the CUDA kernels read them: one block of 32-bit words, uploaded at once,
 *
 *   [tokens | positions | slots | output rows | block tables | prefill tiles | fresh]
 *
 * with every row's block table padded to the same width, so every step of a given row count has
 * the same layout (and a graph captured on one replays on the next).
 *
 * A one-row decode step that follows the previous one (same sequence, the next position, no new
 * block) need not be uploaded at all: argmax_rows, which chooses its token, can move the rows on
 * the device on by a position (advance_step in kernels/elementwise.cu). `followsOnDevice` says
 * when that gives exactly the rows the host would upload.
 */
import type { StepRows } from "../backend.js";
import { freshFrom, prefillTiles } from "./step-runs.js";

/** A packed step's row counts and the word offset of each part. */
export interface StepLayout {
  rows: number;
  outputRows: number;
  positions: number;
  slots: number;
  /** Where the output rows' indices start (outputRows of them). */
  outputRowsAt: number;
  blockTables: number;
  /** Width of each row's block table. */
  tableWidth: number;
  tiles: number;
  tileCount: number;
  fresh: number;
  /** The most fresh keys a row reads (its position less its run's first, plus one). */
  mostFresh: number;
}

/** A packed step: its words and their layout. */
export interface PackedStep {
  packed: Int32Array;
  layout: StepLayout;
}

/** Most words a step of `rows` rows without prefill tiles packs into (every row an output row). */
export function packedWords(rows: number, tableWidth: number): number {
  return rows * (5 + tableWidth);
}

/**
 * Packs `rows`, block tables padded to at least `tableWidth`; with `prefill`, the step's runs cut
 * into prefill attention tiles instead of each row's fresh position.
 */
export function packStep(rows: StepRows, tableWidth: number, prefill: boolean): PackedStep {
  const M = rows.tokens.length;
  const O = rows.outputRows.length;
  const W = Math.max(tableWidth, ...rows.blockTables.map((t) => t.length));
  const tiles = prefill ? prefillTiles(rows) : new Int32Array(0);
  const fresh = prefill ? new Int32Array(0) : freshFrom(rows);
  const layout: StepLayout = {
    rows: M,
    outputRows: O,
    positions: M,
    slots: 2 * M,
    outputRowsAt: 3 * M,
    blockTables: 3 * M + O,
    tableWidth: W,
    tiles: 3 * M + O + M * W,
    tileCount: tiles.length / 2,
    fresh: 3 * M + O + M * W + tiles.length,
    mostFresh: 0,
  };
  const packed = new Int32Array(layout.fresh + fresh.length);
  packed.set(rows.tokens, 0);
  packed.set(rows.positions, layout.positions);
  packed.set(rows.slots, layout.slots);
  packed.set(rows.outputRows, layout.outputRowsAt);
  rows.blockTables.forEach((t, r) => packed.set(t, layout.blockTables + r * W));
  packed.set(tiles, layout.tiles);
  packed.set(fresh, layout.fresh);
  fresh.forEach((f, r) => (layout.mostFresh = Math.max(layout.mostFresh, rows.positions[r] - f + 1)));
  return { packed, layout };
}

/**
 * Whether `next` is what advance_step makes of `now`, the step on the device: both one row (an
 * output row) of the same sequence, `next` one position on, in a block that `now`'s table already
 * holds (the token aside: the arg-max feeds it).
 */
export function followsOnDevice(now: PackedStep, next: PackedStep, blockSize: number): boolean {
  const oneRow = (s: PackedStep) =>
    s.layout.rows === 1 && s.layout.outputRows === 1 && s.layout.tiles === 4 + s.layout.tableWidth;
  if (!oneRow(now) || !oneRow(next) || now.packed.length !== next.packed.length) return false;
  // [token, position, slot, output row, table of W, fresh]
  const a = now.packed;
  const b = next.packed;
  const W = next.layout.tableWidth;
  const position = a[1] + 1;
  const block = Math.floor(position / blockSize);
  if (block >= W) return false;
  const slot = a[4 + block] * blockSize + (position % blockSize);
  if (b[1] !== position || b[2] !== slot || b[3] !== a[3] || b[4 + W] !== position) return false;
  for (let i = 4; i < 4 + W; i++) if (b[i] !== a[i]) return false;
  return true;
}
