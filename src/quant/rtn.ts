/**
 * Round-to-nearest quantization: each group's scale (and offset) from its own range, each
 * weight to its nearest code. No data needed; the baseline every other method must beat.
 */
import { quantizeFp8 } from "./fp8.js";
import { groupParams, intWeight, nearestCode } from "./int-grid.js";
import type { QuantizedWeight, QuantScheme } from "./quantized-weight.js";

export interface QuantSpec {
  scheme: QuantScheme;
  /** Inputs per group (int schemes; divides the weight's columns), or the fp8 block's side. */
  groupSize: number;
}

/** `values` (row-major [rows, cols]) of weight `name` in the engine layout of `spec`. */
export function quantizeRtn(
  name: string,
  values: Float32Array,
  rows: number,
  cols: number,
  spec: QuantSpec,
): QuantizedWeight {
  const { scheme, groupSize } = spec;
  if (scheme === "fp8") return quantizeFp8(values, rows, cols, groupSize, groupSize);
  const groups = cols / groupSize;
  const scales = new Float32Array(rows * groups);
  const offsets = new Float32Array(rows * groups);
  const codes = new Int16Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < groups; g++) {
      const start = r * cols + g * groupSize;
      let min = Infinity;
      let max = -Infinity;
      for (let i = start; i < start + groupSize; i++) {
        min = Math.min(min, values[i]);
        max = Math.max(max, values[i]);
      }
      const p = groupParams(name, scheme, min, max);
      scales[r * groups + g] = p.scale;
      offsets[r * groups + g] = p.offset;
      for (let i = start; i < start + groupSize; i++) codes[i] = nearestCode(scheme, values[i], p);
    }
  }
  return intWeight(scheme, rows, cols, groupSize, codes, scales, offsets);
}
