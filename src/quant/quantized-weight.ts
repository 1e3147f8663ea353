/**
 * A linear layer's weight stored below 16 bits, in the one layout every backend consumes.
 * Checkpoint formats (tachyon's own, DeepSeek-style FP8 block scales, GPTQ/AWQ int4) are
 * converted to it at load time, so kernels know one layout per scheme:
 *
 *   rows = N (outputs), cols = K (inputs); codes are row-major, each row's K codes packed along K,
 *   lowest k in the lowest bits:
 *     int8: one signed byte per weight,                w = q · scale
 *     int4: two per byte (even k in the low nibble),   w = q · scale + offset, q in 0..15
 *     int2: four per byte (k % 4 == 0 in bits 0–1),    w = q · scale + offset, q in 0..3
 *     fp8:  one e4m3fn byte per weight,                w = e4m3(q) · scale
 *
 *   scales (and offsets, int4/int2 only) have one entry per block of groupRows × groupSize
 *   weights: [ceil(rows / groupRows), ceil(cols / groupSize)], row-major. The integer schemes use
 *   groupRows = 1 (a scale per row and group of groupSize consecutive k; cols % groupSize == 0);
 *   fp8 uses 128 × 128 blocks as DeepSeek-V3 and MiMo ship them.
 *
 * Integer-scheme scales and offsets hold float16-representable values (a GPU keeps them as f16),
 * so every backend dequantizes to exactly the same numbers.
 */
export type QuantScheme = "fp8" | "int8" | "int4" | "int2";

export const quantSchemes: readonly QuantScheme[] = ["fp8", "int8", "int4", "int2"];

/** Bits per weight code. */
export const schemeBits: Readonly<Record<QuantScheme, number>> = { fp8: 8, int8: 8, int4: 4, int2: 2 };

export interface QuantizedWeight {
  readonly scheme: QuantScheme;
  readonly rows: number;
  readonly cols: number;
  /** Consecutive k (along a row) sharing one scale. */
  readonly groupSize: number;
  /** Consecutive rows sharing one scale: 1 for the integer schemes, 128 for fp8 blocks. */
  readonly groupRows: number;
  /** rows × cols × bits / 8 bytes. */
  readonly codes: Uint8Array;
  readonly scales: Float32Array;
  /** int4 and int2 only; null otherwise. */
  readonly offsets: Float32Array | null;
}

/** Bytes a weight occupies in memory as stored (codes plus scales and offsets as f16/f32). */
export function quantizedBytes(w: QuantizedWeight): number {
  const scaleBytes = w.scheme === "fp8" ? 4 : 2;
  return w.codes.byteLength + (w.scales.length + (w.offsets?.length ?? 0)) * scaleBytes;
}
