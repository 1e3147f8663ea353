/**
 * Random codes for benchmark weights of a scheme: uniformly random bits (under a mask that keeps
 * fp8 codes finite) and the mean and std of the code values they give, so a caller can choose a
 * scale and offset that give weights of a wanted mean and std.
 */
import { toFloat32 } from "../model/dtype.js";
import { schemeBits, type QuantScheme } from "./quantized-weight.js";

export interface RandomCodes {
  /** Bytes of codes for `count` weights (a multiple of 4). */
  bytes: number;
  /** AND-mask for random 32-bit words: fp8 clears each byte's top exponent bit (no NaN, |v| < 2). */
  mask: number;
  codeMean: number;
  codeStd: number;
}

export function randomCodes(scheme: QuantScheme, count: number): RandomCodes {
  const bytes = Math.ceil((count * schemeBits[scheme]) / 32) * 4;
  if (scheme === "fp8") {
    const values = toFloat32(
      Uint8Array.from({ length: 256 }, (_, b) => b & 0xbf),
      "F8_E4M3",
    );
    const mean = values.reduce((a, v) => a + v, 0) / 256;
    const std = Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / 256);
    return { bytes, mask: 0xbfbfbfbf, codeMean: mean, codeStd: std };
  }
  const levels = 2 ** schemeBits[scheme];
  // int8 codes are signed bytes; int4 and int2 codes are unsigned.
  const mean = scheme === "int8" ? -0.5 : (levels - 1) / 2;
  return { bytes, mask: 0xffffffff, codeMean: mean, codeStd: Math.sqrt((levels * levels - 1) / 12) };
}
