/**
 * Tensor element types as safetensors names them, and fast conversion of their raw little-endian
 * bytes to float32. Loading widens hundreds of MB, so each path is one tight loop: a bit shift for
 * BF16, a lookup table for F16 and FP8, a plain copy for F32.
 */
import { TachyonError } from "../errors.js";

export type DType =
  "F64" | "F32" | "F16" | "BF16" | "F8_E4M3" | "F8_E5M2" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

const BYTES: Record<DType, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** Every dtype, in the order error messages list them. */
export const DTYPES = Object.keys(BYTES) as DType[];

export function dtypeBytes(d: DType): number {
  return BYTES[d];
}

export function isDType(s: string): s is DType {
  return Object.hasOwn(BYTES, s);
}

/**
 * Widens `bytes` (little-endian elements of `dtype`) to float32, into `out` when given (it must have
 * exactly one slot per element). The result never aliases `bytes`. `bytes` may start at any offset.
 */
export function toFloat32(bytes: Uint8Array, dtype: DType, out?: Float32Array): Float32Array {
  const size = dtypeBytes(dtype);
  if (bytes.byteLength % size !== 0) {
    throw new Error(`toFloat32: ${bytes.byteLength} bytes is not a whole number of ${dtype} elements`);
  }
  const n = bytes.byteLength / size;
  if (out === undefined) out = new Float32Array(n);
  else if (out.length !== n) throw new Error(`toFloat32: out has ${out.length} slots for ${n} elements`);

  switch (dtype) {
    case "F32":
      // A byte copy needs no alignment and keeps NaN payloads.
      new Uint8Array(out.buffer, out.byteOffset, n * 4).set(bytes);
      break;
    case "BF16": {
      // BF16 is the top half of a float32.
      const src16 = aligned(bytes, 2);
      const src = new Uint16Array(src16.buffer, src16.byteOffset, n);
      const dst = new Uint32Array(out.buffer, out.byteOffset, n);
      for (let i = 0; i < n; i++) dst[i] = src[i] << 16;
      break;
    }
    case "F16": {
      const src16 = aligned(bytes, 2);
      const src = new Uint16Array(src16.buffer, src16.byteOffset, n);
      const table = (f16Table ??= decodeTable(16, 5, 10, false));
      for (let i = 0; i < n; i++) out[i] = table[src[i]];
      break;
    }
    case "F8_E4M3": {
      const table = (e4m3Table ??= decodeTable(8, 4, 3, true));
      for (let i = 0; i < n; i++) out[i] = table[bytes[i]];
      break;
    }
    case "F8_E5M2": {
      const table = (e5m2Table ??= decodeTable(8, 5, 2, false));
      for (let i = 0; i < n; i++) out[i] = table[bytes[i]];
      break;
    }
    case "F64": {
      const src64 = aligned(bytes, 8);
      const src = new Float64Array(src64.buffer, src64.byteOffset, n);
      for (let i = 0; i < n; i++) out[i] = src[i];
      break;
    }
    default:
      throw new TachyonError(
        `cannot use ${dtype} data as floating-point weights; tachyon reads F64, F32, F16, BF16, F8_E4M3 and F8_E5M2`,
        "checkpoint",
      );
  }
  return out;
}

/** `bytes` itself when its offset is a multiple of `align`, else an aligned copy (typed-array views need it). */
function aligned(bytes: Uint8Array, align: number): Uint8Array {
  return bytes.byteOffset % align === 0 ? bytes : new Uint8Array(bytes);
}

let f16Table: Float32Array | undefined;
let e4m3Table: Float32Array | undefined;
let e5m2Table: Float32Array | undefined;

/**
 * Value of every bit pattern of a small float with one sign bit, `expBits` exponent bits (IEEE
 * bias) and `mantBits` mantissa bits. `finiteOnly` is the OCP "fn" variant (PyTorch float8_e4m3fn):
 * no infinities, and only the all-ones pattern is NaN, so the top exponent holds ordinary numbers.
 */
function decodeTable(
  totalBits: number,
  expBits: number,
  mantBits: number,
  finiteOnly: boolean,
): Float32Array {
  const table = new Float32Array(1 << totalBits);
  const bias = (1 << (expBits - 1)) - 1;
  const expMax = (1 << expBits) - 1;
  const mantMax = (1 << mantBits) - 1;
  for (let v = 0; v < table.length; v++) {
    const sign = v >> (totalBits - 1) ? -1 : 1;
    const e = (v >> mantBits) & expMax;
    const m = v & mantMax;
    if (finiteOnly ? e === expMax && m === mantMax : e === expMax) {
      table[v] = m !== 0 || finiteOnly ? NaN : sign * Infinity;
    } else if (e === 0) {
      table[v] = sign * m * 2 ** (1 - bias - mantBits);
    } else {
      table[v] = sign * (m + (1 << mantBits)) * 2 ** (e - bias - mantBits);
    }
  }
  return table;
}

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** The BF16 bit pattern nearest to `x` (as float32), ties to even; NaN stays NaN. */
export function float32ToBf16Bits(x: number): number {
  scratchF32[0] = x;
  const bits = scratchU32[0];
  if ((bits & 0x7fffffff) > 0x7f800000) return (bits >>> 16) | 0x40;
  // Adding 0x7fff plus the lowest kept bit rounds the dropped half to nearest, ties to even.
  return (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
}

/** The F16 bit pattern nearest to `x` (as float32), ties to even; overflow gives ±Inf, NaN stays NaN. */
export function float32ToF16Bits(x: number): number {
  scratchF32[0] = x;
  const bits = scratchU32[0];
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // rebias 127 → 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal in F16 (or zero): shift the full 24-bit significand down; values below half the
    // smallest subnormal round to zero.
    if (e < -10) return sign;
    return sign | roundShift(mant | 0x800000, 14 - e);
  }
  // A carry out of the mantissa correctly bumps the exponent, up to Inf.
  return sign | (((e << 10) | (mant >>> 13)) + roundBit(mant, 13));
}

/** `x` rounded to the nearest float16 value (ties to even), as a number; overflow gives ±Infinity. */
export function roundToF16(x: number): number {
  return (f16Table ??= decodeTable(16, 5, 10, false))[float32ToF16Bits(x)];
}

function roundShift(v: number, shift: number): number {
  return (v >>> shift) + roundBit(v, shift);
}

/** 1 when dropping the low `shift` bits of `v` must round up (nearest, ties to even), else 0. */
function roundBit(v: number, shift: number): number {
  const rest = v & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  return rest > half || (rest === half && ((v >>> shift) & 1) === 1) ? 1 : 0;
}
