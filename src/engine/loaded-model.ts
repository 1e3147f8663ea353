/**
 * The library's entry point: a model folder loaded onto a backend, with its tokenizer, ready to
 * generate. `loadModel` → `generate` / `chat` (async iterators of tokens) or `complete`.
 */
import type { Backend } from "../backends/backend.js";
import { createBackend, type Device } from "../backends/select.js";
import { TachyonError } from "../errors.js";
import { Checkpoint } from "../model/checkpoint.js";
import { loadConfig, parseConfig, type ModelConfig } from "../model/config.js";
import { configJson, namedShapes } from "../model/random-checkpoint.js";
import type { ModelWeights } from "../model/transformer.js";
import {
  expectedTensors,
  loadWeights,
  randomWeights,
  storedTensors,
  type LoadProgress,
} from "../model/weights.js";
import type { ChatMessage } from "../tokenizer/chat-template.js";
import { Tokenizer } from "../tokenizer/tokenizer.js";
import { ModelExecutor } from "./executor.js";
import {
  generateTokens,
  type GeneratedToken,
  type GenerateOptions,
  type GenerationResult,
} from "./generate.js";

export type { Device };

export interface LoadOptions {
  device?: Device;
  /** Longest prompt + completion to reserve KV cache for (default: the model's, up to 4096). */
  maxContext?: number;
  /**
   * Token slots in the KV cache, shared by all sequences (default: one context's worth). A server
   * running many sequences at once wants several contexts' worth.
   */
  kvCacheTokens?: number;
  /** Share of the GPU's memory tachyon may use (default 0.9). */
  gpuMemoryFraction?: number;
  onProgress?: (p: LoadProgress) => void;
}

export interface ModelInfo {
  architecture: string;
  parameters: number;
  /** Bytes of the weights as stored in the checkpoint. */
  checkpointBytes: number;
  /** Dtypes of the checkpoint's tensors (or their quantization format), most common first. */
  dtypes: string[];
  /**
   * Bytes the weights take once loaded on a GPU: 16 bits per parameter, or a quantized weight's
   * stored size (codes and scales). What the capacity check counts.
   */
  weightBytes: number;
}

export class LoadedModel {
  private constructor(
    readonly dir: string,
    readonly config: ModelConfig,
    readonly tokenizer: Tokenizer,
    readonly executor: ModelExecutor,
    readonly info: ModelInfo,
    /** Which device runs the model and why, e.g. "cpu (no CUDA driver (libcuda.so.1 not found))". */
    readonly deviceNote: string,
  ) {}

  static async load(dir: string, options: LoadOptions = {}): Promise<LoadedModel> {
    const config = loadConfig(dir);
    const tokenizer = Tokenizer.load(dir);
    const { backend, note } = createBackend(options.device ?? "auto", config);
    const ckpt = Checkpoint.open(dir);
    try {
      const info = describe(config, ckpt, dir);
      const contextLength = Math.min(config.maxPositions, options.maxContext ?? 4096);
      const executor = makeExecutor(backend, config, contextLength, info.weightBytes, options, () =>
        loadWeights(backend, config, ckpt, dir, options.onProgress),
      );
      return new LoadedModel(dir, config, tokenizer, executor, info, note);
    } finally {
      ckpt.close();
    }
  }

  /**
   * A model of a named shape (e.g. "llama-3-8b") with seeded random weights made on the backend
   * and the tokenizer of `tokenizerDir`: for measuring sizes whose real weights are not at hand.
   */
  static random(shape: string, tokenizerDir: string, options: LoadOptions = {}): LoadedModel {
    const dims = namedShapes[shape];
    if (!dims) {
      throw new TachyonError(
        `unknown shape "${shape}"; known: ${Object.keys(namedShapes).join(", ")}`,
        "argument",
      );
    }
    const contextLength = options.maxContext ?? 4096;
    const config = parseConfig(configJson({ ...dims, maxPositions: contextLength }));
    const tokenizer = Tokenizer.load(tokenizerDir);
    const { backend, note } = createBackend(options.device ?? "auto", config);
    let parameters = 0;
    for (const d of expectedTensors(config, config.tieWordEmbeddings !== true).values()) {
      parameters += d.reduce((a, b) => a * b, 1);
    }
    const info = {
      architecture: config.architecture,
      parameters,
      checkpointBytes: 0,
      dtypes: ["random"],
      weightBytes: 2 * parameters,
    };
    const executor = makeExecutor(backend, config, contextLength, info.weightBytes, options, () =>
      randomWeights(backend, config, 7),
    );
    return new LoadedModel(`random:${shape}`, config, tokenizer, executor, info, note);
  }

  get device(): string {
    return this.executor.backend.name;
  }

  /** Streams tokens continuing `prompt` (text is encoded with the tokenizer's special tokens, e.g. BOS). */
  generate(
    prompt: string | readonly number[],
    options?: GenerateOptions,
  ): AsyncGenerator<GeneratedToken, GenerationResult> {
    const ids = typeof prompt === "string" ? this.tokenizer.encode(prompt) : prompt;
    return generateTokens(this.executor, this.tokenizer, ids, options);
  }

  /** Streams the assistant's reply to a chat, formatted by the model's chat template. */
  chat(messages: ChatMessage[], options?: GenerateOptions): AsyncGenerator<GeneratedToken, GenerationResult> {
    return generateTokens(this.executor, this.tokenizer, this.tokenizer.encodeChat(messages), options);
  }

  /** Runs a generation to the end and returns the whole result. */
  async complete(prompt: string | readonly number[], options?: GenerateOptions): Promise<GenerationResult> {
    const it = this.generate(prompt, options);
    for (;;) {
      const r = await it.next();
      if (r.done) return r.value;
    }
  }

  /** Logits of every position of `tokens` ([tokens.length * vocab]), e.g. for scoring or perplexity. */
  logits(tokens: readonly number[]): Float32Array {
    return this.executor.score(tokens).logits;
  }
}

/** Checks that weights and KV cache fit before any weight is made, then builds the executor. */
function makeExecutor(
  backend: Backend,
  config: ModelConfig,
  contextLength: number,
  weightBytes: number,
  options: LoadOptions,
  weights: () => ModelWeights,
): ModelExecutor {
  const kvTokens = options.kvCacheTokens ?? contextLength;
  // Fail before loading anything when the model cannot fit: weights, KV cache, activations.
  backend.checkCapacity?.(weightBytes, kvTokens, options.gpuMemoryFraction ?? 0.9);
  return new ModelExecutor(backend, config, weights(), { maxTokens: kvTokens, contextLength });
}

function describe(config: ModelConfig, ckpt: Checkpoint, dir: string): ModelInfo {
  let parameters = 0;
  let checkpointBytes = 0;
  let weightBytes = 0;
  const dtypeCount = new Map<string, number>();
  for (const t of storedTensors(config, ckpt, dir)) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    parameters += n;
    checkpointBytes += t.bytes;
    weightBytes += t.quantized ? t.bytes : 2 * n;
    const dtype = t.quantized ? t.quantized.format.label : ckpt.info(t.name).dtype;
    dtypeCount.set(dtype, (dtypeCount.get(dtype) ?? 0) + t.bytes);
  }
  const dtypes = [...dtypeCount.entries()].sort((a, b) => b[1] - a[1]).map(([d]) => d);
  return { architecture: config.architecture, parameters, checkpointBytes, dtypes, weightBytes };
}

/** Reads config.json and the checkpoint headers only: no weights are loaded. */
export function inspectModel(dir: string): { config: ModelConfig; info: ModelInfo } {
  const config = loadConfig(dir);
  const ckpt = Checkpoint.open(dir);
  try {
    return { config, info: describe(config, ckpt, dir) };
  } finally {
    ckpt.close();
  }
}

export function loadModel(dir: string, options?: LoadOptions): Promise<LoadedModel> {
  return LoadedModel.load(dir, options);
}
