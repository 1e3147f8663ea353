/**
 * GPTQ checkpoints as AutoGPTQ and GPTQModel write them (quant_method "gptq"). For a linear `X`
 * with N outputs, K inputs, b bits (p = 32 / b codes per int32), G groups:
 *
 *   X.qweight  I32 [K / p, N]   codes packed along K: input k of output n is bits b·(k % p) of
 *                               qweight[k / p, n]
 *   X.qzeros   I32 [G, N / p]   zero points packed along N the same way
 *   X.scales   F16 [G, N]       w = scale · (q − zero)
 *   X.g_idx    I32 [K]          group of each input (optional; k / group_size unless desc_act)
 *
 * checkpoint_format "gptq" (v1, the default) stores every zero point minus one; "gptq_v2" stores
 * it as is. With desc_act the groups may be listed out of order (g_idx); tachyon reads such a
 * checkpoint when each run of group_size consecutive inputs still shares one group.
 */
import { TachyonError } from "../../errors.js";
import type { Checkpoint } from "../../model/checkpoint.js";
import { groupSizeFor } from "./tachyon-int.js";
import { expectFinite, expectTensor, int32View, type QuantFormat } from "./format.js";
import { fromZeroPoints } from "./zero-point.js";

export function gptqFormat(bits: 2 | 4 | 8, groupSize: number | null, zerosMinusOne: boolean): QuantFormat {
  const label = `gptq ${bits}-bit`;
  const perWord = 32 / bits;
  const names = (base: string) => [base + ".qweight", base + ".qzeros", base + ".scales", base + ".g_idx"];
  const check = (ckpt: Checkpoint, base: string, rows: number, cols: number): number => {
    const g = groupSizeFor(base, cols, groupSize);
    if (cols % perWord !== 0 || rows % perWord !== 0) {
      throw new TachyonError(
        `${base}: a ${label} weight needs inputs and outputs in multiples of ${perWord}, this one is [${rows}, ${cols}]`,
        "checkpoint",
      );
    }
    const groups = cols / g;
    expectTensor(ckpt, base + ".qweight", ["I32"], [cols / perWord, rows], label);
    expectTensor(ckpt, base + ".qzeros", ["I32"], [groups, rows / perWord], label);
    expectTensor(ckpt, base + ".scales", ["F16", "BF16", "F32"], [groups, rows], label);
    if (ckpt.has(base + ".g_idx")) expectTensor(ckpt, base + ".g_idx", ["I32"], [cols], label);
    return g;
  };
  return {
    label,
    isQuantized: (ckpt, base) => ckpt.has(base + ".qweight"),
    tensorNames: names,
    check: (ckpt, base, rows, cols) => void check(ckpt, base, rows, cols),
    read(ckpt, base, rows, cols) {
      const g = check(ckpt, base, rows, cols);
      const groups = cols / g;
      const qweight = int32View(ckpt.read(base + ".qweight"));
      const qzeros = int32View(ckpt.read(base + ".qzeros"));
      const scales = expectFinite(ckpt, base + ".scales", ckpt.readFloat32(base + ".scales"));
      const groupOf = groupOrder(ckpt, base, cols, g, groups);
      const mask = (1 << bits) - 1;
      const unpack = (word: number, i: number) => (word >>> (bits * (i % perWord))) & mask;
      return fromZeroPoints(
        {
          bits,
          rows,
          cols,
          groupSize: g,
          code: (n, k) => unpack(qweight[((k / perWord) | 0) * rows + n], k),
          group: (i) => groupOf[i],
          zero: (group, n) =>
            unpack(qzeros[group * (rows / perWord) + ((n / perWord) | 0)], n) + (zerosMinusOne ? 1 : 0),
          scale: (group, n) => scales[group * rows + n],
        },
        base,
        label,
      );
    },
  };
}

/** Checkpoint group of each run of `g` consecutive inputs, from g_idx (identity when absent). */
function groupOrder(ckpt: Checkpoint, base: string, cols: number, g: number, groups: number): Int32Array {
  const order = Int32Array.from({ length: groups }, (_, i) => i);
  if (!ckpt.has(base + ".g_idx")) return order;
  const gIdx = int32View(ckpt.read(base + ".g_idx"));
  for (let k = 0; k < cols; k++) {
    const group = gIdx[k];
    if (group < 0 || group >= groups) {
      throw new TachyonError(
        `${ckpt.info(base + ".g_idx").file}: ${base}.g_idx[${k}] = ${group} is outside 0..${groups - 1}; ` +
          `the file is corrupt: re-download it`,
        "checkpoint",
      );
    }
    if (k % g === 0) order[k / g] = group;
    else if (group !== order[(k / g) | 0]) {
      throw new TachyonError(
        `${base}: this GPTQ checkpoint was made with desc_act (act-order): its g_idx mixes groups within a run ` +
          `of ${g} inputs, which tachyon's layout cannot hold; use a checkpoint made with desc_act=false ` +
          `(or static_groups), or quantize the 16-bit model with tachyon quantize --to int4 --method gptq`,
        "checkpoint",
      );
    }
  }
  return order;
}
