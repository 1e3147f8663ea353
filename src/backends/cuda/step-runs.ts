/**
 * Runs of a step's rows that belong to one sequence at consecutive positions (a prompt chunk, a
 * verification's pending token and proposals, or one decode row), as the attention kernels need
 * them:
 * - the tensor-core prefill attention (kernels/prefill_attention.cu) takes one block per tile of
 *   rows and head; a tile's rows must share a run, so the block reads one range of keys for all;
 * - the decode attention (kernels/attention.cu) writes each row's key and value to the cache in
 *   the same launch that reads the cache, so a row reads the keys of its own run (up to and
 *   including itself) from the step's k and v instead.
 */
import type { StepRows } from "../backend.js";

/** Rows per prefill attention tile (PA_ROWS in kernels/prefill_attention.cu). */
const prefillTileRows = 64;

/** Whether row r continues the run of row r - 1. */
function continuesRun(rows: StepRows, r: number): boolean {
  return (
    r > 0 &&
    rows.blockTables[r] === rows.blockTables[r - 1] &&
    rows.positions[r] === rows.positions[r - 1] + 1
  );
}

/** The step's runs cut into prefill attention tiles of at most prefillTileRows rows, as [first row, row count] pairs. */
export function prefillTiles(rows: StepRows): Int32Array {
  const tiles: number[] = [];
  for (let r = 0; r < rows.tokens.length; r++) {
    const n = tiles.length;
    if (n > 0 && tiles[n - 1] < prefillTileRows && continuesRun(rows, r)) tiles[n - 1]++;
    else tiles.push(r, 1);
  }
  return Int32Array.from(tiles);
}

/** Per row, the first position of its run: keys from there on are computed in this step. */
export function freshFrom(rows: StepRows): Int32Array {
  const out = new Int32Array(rows.tokens.length);
  for (let r = 0; r < out.length; r++) out[r] = continuesRun(rows, r) ? out[r - 1] : rows.positions[r];
  return out;
}
