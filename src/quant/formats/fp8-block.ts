/**
 * Block-scaled FP8 exactly as DeepSeek-V3 and MiMo publish it, so tachyon's own fp8 output and
 * published checkpoints take the same loader. For a linear `X` ([N, K], blocks of bn × bk):
 *
 *   X.weight            F8_E4M3 [N, K]
 *   X.weight_scale_inv  F32 [ceil(N / bn), ceil(K / bk)]   the multiplier: w = e4m3 · scale_inv
 *
 * config.json: quantization_config {quant_method: "fp8", fmt: "e4m3", activation_scheme:
 * "dynamic", weight_block_size: [bn, bk]}. Linears without weight_scale_inv are plain 16-bit.
 */
import { TachyonError } from "../../errors.js";
import type { Checkpoint } from "../../model/checkpoint.js";
import type { TensorToWrite } from "../../model/safetensors.js";
import type { QuantizedWeight } from "../quantized-weight.js";
import { expectFinite, expectTensor, type QuantFormat } from "./format.js";

export function fp8BlockFormat(blockRows: number, blockCols: number): QuantFormat {
  const label = `fp8 (${blockRows}×${blockCols} blocks)`;
  const names = (base: string) => [base + ".weight", base + ".weight_scale_inv"];
  const scaleShape = (rows: number, cols: number) => [
    Math.ceil(rows / blockRows),
    Math.ceil(cols / blockCols),
  ];
  const check = (ckpt: Checkpoint, base: string, rows: number, cols: number) => {
    expectTensor(ckpt, base + ".weight", ["F8_E4M3"], [rows, cols], label);
    // Published checkpoints use F32; 16-bit scales are widened just as well.
    expectTensor(ckpt, base + ".weight_scale_inv", ["F32", "BF16", "F16"], scaleShape(rows, cols), label);
  };
  return {
    label,
    isQuantized: (ckpt, base) => ckpt.has(base + ".weight_scale_inv"),
    tensorNames: names,
    check,
    read(ckpt, base, rows, cols) {
      check(ckpt, base, rows, cols);
      const codes = ckpt.read(base + ".weight");
      // 0x7f and 0xff are e4m3fn's NaN: no quantizer writes them.
      const nan = codes.findIndex((b) => (b & 0x7f) === 0x7f);
      if (nan >= 0) {
        throw new TachyonError(
          `${ckpt.info(base + ".weight").file}: tensor ${base}.weight holds an fp8 NaN at index ${nan}; ` +
            `the file is corrupt: re-download or re-quantize it`,
          "checkpoint",
        );
      }
      const scaleName = base + ".weight_scale_inv";
      const scales = expectFinite(ckpt, scaleName, ckpt.readFloat32(scaleName));
      return {
        scheme: "fp8",
        rows,
        cols,
        groupSize: blockCols,
        groupRows: blockRows,
        codes,
        scales,
        offsets: null,
      };
    },
  };
}

/** The tensors that store `w` (an fp8 weight) as linear `base`. */
export function fp8Tensors(base: string, w: QuantizedWeight): Record<string, TensorToWrite> {
  return {
    [base + ".weight"]: { dtype: "F8_E4M3", shape: [w.rows, w.cols], data: w.codes },
    [base + ".weight_scale_inv"]: {
      dtype: "F32",
      shape: [Math.ceil(w.rows / w.groupRows), Math.ceil(w.cols / w.groupSize)],
      data: w.scales,
    },
  };
}
