/**
 * A 16-bit model folder → a quantized one that tachyon (and, for fp8, any DeepSeek-V3-style
 * loader) reads: the linear weights in fp8 or tachyon's int8/int4/int2 format, everything else
 * (embeddings, norms, biases, modules kept on request) copied as stored, config.json with its
 * quantization_config, and every other small file (tokenizer, chat template, generation config).
 *
 * Everything is checked before anything is written, and the output is assembled in a hidden
 * sibling directory that is renamed into place only when complete: an error or an interruption
 * leaves no output behind.
 */
import fs from "node:fs";
import path from "node:path";
import { TachyonError } from "../errors.js";
import { Checkpoint } from "../model/checkpoint.js";
import { CheckpointWriter } from "../model/checkpoint-writer.js";
import { loadConfig, type ModelConfig } from "../model/config.js";
import type { TensorToWrite } from "../model/safetensors.js";
import { isLinearWeight, storedTensors, usesTiedEmbeddings } from "../model/weights.js";
import { Tokenizer } from "../tokenizer/tokenizer.js";
import { fp8Tensors } from "./formats/fp8-block.js";
import { groupSizeFor, tachyonIntTensors } from "./formats/tachyon-int.js";
import { gptqModel, type GptqTarget } from "./gptq-model.js";
import type { IntScheme } from "./int-grid.js";
import { tachyonFormatVersion } from "./quant-config.js";
import { schemeBits, type QuantizedWeight, type QuantScheme } from "./quantized-weight.js";
import { quantizeRtn, type QuantSpec } from "./rtn.js";

export type QuantMethod = "rtn" | "gptq";

export interface QuantizeRequest {
  scheme: QuantScheme;
  /** Inputs per group for int4/int2 (default 128 / 32) and int8 (default: one group per row). */
  groupSize?: number;
  method: QuantMethod;
  /** GPTQ: calibration text (the user's own), of which the first calibrationTokens tokens are used. */
  calibrationText?: string;
  calibrationTokens?: number;
  /** Modules whose name contains any of these stay in 16 bits (e.g. "model.layers.0.", "mlp.down_proj"). */
  keep?: readonly string[];
  /** Quantize the LM head too (untying it from the embeddings if they were tied). */
  quantizeLmHead?: boolean;
  /** GPTQ dampening, as a fraction of the Hessian's mean diagonal. */
  dampening?: number;
  onProgress?: (p: QuantizeProgress) => void;
  signal?: AbortSignal;
}

export interface QuantizeProgress {
  phase: "calibrating" | "writing";
  /** Bytes of source weights handled so far, of total. */
  done: number;
  total: number;
  tensor: string;
}

export interface QuantizeSummary {
  quantized: number;
  /** Linear modules left in 16 bits (modules_to_not_convert). */
  kept: string[];
  sourceBytes: number;
  outputBytes: number;
  calibrationTokens: number;
}

export const defaultGroupSize: Readonly<Record<QuantScheme, number | null>> = {
  fp8: 128,
  int8: null,
  int4: 128,
  int2: 32,
};
const calibrationWindow = 512;
const defaultCalibrationTokens = 1024;
/** Files never copied to the output: the weights (rewritten) and formats tachyon does not read. */
const notCopied =
  /(\.safetensors|\.safetensors\.index\.json|\.bin|\.pt|\.pth|\.ckpt|\.gguf|\.h5|\.msgpack|\.onnx)$/;

/** What happens to one source tensor. */
interface PlannedTensor {
  /** Output name: the source name, or "lm_head.weight" for a tied head being quantized. */
  name: string;
  source: string;
  shape: number[];
  bytes: number;
  spec: QuantSpec | null;
}

export async function quantizeModel(
  srcDir: string,
  outDir: string,
  req: QuantizeRequest,
): Promise<QuantizeSummary> {
  if (fs.existsSync(outDir)) {
    throw new TachyonError(
      `${outDir} already exists; choose a new --out folder or remove it first`,
      "argument",
    );
  }
  const cfg = loadConfig(srcDir);
  if (cfg.quantization) {
    throw new TachyonError(
      `${srcDir} is already quantized (${cfg.quantization.method}); quantize the 16-bit model instead`,
      "argument",
    );
  }
  const ckpt = Checkpoint.open(srcDir);
  try {
    const plan = planTensors(cfg, ckpt, srcDir, req);
    const windows = req.method === "gptq" ? calibrationWindows(srcDir, cfg, req) : [];
    const tmp = path.join(
      path.dirname(path.resolve(outDir)),
      `.${path.basename(outDir)}.partial-${process.pid}`,
    );
    fs.mkdirSync(tmp, { recursive: false });
    try {
      const summary = await writeQuantized(cfg, ckpt, srcDir, tmp, plan, windows, req);
      fs.renameSync(tmp, outDir);
      return summary;
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  } finally {
    ckpt.close();
  }
}

/** Every tensor of the output with what to do with it, checked against the request. */
function planTensors(cfg: ModelConfig, ckpt: Checkpoint, dir: string, req: QuantizeRequest): PlannedTensor[] {
  if (req.method === "gptq" && (req.scheme === "fp8" || req.scheme === "int8")) {
    throw new TachyonError(
      `--method gptq is for int4 and int2; ${req.scheme} with round-to-nearest stays within 0.5% of 16 bits`,
      "argument",
    );
  }
  if (req.scheme === "fp8" && req.groupSize !== undefined && req.groupSize !== 128) {
    throw new TachyonError(
      `fp8 uses 128×128 blocks (the DeepSeek-V3 layout); leave out --group-size`,
      "argument",
    );
  }
  const groupSize = req.groupSize ?? defaultGroupSize[req.scheme];
  const keep = req.keep ?? [];
  const stored = storedTensors(cfg, ckpt, dir);
  const tied = usesTiedEmbeddings(cfg, ckpt, dir);
  const modules = stored.filter((t) => isLinearWeight(t.name, t.shape)).map((t) => moduleOf(t.name));
  for (const pattern of keep) {
    if (!modules.some((m) => m.includes(pattern)) && !(tied && "lm_head".includes(pattern))) {
      throw new TachyonError(
        `--keep ${pattern} matches no linear module; names look like ${modules.slice(0, 2).join(", ")}, lm_head`,
        "argument",
      );
    }
  }
  const quantizes = (name: string) =>
    (req.quantizeLmHead || moduleOf(name) !== "lm_head") && !keep.some((p) => moduleOf(name).includes(p));

  const plan: PlannedTensor[] = stored.map((t) => ({
    name: t.name,
    source: t.name,
    shape: t.shape,
    bytes: t.bytes,
    spec:
      isLinearWeight(t.name, t.shape) && quantizes(t.name)
        ? specFor(t.name, t.shape, req.scheme, groupSize)
        : null,
  }));
  if (tied && quantizes("lm_head.weight")) {
    const embed = stored.find((t) => t.name === "model.embed_tokens.weight")!;
    const spec = specFor("lm_head.weight", embed.shape, req.scheme, groupSize);
    plan.push({ name: "lm_head.weight", source: embed.name, shape: embed.shape, bytes: embed.bytes, spec });
  }
  return plan;
}

function specFor(name: string, shape: number[], scheme: QuantScheme, groupSize: number | null): QuantSpec {
  const g = scheme === "fp8" ? 128 : groupSizeFor(name, shape[1], groupSize);
  if ((shape[1] * schemeBits[scheme]) % 8 !== 0) {
    throw new TachyonError(
      `${name}: ${shape[1]} inputs do not pack into whole bytes of ${scheme} codes`,
      "argument",
    );
  }
  return { scheme, groupSize: g };
}

function moduleOf(name: string): string {
  return name.replace(/\.weight$/, "");
}

/** The calibration text's first tokens, in windows the model was trained on. */
function calibrationWindows(dir: string, cfg: ModelConfig, req: QuantizeRequest): number[][] {
  if (!req.calibrationText) {
    throw new TachyonError(
      "--method gptq needs --calibration FILE: text like what the model will see (a few thousand tokens)",
      "argument",
    );
  }
  const limit = req.calibrationTokens ?? defaultCalibrationTokens;
  const ids = Tokenizer.load(dir).encode(req.calibrationText, false).slice(0, limit);
  if (ids.length < 64) {
    throw new TachyonError(
      `the calibration text has only ${ids.length} tokens; GPTQ needs at least 64 (a few thousand is better)`,
      "argument",
    );
  }
  const window = Math.min(calibrationWindow, cfg.maxPositions);
  const windows: number[][] = [];
  for (let i = 0; i < ids.length; i += window) windows.push(ids.slice(i, i + window));
  return windows;
}

async function writeQuantized(
  cfg: ModelConfig,
  ckpt: Checkpoint,
  srcDir: string,
  outDir: string,
  plan: PlannedTensor[],
  windows: number[][],
  req: QuantizeRequest,
): Promise<QuantizeSummary> {
  const tick = async () => {
    await new Promise((resolve) => setImmediate(resolve));
    if (req.signal?.aborted) throw new TachyonError("interrupted; nothing was written", "interrupted");
  };
  const quantized = plan.filter((t) => t.spec);
  const total = quantized.reduce((s, t) => s + t.bytes, 0);

  let gptq = new Map<string, QuantizedWeight>();
  if (req.method === "gptq") {
    const targets = new Map<string, GptqTarget>(
      quantized.map((t) => [
        t.name,
        { scheme: t.spec!.scheme as IntScheme, groupSize: t.spec!.groupSize, size: t.bytes },
      ]),
    );
    gptq = await gptqModel(cfg, ckpt, srcDir, targets, {
      windows,
      dampening: req.dampening ?? 0.01,
      checkpointTick: tick,
      onProgress: (done, all, tensor) => req.onProgress?.({ phase: "calibrating", done, total: all, tensor }),
    });
  }

  const writer = new CheckpointWriter(outDir);
  let done = 0;
  let outputBytes = 0;
  const add = (tensors: Record<string, TensorToWrite>) => {
    for (const [name, t] of Object.entries(tensors)) {
      writer.add(name, t);
      outputBytes += t.data.byteLength;
    }
  };
  for (const t of plan) {
    if (!t.spec) {
      const info = ckpt.info(t.source);
      add({ [t.name]: { dtype: info.dtype, shape: info.shape, data: ckpt.read(t.source) } });
      continue;
    }
    const base = moduleOf(t.name);
    const w =
      gptq.get(t.name) ?? quantizeRtn(base, finiteValues(ckpt, t.source), t.shape[0], t.shape[1], t.spec);
    add(w.scheme === "fp8" ? fp8Tensors(base, w) : tachyonIntTensors(base, w));
    done += t.bytes;
    req.onProgress?.({ phase: "writing", done, total, tensor: t.name });
    await tick();
  }
  writer.finish();

  const kept = plan.filter((t) => !t.spec && isLinearWeight(t.name, t.shape)).map((t) => moduleOf(t.name));
  const headQuantized = plan.some((t) => t.name === "lm_head.weight" && t.spec);
  const modulesToNotConvert = headQuantized || kept.includes("lm_head") ? kept : [...kept, "lm_head"];
  writeConfig(srcDir, outDir, quantizationConfig(req, plan, modulesToNotConvert, windows), headQuantized);
  copyOtherFiles(srcDir, outDir);
  return {
    quantized: quantized.length,
    kept: modulesToNotConvert,
    sourceBytes: plan.reduce((s, t) => s + (t.source === t.name ? t.bytes : 0), 0),
    outputBytes,
    calibrationTokens: windows.reduce((s, w) => s + w.length, 0),
  };
}

/** A weight's values as float32, refusing NaN or infinite entries (they would poison every scale). */
function finiteValues(ckpt: Checkpoint, name: string): Float32Array {
  const values = ckpt.readFloat32(name);
  const bad = values.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0) {
    throw new TachyonError(
      `${ckpt.info(name).file}: tensor ${name} holds ${values[bad]} at index ${bad}; a weight must be finite to ` +
        `be quantized: fix the source checkpoint or leave this module in 16 bits with --keep`,
      "checkpoint",
    );
  }
  return values;
}

function quantizationConfig(
  req: QuantizeRequest,
  plan: PlannedTensor[],
  modulesToNotConvert: string[],
  windows: number[][],
): Record<string, unknown> {
  if (req.scheme === "fp8") {
    return {
      quant_method: "fp8",
      fmt: "e4m3",
      activation_scheme: "dynamic",
      weight_block_size: [128, 128],
      modules_to_not_convert: modulesToNotConvert,
    };
  }
  const groupSize = req.groupSize ?? defaultGroupSize[req.scheme];
  return {
    quant_method: "tachyon",
    format_version: tachyonFormatVersion,
    bits: schemeBits[req.scheme],
    group_size: groupSize ?? -1,
    sym: req.scheme === "int8",
    method: req.method,
    ...(req.method === "gptq"
      ? { calibration_tokens: windows.reduce((s, w) => s + w.length, 0), damp_percent: req.dampening ?? 0.01 }
      : {}),
    quantized_modules: plan.filter((t) => t.spec).length,
    modules_to_not_convert: modulesToNotConvert,
  };
}

function writeConfig(
  srcDir: string,
  outDir: string,
  quantization: Record<string, unknown>,
  untie: boolean,
): void {
  const raw = JSON.parse(fs.readFileSync(path.join(srcDir, "config.json"), "utf8")) as Record<
    string,
    unknown
  >;
  raw.quantization_config = quantization;
  if (untie) raw.tie_word_embeddings = false;
  fs.writeFileSync(path.join(outDir, "config.json"), JSON.stringify(raw, null, 2) + "\n");
}

/** Tokenizer, chat template, generation config, README…: every top-level file but weights and config. */
function copyOtherFiles(srcDir: string, outDir: string): void {
  for (const entry of fs.readdirSync(srcDir, { withFileTypes: true })) {
    if (
      !entry.isFile() ||
      entry.name === "config.json" ||
      entry.name.startsWith(".") ||
      notCopied.test(entry.name)
    ) {
      continue;
    }
    fs.copyFileSync(path.join(srcDir, entry.name), path.join(outDir, entry.name));
  }
}
