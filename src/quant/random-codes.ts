/**
 * How to make a random quantized weight for benchmarks: uniformly random code bits (under a mask
 * that keeps fp8 codes finite) and one scale (and offset) for the whole tensor, chosen from the
 * code values' mean and std so the weights get a wanted mean and std. Backends fill the codes
 * where their weights live.
 */
import { toFloat32 } from "../model/dtype.js";
import { schemeBits, type QuantScheme } from "./quantized-weight.js";

export interface RandomQuantPlan {
  scheme: QuantScheme;
  rows: number;
  cols: number;
  groupSize: number;
  groupRows: number;
  /** Scale (and offset) entries: one per row and group, or per fp8 block. */
  groups: number;
  /** Bytes of codes (a multiple of 4). */
  bytes: number;
  /** AND-mask for random 32-bit words: fp8 clears each byte's top exponent bit (no NaN, |v| < 2). */
  mask: number;
  scale: number;
  /** int4 and int2 only; null otherwise. */
  offset: number | null;
}

export function randomQuantPlan(
  scheme: QuantScheme,
  [rows, cols]: readonly [number, number],
  groupSize: number,
  dist: { mean: number; std: number },
): RandomQuantPlan {
  const fp8 = scheme === "fp8";
  const group = fp8 ? 128 : groupSize;
  const bytes = Math.ceil((rows * cols * schemeBits[scheme]) / 32) * 4;
  let mean: number;
  let std: number;
  if (fp8) {
    const values = toFloat32(
      Uint8Array.from({ length: 256 }, (_, b) => b & 0xbf),
      "F8_E4M3",
    );
    mean = values.reduce((a, v) => a + v, 0) / 256;
    std = Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / 256);
  } else {
    const levels = 2 ** schemeBits[scheme];
    // int8 codes are signed bytes; int4 and int2 codes are unsigned.
    mean = scheme === "int8" ? -0.5 : (levels - 1) / 2;
    std = Math.sqrt((levels * levels - 1) / 12);
  }
  const scale = dist.std / std;
  return {
    scheme,
    rows,
    cols,
    groupSize: group,
    groupRows: fp8 ? 128 : 1,
    groups: fp8 ? Math.ceil(rows / 128) * Math.ceil(cols / 128) : rows * Math.ceil(cols / group),
    bytes,
    mask: fp8 ? 0xbfbfbfbf : 0xffffffff,
    scale,
    offset: scheme === "int4" || scheme === "int2" ? dist.mean - mean * scale : null,
  };
}
