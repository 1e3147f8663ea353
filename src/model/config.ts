/**
 * config.json → one normalized ModelConfig. Architectures differ in a handful of switches
 * (QKV bias, per-head q/k norm, sliding window, rope scaling, tied embeddings); everything
 * downstream reads these switches instead of the architecture name.
 */
import fs from "node:fs";
import path from "node:path";
import { TachyonError } from "../errors.js";
import { parseQuantizationConfig, type QuantizationConfig } from "../quant/quant-config.js";
import { parseRope, type RopeConfig } from "./rope.js";

export const supportedArchitectures = [
  "LlamaForCausalLM",
  "MistralForCausalLM",
  "Qwen2ForCausalLM",
  "Qwen3ForCausalLM",
] as const;
export type Architecture = (typeof supportedArchitectures)[number];

export interface ModelConfig {
  architecture: Architecture;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  rope: RopeConfig;
  maxPositions: number;
  /** True/false as config.json says; null when it does not say (then lm_head.weight's presence decides). */
  tieWordEmbeddings: boolean | null;
  /** Bias on the q/k/v projections (Qwen2; Llama with attention_bias). */
  qkvBias: boolean;
  /** Bias on the output projection (Llama with attention_bias). */
  oBias: boolean;
  /** Bias on gate/up/down (Llama with mlp_bias). */
  mlpBias: boolean;
  /** RMSNorm over each head of q and k before rope (Qwen3). */
  qkNorm: boolean;
  /** Attend only to the last `slidingWindow` positions (inclusive of the current one), or null. */
  slidingWindow: number | null;
  /** Multi-token-prediction modules shipped with the model (DeepSeek-V3 num_nextn_predict_layers). */
  numMtpModules: number;
  bosTokenId: number | null;
  eosTokenIds: number[];
  /** The dtype the checkpoint declares (informational; tensors carry their own dtype). */
  torchDtype: string;
  /** How linear weights below 16 bits are stored (config quantization_config), or null. */
  quantization: QuantizationConfig | null;
}

type Json = Record<string, unknown>;

function configError(file: string, message: string): TachyonError {
  return new TachyonError(`${file}: ${message}`, "config");
}

function int(raw: Json, key: string, file: string, fallback?: number): number {
  const v = raw[key] ?? fallback;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) {
    throw configError(file, `"${key}" must be a positive integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

function tokenIds(v: unknown): number[] {
  if (typeof v === "number") return [v];
  if (Array.isArray(v)) return v.filter((x): x is number => typeof x === "number");
  return [];
}

/** Reads and validates `dir/config.json` (and `generation_config.json` for EOS ids, when present). */
export function loadConfig(dir: string): ModelConfig {
  const file = path.join(dir, "config.json");
  if (!fs.existsSync(file)) {
    throw new TachyonError(
      `no config.json in ${dir}: tachyon loads Hugging Face model folders (config.json, *.safetensors, tokenizer.json)`,
      "config",
    );
  }
  let raw: Json;
  try {
    raw = JSON.parse(fs.readFileSync(file, "utf8")) as Json;
  } catch (e) {
    throw configError(file, `not valid JSON (${(e as Error).message})`);
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw))
    throw configError(file, "not a JSON object");
  return parseConfig(raw, file, readGenerationEos(dir));
}

function readGenerationEos(dir: string): number[] {
  const file = path.join(dir, "generation_config.json");
  if (!fs.existsSync(file)) return [];
  try {
    return tokenIds((JSON.parse(fs.readFileSync(file, "utf8")) as Json).eos_token_id);
  } catch {
    return []; // generation_config.json only adds EOS ids; a broken one is not worth failing the load
  }
}

export function parseConfig(raw: Json, file = "config.json", extraEos: number[] = []): ModelConfig {
  const archs = raw.architectures;
  const arch = Array.isArray(archs) ? archs[0] : undefined;
  if (typeof arch !== "string") throw configError(file, `missing "architectures"`);
  if (!(supportedArchitectures as readonly string[]).includes(arch)) {
    throw new TachyonError(
      `${file}: architecture ${arch} is not supported. Supported: ${supportedArchitectures.join(", ")}`,
      "config",
    );
  }
  const architecture = arch as Architecture;
  const hiddenSize = int(raw, "hidden_size", file);
  const numHeads = int(raw, "num_attention_heads", file);
  const numKvHeads = int(raw, "num_key_value_heads", file, numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw configError(
      file,
      `num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`,
    );
  }
  const headDim = raw.head_dim == null ? hiddenSize / numHeads : int(raw, "head_dim", file);
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) {
    throw configError(file, `head dimension ${headDim} must be an even integer`);
  }
  const maxPositions = int(raw, "max_position_embeddings", file, 4096);
  const isQwen = architecture === "Qwen2ForCausalLM" || architecture === "Qwen3ForCausalLM";
  const attentionBias = raw.attention_bias === true;
  const windowRaw = raw.sliding_window;
  // Qwen configs carry a sliding_window value that is only used when use_sliding_window is set.
  const windowOn = isQwen ? raw.use_sliding_window === true : true;
  const slidingWindow =
    windowOn && typeof windowRaw === "number" && windowRaw > 0 && windowRaw < maxPositions ? windowRaw : null;
  const eos = [...tokenIds(raw.eos_token_id), ...extraEos];
  return {
    architecture,
    vocabSize: int(raw, "vocab_size", file),
    hiddenSize,
    intermediateSize: int(raw, "intermediate_size", file),
    numLayers: int(raw, "num_hidden_layers", file),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: typeof raw.rms_norm_eps === "number" ? raw.rms_norm_eps : 1e-6,
    rope: parseRope(raw, headDim, file),
    maxPositions,
    tieWordEmbeddings:
      raw.tie_word_embeddings === true ? true : raw.tie_word_embeddings === false ? false : null,
    qkvBias: architecture === "Qwen2ForCausalLM" || attentionBias,
    oBias: attentionBias && architecture !== "Qwen2ForCausalLM",
    mlpBias: raw.mlp_bias === true,
    qkNorm: architecture === "Qwen3ForCausalLM",
    slidingWindow,
    numMtpModules: !raw.num_nextn_predict_layers ? 0 : int(raw, "num_nextn_predict_layers", file),
    bosTokenId: typeof raw.bos_token_id === "number" ? raw.bos_token_id : null,
    eosTokenIds: [...new Set(eos)],
    torchDtype: String(raw.torch_dtype ?? raw.dtype ?? "unknown"),
    quantization: parseQuantizationConfig(raw.quantization_config, file),
  };
}
