/**
 * AWQ checkpoints as AutoAWQ writes them with version "gemm" (quant_method "awq", 4 bits). For a
 * linear `X` with N outputs, K inputs and G groups:
 *
 *   X.qweight  I32 [K, N / 8]   codes packed along N, interleaved: nibble j of word c holds
 *                               output 8c + [0, 2, 4, 6, 1, 3, 5, 7][j]
 *   X.qzeros   I32 [G, N / 8]   zero points packed the same way, stored as is
 *   X.scales   F16 [G, N]       w = scale · (q − zero)
 */
import { TachyonError } from "../../errors.js";
import type { Checkpoint } from "../../model/checkpoint.js";
import { groupSizeFor } from "./tachyon-int.js";
import { expectFinite, expectTensor, int32View, type QuantFormat } from "./format.js";
import { fromZeroPoints } from "./zero-point.js";

/** Nibble that holds output n % 8 (the inverse of AWQ's interleave). */
const nibbleOf = [0, 4, 1, 5, 2, 6, 3, 7];

export function awqFormat(groupSize: number | null): QuantFormat {
  const label = "awq 4-bit";
  const check = (ckpt: Checkpoint, base: string, rows: number, cols: number): number => {
    const g = groupSizeFor(base, cols, groupSize);
    if (rows % 8 !== 0) {
      throw new TachyonError(
        `${base}: an ${label} weight needs outputs in multiples of 8, this one has ${rows}`,
        "checkpoint",
      );
    }
    expectTensor(ckpt, base + ".qweight", ["I32"], [cols, rows / 8], label);
    expectTensor(ckpt, base + ".qzeros", ["I32"], [cols / g, rows / 8], label);
    expectTensor(ckpt, base + ".scales", ["F16", "BF16", "F32"], [cols / g, rows], label);
    return g;
  };
  return {
    label,
    isQuantized: (ckpt, base) => ckpt.has(base + ".qweight"),
    tensorNames: (base) => [base + ".qweight", base + ".qzeros", base + ".scales"],
    check: (ckpt, base, rows, cols) => void check(ckpt, base, rows, cols),
    read(ckpt, base, rows, cols) {
      const g = check(ckpt, base, rows, cols);
      const qweight = int32View(ckpt.read(base + ".qweight"));
      const qzeros = int32View(ckpt.read(base + ".qzeros"));
      const scales = expectFinite(ckpt, base + ".scales", ckpt.readFloat32(base + ".scales"));
      const words = rows / 8;
      const unpack = (packed: Int32Array, row: number, n: number) =>
        (packed[row * words + (n >> 3)] >>> (4 * nibbleOf[n & 7])) & 15;
      return fromZeroPoints(
        {
          bits: 4,
          rows,
          cols,
          groupSize: g,
          code: (n, k) => unpack(qweight, k, n),
          group: (i) => i,
          zero: (group, n) => unpack(qzeros, group, n),
          scale: (group, n) => scales[group * rows + n],
        },
        base,
        label,
      );
    },
  };
}
