/**
 * Random-weight checkpoints of named shapes, written as Hugging Face folders. Tests use them for
 * bad-input cases; benchmarks use them where real weights of that size cannot be shipped. Weights
 * are drawn from a seeded normal distribution (never zeros, which hide bugs and time differently).
 */
import fs from "node:fs";
import path from "node:path";
import { Rng } from "../engine/rng.js";
import { float32ToBf16Bits, type DType } from "./dtype.js";
import { writeSafetensors } from "./safetensors.js";
import { parseConfig, type ModelConfig } from "./config.js";
import { expectedTensors } from "./weights.js";

/** The dimensions that define a model; the rest of its config takes common defaults. */
export type ModelShape = Pick<
  ModelConfig,
  "architecture" | "vocabSize" | "hiddenSize" | "intermediateSize" | "numLayers" | "numHeads" | "numKvHeads"
> & { headDim?: number; maxPositions?: number; tieWordEmbeddings?: boolean; numMtpModules?: number };

export const namedShapes: Record<string, ModelShape> = {
  /** About 20M parameters: the size the CPU backend must run at interactive speed. */
  "cpu-20m": {
    architecture: "LlamaForCausalLM",
    vocabSize: 512,
    hiddenSize: 512,
    intermediateSize: 1536,
    numLayers: 6,
    numHeads: 8,
    numKvHeads: 4,
  },
  "llama-3.2-1b": {
    architecture: "LlamaForCausalLM",
    vocabSize: 128256,
    hiddenSize: 2048,
    intermediateSize: 8192,
    numLayers: 16,
    numHeads: 32,
    numKvHeads: 8,
    tieWordEmbeddings: true,
  },
  "llama-3-8b": {
    architecture: "LlamaForCausalLM",
    vocabSize: 128256,
    hiddenSize: 4096,
    intermediateSize: 14336,
    numLayers: 32,
    numHeads: 32,
    numKvHeads: 8,
  },
};

export function configJson(shape: ModelShape): Record<string, unknown> {
  return {
    architectures: [shape.architecture],
    vocab_size: shape.vocabSize,
    hidden_size: shape.hiddenSize,
    intermediate_size: shape.intermediateSize,
    num_hidden_layers: shape.numLayers,
    num_attention_heads: shape.numHeads,
    num_key_value_heads: shape.numKvHeads,
    head_dim: shape.headDim ?? shape.hiddenSize / shape.numHeads,
    max_position_embeddings: shape.maxPositions ?? 4096,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    tie_word_embeddings: shape.tieWordEmbeddings ?? false,
    num_nextn_predict_layers: shape.numMtpModules ?? 0,
    torch_dtype: "bfloat16",
  };
}

/** Standard normal samples (Box–Muller) scaled by `std`, around `mean`. */
function normal(rng: Rng, n: number, std: number, mean = 0): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - rng.nextFloat()));
    const a = 2 * Math.PI * rng.nextFloat();
    out[i] = mean + std * r * Math.cos(a);
    if (i + 1 < n) out[i + 1] = mean + std * r * Math.sin(a);
  }
  return out;
}

function toBf16Bytes(x: Float32Array): Uint8Array {
  const bits = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) bits[i] = float32ToBf16Bits(x[i]);
  return new Uint8Array(bits.buffer);
}

/**
 * Writes config.json and model.safetensors for `shape` into `dir`, and copies tokenizer files
 * from `tokenizerDir` if given.
 */
export function writeRandomCheckpoint(
  dir: string,
  shape: ModelShape,
  options: { dtype?: "F32" | "BF16"; seed?: number; tokenizerDir?: string } = {},
): void {
  const dtype: DType = options.dtype ?? "BF16";
  const rng = new Rng(options.seed ?? 1);
  fs.mkdirSync(dir, { recursive: true });
  const config = configJson(shape);
  const tensors: Record<string, { dtype: DType; shape: number[]; data: Uint8Array }> = {};
  for (const [name, dims] of expectedTensors(parseConfig(config), !shape.tieWordEmbeddings)) {
    const n = dims.reduce((a, b) => a * b, 1);
    // Norm weights near 1, everything else small; std 1/sqrt(fan-in) keeps activations bounded.
    const values = name.endsWith("norm.weight")
      ? normal(rng, n, 0.1, 1)
      : normal(rng, n, 1 / Math.sqrt(dims.at(-1)!));
    tensors[name] = {
      dtype,
      shape: dims,
      data: dtype === "BF16" ? toBf16Bytes(values) : new Uint8Array(values.buffer),
    };
  }
  writeSafetensors(path.join(dir, "model.safetensors"), tensors);
  fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify(config, null, 2));
  if (options.tokenizerDir) {
    for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
      const src = path.join(options.tokenizerDir, f);
      if (fs.existsSync(src)) fs.copyFileSync(src, path.join(dir, f));
    }
  }
}
