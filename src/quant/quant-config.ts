/**
 * config.json's `quantization_config`: which on-disk format a checkpoint's quantized linear
 * weights use. Four are read (docs/QUANTIZATION.md describes each):
 *
 *   fp8      DeepSeek-V3 / MiMo block-scaled e4m3 (`weight` + `weight_scale_inv`)
 *   tachyon  tachyon's own int8/int4/int2 (`qweight` + `scales` [+ `offsets`])
 *   gptq     AutoGPTQ / GPTQModel int32-packed `qweight`, `qzeros`, `scales`, `g_idx`
 *   awq      AutoAWQ "gemm" int32-packed `qweight`, `qzeros`, `scales`
 *
 * Anything else is refused here, when config.json is read, before any tensor is touched.
 */
import { TachyonError } from "../errors.js";
import type { IntScheme } from "./int-grid.js";

export type QuantizationConfig =
  | { method: "fp8"; blockRows: number; blockCols: number; modulesToNotConvert: string[] }
  | {
      method: "tachyon";
      scheme: IntScheme;
      /** Inputs per group; null: one group per row. */
      groupSize: number | null;
      modulesToNotConvert: string[];
    }
  | {
      method: "gptq";
      bits: 2 | 4 | 8;
      groupSize: number | null;
      /** gptq (v1) checkpoints store every zero point minus one; gptq_v2 stores it as is. */
      zerosMinusOne: boolean;
      descAct: boolean;
      modulesToNotConvert: string[];
    }
  | { method: "awq"; bits: 4; groupSize: number | null; modulesToNotConvert: string[] };

export const tachyonFormatVersion = 1;

type Json = Record<string, unknown>;

/** `raw` (a quantization_config object, or undefined) of config file `file`. */
export function parseQuantizationConfig(raw: unknown, file: string): QuantizationConfig | null {
  if (raw === undefined || raw === null) return null;
  const bad = (what: string) => new TachyonError(`${file}: quantization_config ${what}`, "config");
  if (typeof raw !== "object" || Array.isArray(raw)) throw bad("must be an object");
  const q = raw as Json;
  const method = q.quant_method;
  const modulesToNotConvert = stringList(q.modules_to_not_convert, bad);
  switch (method) {
    case "fp8": {
      if (q.fmt !== undefined && q.fmt !== "e4m3") {
        throw bad(`fmt ${JSON.stringify(q.fmt)} is not supported; tachyon reads fp8 weights in e4m3`);
      }
      const block = q.weight_block_size;
      if (
        !Array.isArray(block) ||
        block.length !== 2 ||
        !block.every((b) => typeof b === "number" && Number.isSafeInteger(b) && b > 0)
      ) {
        throw bad(
          `weight_block_size must be [rows, cols] of positive integers, got ${JSON.stringify(block)}; ` +
            `tachyon reads block-scaled fp8 (per-tensor fp8 checkpoints are not supported)`,
        );
      }
      return { method, blockRows: block[0], blockCols: block[1], modulesToNotConvert };
    }
    case "tachyon": {
      if (q.format_version !== tachyonFormatVersion) {
        throw bad(
          `format_version ${JSON.stringify(q.format_version)} is not one this tachyon reads ` +
            `(${tachyonFormatVersion}); update tachyon or re-run tachyon quantize`,
        );
      }
      const scheme = ({ 8: "int8", 4: "int4", 2: "int2" } as const)[q.bits as 8 | 4 | 2];
      if (scheme === undefined) throw bad(`bits must be 8, 4 or 2, got ${JSON.stringify(q.bits)}`);
      const groupSize = groupSizeOf(q.group_size, bad);
      if (q.sym !== (scheme === "int8")) {
        throw bad(
          `sym must be ${scheme === "int8"} for ${scheme} (int8 is symmetric, int4/int2 carry offsets)`,
        );
      }
      return { method, scheme, groupSize, modulesToNotConvert };
    }
    case "gptq": {
      const bits = q.bits;
      if (bits !== 2 && bits !== 4 && bits !== 8) {
        throw bad(`bits ${JSON.stringify(bits)} is not supported for gptq; tachyon reads 2, 4 and 8 bits`);
      }
      const format = q.checkpoint_format ?? q.format ?? "gptq";
      if (format !== "gptq" && format !== "gptq_v2") {
        throw bad(
          `checkpoint_format ${JSON.stringify(format)} is not supported; tachyon reads gptq and gptq_v2 ` +
            `(convert other packings, e.g. marlin, back to gptq)`,
        );
      }
      if (q.pack_dtype !== undefined && q.pack_dtype !== "int32") {
        throw bad(`pack_dtype ${JSON.stringify(q.pack_dtype)} is not supported; tachyon reads int32 packing`);
      }
      return {
        method,
        bits,
        groupSize: groupSizeOf(q.group_size, bad),
        zerosMinusOne: format === "gptq",
        descAct: q.desc_act === true,
        modulesToNotConvert,
      };
    }
    case "awq": {
      if (q.bits !== 4 && q.w_bit !== 4)
        throw bad(`awq is read for 4 bits only, got ${JSON.stringify(q.bits)}`);
      const version = String(q.version ?? "gemm").toLowerCase();
      if (version !== "gemm") {
        throw bad(
          `awq version ${JSON.stringify(q.version)} is not supported; tachyon reads the "gemm" packing`,
        );
      }
      if (q.zero_point === false) throw bad("awq without zero points is not supported");
      return {
        method,
        bits: 4,
        groupSize: groupSizeOf(q.group_size ?? q.q_group_size, bad),
        modulesToNotConvert,
      };
    }
    default:
      throw bad(
        `quant_method ${JSON.stringify(method)} is not supported; tachyon reads fp8 (block-scaled e4m3), ` +
          `tachyon, gptq and awq checkpoints; make one from the 16-bit model with tachyon quantize`,
      );
  }
}

/** A group size as configs give it: a positive integer, or -1 (null here) for one group per row. */
function groupSizeOf(v: unknown, bad: (what: string) => TachyonError): number | null {
  if (v === -1) return null;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) {
    throw bad(`group_size must be a positive integer or -1, got ${JSON.stringify(v)}`);
  }
  return v;
}

function stringList(v: unknown, bad: (what: string) => TachyonError): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || !v.every((s) => typeof s === "string")) {
    throw bad(`modules_to_not_convert must be a list of module names, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** One line for `tachyon info`, e.g. "int4, groups of 128 (tachyon)". */
export function describeQuantization(q: QuantizationConfig): string {
  const groups = (g: number | null) => (g === null ? "one scale per row" : `groups of ${g}`);
  switch (q.method) {
    case "fp8":
      return `fp8 e4m3, ${q.blockRows}×${q.blockCols} block scales`;
    case "tachyon":
      return `${q.scheme}, ${groups(q.groupSize)} (tachyon)`;
    case "gptq":
      return `int${q.bits}, ${groups(q.groupSize)} (gptq${q.zerosMinusOne ? "" : "_v2"}${q.descAct ? ", desc_act" : ""})`;
    case "awq":
      return `int4, ${groups(q.groupSize)} (awq)`;
  }
}
