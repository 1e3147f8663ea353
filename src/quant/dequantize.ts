/**
 * The reference meaning of a quantized weight: its float32 values, row-major [rows, cols]. The
 * CPU backend computes with these, and every GPU kernel is checked against them.
 */
import { toFloat32 } from "../model/dtype.js";
import type { QuantizedWeight } from "./quantized-weight.js";

export function dequantize(w: QuantizedWeight): Float32Array {
  const { rows, cols, groupSize, groupRows, codes, scales, offsets } = w;
  const out = w.scheme === "fp8" ? toFloat32(codes, "F8_E4M3") : new Float32Array(rows * cols);
  const groupsPerRow = Math.ceil(cols / groupSize);
  const signed = new Int8Array(codes.buffer, codes.byteOffset, codes.byteLength);
  for (let r = 0; r < rows; r++) {
    const scaleRow = Math.floor(r / groupRows) * groupsPerRow;
    for (let c = 0; c < cols; c++) {
      const g = scaleRow + Math.floor(c / groupSize);
      const i = r * cols + c;
      switch (w.scheme) {
        case "fp8":
          out[i] *= scales[g];
          break;
        case "int8":
          out[i] = signed[i] * scales[g];
          break;
        case "int4":
          out[i] = ((codes[i >> 1] >> ((i & 1) * 4)) & 15) * scales[g] + offsets![g];
          break;
        case "int2":
          out[i] = ((codes[i >> 2] >> ((i & 3) * 2)) & 3) * scales[g] + offsets![g];
          break;
      }
    }
  }
  return out;
}
