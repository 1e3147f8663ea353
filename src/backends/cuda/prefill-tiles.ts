/**
 * How the tensor-core prefill attention kernel (kernels/prefill_attention.cu) divides a step: one
 * block per tile of query rows and head. A tile's rows must share a sequence (one block table)
 * and sit at consecutive positions, so the block reads one range of keys for all of them.
 */
import type { StepRows } from "../backend.js";

/** Rows per prefill attention tile (PA_ROWS in kernels/prefill_attention.cu). */
const prefillTileRows = 64;

/**
 * Cuts a step's rows into prefill attention tiles: runs of rows of one sequence at consecutive
 * positions, at most prefillTileRows each, as [first row, row count] pairs.
 */
export function prefillTiles(rows: StepRows): Int32Array {
  const tiles: number[] = [];
  for (let r = 0; r < rows.tokens.length; r++) {
    const n = tiles.length;
    const continues =
      n > 0 &&
      tiles[n - 1] < prefillTileRows &&
      rows.blockTables[r] === rows.blockTables[r - 1] &&
      rows.positions[r] === rows.positions[r - 1] + 1;
    if (continues) tiles[n - 1]++;
    else tiles.push(r, 1);
  }
  return Int32Array.from(tiles);
}
