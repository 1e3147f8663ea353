/**
 * What every on-disk format of quantized linear weights provides to the loader: which tensors
 * hold a weight, a check of their headers against the shape config.json implies (run for every
 * weight before anything is loaded), and the conversion to the engine layout.
 */
import { TachyonError } from "../../errors.js";
import type { Checkpoint } from "../../model/checkpoint.js";
import type { DType } from "../../model/dtype.js";
import type { TensorInfo } from "../../model/safetensors.js";
import type { QuantizedWeight } from "../quantized-weight.js";

export interface QuantFormat {
  /** For messages, e.g. "gptq int4". */
  readonly label: string;
  /** Whether linear `base` (e.g. "model.layers.0.mlp.up_proj") is stored quantized; else `base.weight` is plain. */
  isQuantized(ckpt: Checkpoint, base: string): boolean;
  /** The checkpoint tensors a quantized `base` occupies. */
  tensorNames(base: string): string[];
  /** Throws a TachyonError unless the tensors' dtypes and shapes fit a [rows, cols] weight. */
  check(ckpt: Checkpoint, base: string, rows: number, cols: number): void;
  /** The weight in the engine layout; throws on corrupt values (e.g. non-finite scales). */
  read(ckpt: Checkpoint, base: string, rows: number, cols: number): QuantizedWeight;
}

const FIX = "the config and the weights do not belong together: re-download or re-quantize the checkpoint";

/** The header of tensor `name`, which `format` needs as one of `dtypes` with `shape`. */
export function expectTensor(
  ckpt: Checkpoint,
  name: string,
  dtypes: readonly DType[],
  shape: readonly number[],
  format: string,
): TensorInfo {
  if (!ckpt.has(name)) {
    throw new TachyonError(
      `${ckpt.dir}: tensor ${name} is missing, and a ${format} weight needs it; ${FIX}`,
      "checkpoint",
    );
  }
  const info = ckpt.info(name);
  if (
    !dtypes.includes(info.dtype) ||
    info.shape.length !== shape.length ||
    info.shape.some((d, i) => d !== shape[i])
  ) {
    throw new TachyonError(
      `${info.file}: tensor ${name} is ${info.dtype} [${info.shape.join(", ")}] but a ${format} weight of this ` +
        `model needs ${dtypes.join(" or ")} [${shape.join(", ")}]; ${FIX}`,
      "checkpoint",
    );
  }
  return info;
}

/** Throws a TachyonError naming tensor `name` if any of its `values` is NaN or infinite. */
export function expectFinite(ckpt: Checkpoint, name: string, values: Float32Array): Float32Array {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) {
      throw new TachyonError(
        `${ckpt.info(name).file}: tensor ${name} holds ${values[i]} at index ${i}; ` +
          `quantization scales must be finite: the file is corrupt, re-download or re-quantize it`,
        "checkpoint",
      );
    }
  }
  return values;
}

/** Bytes of `bytes` as 32-bit little-endian integers (a fresh read is 4-byte aligned; else copied). */
export function int32View(bytes: Uint8Array): Int32Array {
  const b = bytes.byteOffset % 4 === 0 ? bytes : new Uint8Array(bytes);
  return new Int32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}
