/**
 * FP8 e4m3fn weights with one float32 scale per block, as DeepSeek-V3 and MiMo ship them:
 * scale = block amax / 448 (448 is e4m3fn's largest finite value), code = e4m3(w / scale).
 */
import { toFloat32 } from "../model/dtype.js";
import type { QuantizedWeight } from "./quantized-weight.js";

const E4M3_MAX = 448;

/** Values of the non-negative finite e4m3fn codes 0x00..0x7e, increasing with the code. */
let positiveValues: Float32Array | undefined;

/** The e4m3fn byte nearest to `x` (ties to the even code), saturating at ±448. */
export function encodeE4m3(x: number): number {
  const values = (positiveValues ??= toFloat32(
    Uint8Array.from({ length: 0x7f }, (_, i) => i),
    "F8_E4M3",
  ));
  const sign = x < 0 || Object.is(x, -0) ? 0x80 : 0;
  const a = Math.abs(x);
  if (a >= E4M3_MAX) return sign | 0x7e;
  // The largest code whose value is <= a, then whichever of it and the next is nearer.
  let lo = 0;
  let hi = 0x7e;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (values[mid] <= a) lo = mid;
    else hi = mid - 1;
  }
  const below = a - values[lo];
  const above = values[lo + 1] - a;
  const code = above < below || (above === below && (lo & 1) === 1) ? lo + 1 : lo;
  return sign | code;
}

/** Block-scaled e4m3fn of a row-major [rows, cols] matrix; edge blocks may be partial. */
export function quantizeFp8(
  values: Float32Array,
  rows: number,
  cols: number,
  blockRows = 128,
  blockCols = 128,
): QuantizedWeight {
  const blocksDown = Math.ceil(rows / blockRows);
  const blocksAcross = Math.ceil(cols / blockCols);
  const scales = new Float32Array(blocksDown * blocksAcross);
  const codes = new Uint8Array(rows * cols);
  for (let br = 0; br < blocksDown; br++) {
    for (let bc = 0; bc < blocksAcross; bc++) {
      const r0 = br * blockRows;
      const r1 = Math.min(rows, r0 + blockRows);
      const c0 = bc * blockCols;
      const c1 = Math.min(cols, c0 + blockCols);
      let amax = 0;
      for (let r = r0; r < r1; r++)
        for (let c = c0; c < c1; c++) amax = Math.max(amax, Math.abs(values[r * cols + c]));
      const scale = Math.fround(amax / E4M3_MAX);
      scales[br * blocksAcross + bc] = scale;
      if (scale === 0) continue; // an all-zero block: codes stay 0
      for (let r = r0; r < r1; r++) {
        for (let c = c0; c < c1; c++) codes[r * cols + c] = encodeE4m3(values[r * cols + c] / scale);
      }
    }
  }
  return {
    scheme: "fp8",
    rows,
    cols,
    groupSize: blockCols,
    groupRows: blockRows,
    codes,
    scales,
    offsets: null,
  };
}
