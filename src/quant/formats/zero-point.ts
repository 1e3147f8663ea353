/**
 * Published int checkpoints (GPTQ, AWQ) store w = scale · (q − zero) with an integer zero point
 * per group. The engine layout stores w = q · scale + offset, so offset = −zero · scale, rounded
 * to float16 like every integer-scheme offset (src/quant/quantized-weight.ts). 8-bit weights map
 * to the symmetric int8 scheme, which needs zero = 128.
 */
import { TachyonError } from "../../errors.js";
import { roundToF16 } from "../../model/dtype.js";
import { intWeight } from "../int-grid.js";
import type { QuantizedWeight } from "../quantized-weight.js";

export interface ZeroPointSource {
  bits: 2 | 4 | 8;
  /** [rows, cols] = [outputs N, inputs K]; groupSize consecutive inputs share a group. */
  rows: number;
  cols: number;
  groupSize: number;
  /** Unsigned code of output n, input k. */
  code(n: number, k: number): number;
  /** Checkpoint group of the engine group `g` (g = k / groupSize); the identity unless reordered. */
  group(g: number): number;
  zero(group: number, n: number): number;
  scale(group: number, n: number): number;
}

/** The engine-layout weight of `src`; `name` and `format` label errors. */
export function fromZeroPoints(src: ZeroPointSource, name: string, format: string): QuantizedWeight {
  const { bits, rows, cols, groupSize } = src;
  const groups = cols / groupSize;
  const scales = new Float32Array(rows * groups);
  const offsets = new Float32Array(rows * groups);
  const codes = new Int16Array(rows * cols);
  for (let n = 0; n < rows; n++) {
    for (let g = 0; g < groups; g++) {
      const group = src.group(g);
      const scale = src.scale(group, n);
      const zero = src.zero(group, n);
      scales[n * groups + g] = scale;
      if (bits === 8 && zero !== 128) {
        throw new TachyonError(
          `${name}: ${format} 8-bit zero point ${zero} (output ${n}, group ${group}) is not 128; tachyon ` +
            `reads symmetric 8-bit checkpoints only: quantize the 16-bit model with tachyon quantize --to int8`,
          "checkpoint",
        );
      }
      offsets[n * groups + g] = roundToF16(-zero * scale);
      const shift = bits === 8 ? 128 : 0; // int8 codes are signed
      for (let k = g * groupSize; k < (g + 1) * groupSize; k++) codes[n * cols + k] = src.code(n, k) - shift;
    }
  }
  const scheme = bits === 8 ? "int8" : bits === 4 ? "int4" : "int2";
  return intWeight(scheme, rows, cols, groupSize, codes, scales, offsets);
}
