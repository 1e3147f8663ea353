/**
 * The integer grids of the int8/int4/int2 schemes: how a group's scale (and offset) follow from
 * its values, and which code a value rounds to. Round-to-nearest and GPTQ share these, so both
 * produce codes that are optimal for the scales actually stored.
 *
 *   int8: symmetric, w = q · scale, q in -128..127, scale = amax / 127
 *   int4: asymmetric, w = q · scale + offset, q in 0..15, scale = (max - min) / 15, offset = min
 *   int2: asymmetric, w = q · scale + offset, q in 0..3,  scale = (max - min) / 3,  offset = min
 *
 * Scales and offsets are rounded to float16 before any code is chosen: a GPU keeps them as f16,
 * and rounding them afterwards would move every weight of the group.
 */
import { TachyonError } from "../errors.js";
import { roundToF16 } from "../model/dtype.js";
import { packCodes, type CodeBits } from "./pack.js";
import type { QuantizedWeight } from "./quantized-weight.js";

export type IntScheme = "int8" | "int4" | "int2";

export interface GroupParams {
  scale: number;
  offset: number;
}

export const maxCode: Readonly<Record<IntScheme, number>> = { int8: 127, int4: 15, int2: 3 };
const minCode: Readonly<Record<IntScheme, number>> = { int8: -128, int4: 0, int2: 0 };

const bits: Readonly<Record<IntScheme, CodeBits>> = { int8: 8, int4: 4, int2: 2 };

/** Scale and offset, as float16 values, of a group of weight `name` whose values span [min, max]. */
export function groupParams(name: string, scheme: IntScheme, min: number, max: number): GroupParams {
  const params =
    scheme === "int8"
      ? { scale: roundToF16(Math.max(-min, max) / 127), offset: 0 }
      : { scale: roundToF16((max - min) / maxCode[scheme]), offset: roundToF16(min) };
  if (!Number.isFinite(params.scale) || !Number.isFinite(params.offset)) {
    throw new TachyonError(
      `${name}: a group of weights spans [${min}, ${max}], beyond what float16 scales hold; ` +
        `leave this module in 16 bits with --keep`,
      "argument",
    );
  }
  return params;
}

/** The code nearest to `x` under `p` (a zero scale gives code 0: the group is constant). */
export function nearestCode(scheme: IntScheme, x: number, p: GroupParams): number {
  if (p.scale === 0) return 0;
  const q = Math.round((x - p.offset) / p.scale);
  return Math.min(maxCode[scheme], Math.max(minCode[scheme], q));
}

/**
 * The engine-layout weight of one code per entry (signed for int8), with one scale (and offset)
 * per row and group of groupSize consecutive inputs.
 */
export function intWeight(
  scheme: IntScheme,
  rows: number,
  cols: number,
  groupSize: number,
  codes: ArrayLike<number>,
  scales: Float32Array,
  offsets: Float32Array,
): QuantizedWeight {
  return {
    scheme,
    rows,
    cols,
    groupSize,
    groupRows: 1,
    codes: packCodes(codes, bits[scheme]),
    scales,
    offsets: scheme === "int8" ? null : offsets,
  };
}
