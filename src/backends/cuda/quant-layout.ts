/**
 * The GPU's copy of a quantized weight (kernels/qgemv.cu). Codes keep the engine layout
 * (src/quant/quantized-weight.ts) except inside each 32-bit word of int4 and int2 codes, where
 * they are reordered so that one mask (and shift) puts four consecutive k in the word's four
 * bytes, ready for dp4a: int4 byte b holds k = b (low nibble) and k = 4 + b (high nibble); int2
 * byte b holds k = 4s + b in bits 2s..2s+1. Integer schemes keep one half2 (scale, offset) per
 * row and group; fp8 keeps its float32 block scales.
 */
import { TachyonError } from "../../errors.js";
import { float32ToF16Bits } from "../../model/dtype.js";
import { schemeBits, type QuantScheme, type QuantizedWeight } from "../../quant/quantized-weight.js";

/** QFMT of kernels/qgemv.cu. */
export const qgemvFormat: Readonly<Record<QuantScheme, number>> = { int8: 0, int4: 1, int2: 2, fp8: 3 };

/** Weights per chunk a GEMV lane loads (16 bytes; 8 for int2 so a chunk stays inside a group of 32). */
export const chunkWeights: Readonly<Record<QuantScheme, number>> = { int8: 16, int4: 32, int2: 32, fp8: 16 };

export interface DeviceQuantLayout {
  codes: Uint8Array;
  scales: Uint8Array;
}

/** Checks that the kernels handle this weight, and says what to do when they do not. */
export function checkDeviceSupport(
  name: string,
  w: Pick<QuantizedWeight, "scheme" | "rows" | "cols" | "groupSize" | "groupRows">,
): void {
  const chunk = chunkWeights[w.scheme];
  const fail = (why: string): never => {
    throw new TachyonError(
      `${name}: ${w.scheme} weight [${w.rows}, ${w.cols}]: ${why}; use --device cpu`,
      "unsupported",
    );
  };
  // Integer schemes read x rounded to int8 in blocks of 32.
  const multiple = w.scheme === "fp8" ? chunk : 32;
  if (w.cols % multiple !== 0) fail(`the CUDA kernels need the input size to be a multiple of ${multiple}`);
  if (w.scheme === "fp8") {
    if (w.groupRows !== 128 || w.groupSize !== 128)
      fail("the CUDA kernels read 128×128 fp8 block scales only");
  } else if (w.groupRows !== 1 || w.groupSize % chunk !== 0) {
    fail(`the CUDA kernels need one scale per row and group of a multiple of ${chunk} weights`);
  }
}

export function deviceLayout(name: string, w: QuantizedWeight): DeviceQuantLayout {
  checkDeviceSupport(name, w);
  const bits = schemeBits[w.scheme];
  let codes = w.codes;
  if (bits < 8) {
    const perWord = 32 / bits;
    const mask = (1 << bits) - 1;
    const src = new Uint32Array(
      w.codes.buffer.slice(w.codes.byteOffset, w.codes.byteOffset + w.codes.byteLength),
    );
    const dst = new Uint32Array(src.length);
    // Where code k of a word goes: int4 nibble 2b (+1 for the upper four), int2 slot 4b + s.
    const target = Array.from({ length: perWord }, (_, k) =>
      bits === 4 ? 2 * (k % 4) + (k >> 2) : 4 * (k % 4) + (k >> 2),
    );
    for (let i = 0; i < src.length; i++) {
      const word = src[i];
      let out = 0;
      for (let k = 0; k < perWord; k++) out |= ((word >>> (k * bits)) & mask) << (target[k] * bits);
      dst[i] = out >>> 0;
    }
    codes = new Uint8Array(dst.buffer);
  }
  if (w.scheme === "fp8") {
    return {
      codes,
      scales: new Uint8Array(
        w.scales.buffer.slice(w.scales.byteOffset, w.scales.byteOffset + w.scales.byteLength),
      ),
    };
  }
  const pairs = new Uint16Array(2 * w.scales.length);
  for (let i = 0; i < w.scales.length; i++) {
    pairs[2 * i] = float32ToF16Bits(w.scales[i]);
    pairs[2 * i + 1] = float32ToF16Bits(w.offsets ? w.offsets[i] : 0);
  }
  return { codes, scales: new Uint8Array(pairs.buffer) };
}
