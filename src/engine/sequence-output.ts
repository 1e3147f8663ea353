/**
 * What becomes of the tokens one sequence generates, whoever runs it (the one-sequence loop in
 * generate.ts or the server's scheduler): the request checked against the model up front, then
 * per token the stop tokens, logprobs, incremental detokenization and stop strings, and at the end
 * the result with its timings.
 */
import type { Backend } from "../backends/backend.js";
import { TachyonError } from "../errors.js";
import { StreamDecoder } from "../tokenizer/stream-decoder.js";
import type { Tokenizer } from "../tokenizer/tokenizer.js";
import type { ModelExecutor } from "./executor.js";
import type { FinishReason, GeneratedToken, GenerateOptions, GenerationResult } from "./generate.js";
import { logSoftmaxAt, topLogprobs, validateSamplingParams, type SamplingParams } from "./sampling.js";
import { StopStringMatcher } from "./stop-strings.js";

/** A generation's settings, checked and with defaults filled in. */
export interface GenerationSettings {
  params: SamplingParams;
  maxTokens: number;
  stopIds: ReadonlySet<number>;
  stop: readonly string[];
  /** Alternatives to report per token (0 = the token's own logprob only); undefined = no logprobs. */
  logprobs: number | undefined;
}

/** Checks a prompt and its options against the model; throws a TachyonError ("argument") naming the problem. */
export function generationSettings(
  executor: ModelExecutor,
  promptIds: readonly number[],
  options: GenerateOptions,
): GenerationSettings {
  const cfg = executor.config;
  const params = validateSamplingParams(options);
  if (promptIds.length === 0)
    throw new TachyonError("the prompt is empty: give at least one token", "argument");
  const room = executor.contextLength - promptIds.length;
  if (room <= 0) {
    throw new TachyonError(
      `the prompt has ${promptIds.length} tokens but the context is ${executor.contextLength}; shorten it` +
        (executor.contextLength < cfg.maxPositions
          ? ` or raise --max-context (the model allows ${cfg.maxPositions})`
          : ""),
      "argument",
    );
  }
  if (options.maxTokens !== undefined && (!Number.isInteger(options.maxTokens) || options.maxTokens < 1)) {
    throw new TachyonError(`max_tokens must be a positive integer, got ${options.maxTokens}`, "argument");
  }
  const stopIds = new Set(options.stopTokenIds ?? []);
  if (!options.ignoreEos) for (const id of cfg.eosTokenIds) stopIds.add(id);
  return {
    params,
    maxTokens: Math.min(options.maxTokens ?? room, room),
    stopIds,
    stop: options.stop ?? [],
    logprobs: options.logprobs,
  };
}

/**
 * How a sequence's tokens are chosen: where the logits are — plain greedy by an argmax (of every
 * row of a verification), anything else by the backend's sampler when it has one; the logits come
 * to the host for logprobs, and for a sampled sequence that speculates: verifying its proposals
 * needs them, and choosing on the host every step keeps its seeded draws on one mechanism.
 */
export type SamplingMode = "argmax" | "device" | "host";

export function samplingMode(
  settings: GenerationSettings,
  backend: Backend,
  speculates: boolean,
): SamplingMode {
  const p = settings.params;
  const plainGreedy =
    p.temperature === 0 && p.repetitionPenalty === 1 && p.presencePenalty === 0 && p.frequencyPenalty === 0;
  if (settings.logprobs !== undefined) return "host";
  if (plainGreedy) return "argmax";
  return backend.sampleRows && !speculates ? "device" : "host";
}

export class SequenceOutput {
  readonly tokens: number[] = [];
  text = "";
  finishReason: FinishReason | null = null;
  private readonly decoder: StreamDecoder;
  private readonly stops: StopStringMatcher;
  private matchedStopString = false;
  /** When the sequence was submitted, and when its first token came. */
  private readonly start = performance.now();
  private firstTokenAt = 0;

  constructor(
    private readonly tokenizer: Tokenizer,
    private readonly promptIds: readonly number[],
    private readonly settings: GenerationSettings,
  ) {
    this.decoder = new StreamDecoder(tokenizer, promptIds);
    this.stops = new StopStringMatcher(settings.stop);
  }

  get done(): boolean {
    return this.finishReason !== null;
  }

  /**
   * Takes the next generated token (with the logits it was chosen from when logprobs are wanted).
   * Returns what to stream, or null for a stop token, which ends the sequence and shows nothing.
   */
  push(token: number, logits?: Float32Array): GeneratedToken | null {
    this.tokens.push(token);
    if (this.tokens.length === 1) this.firstTokenAt = performance.now();
    if (this.settings.stopIds.has(token)) {
      this.finishReason = "stop";
      return null;
    }
    const out: GeneratedToken = { token, text: "" };
    const topN = this.settings.logprobs;
    if (topN !== undefined && logits) {
      out.logprob = logSoftmaxAt(logits, token);
      out.topLogprobs = topLogprobs(logits, topN).map((t) => ({
        ...t,
        text: this.tokenizer.decode([t.token]),
      }));
    }
    const visible = this.stops.push(this.decoder.push(token));
    out.text = visible.text;
    this.text += visible.text;
    if (visible.stopped) {
      this.finishReason = "stop";
      this.matchedStopString = true;
    } else if (this.tokens.length >= this.settings.maxTokens) {
      this.finishReason = "length";
    }
    return out;
  }

  /**
   * Ends the sequence (for `reason` unless a token already ended it) and returns the text held
   * back for a possible stop string or an incomplete character, if any.
   */
  finish(reason: FinishReason): GeneratedToken | null {
    this.finishReason ??= reason;
    if (this.matchedStopString) return null;
    const tail = this.stops.push(this.decoder.flush()).text + this.stops.flush();
    if (!tail) return null;
    this.text += tail;
    return { token: null, text: tail };
  }

  result(): GenerationResult {
    const end = performance.now();
    const first = this.firstTokenAt || end;
    const n = this.tokens.length;
    const decodeMs = end - first;
    return {
      text: this.text,
      tokens: this.tokens,
      finishReason: this.finishReason ?? "abort",
      promptTokens: this.promptIds.length,
      completionTokens: n,
      timeToFirstTokenMs: first - this.start,
      totalMs: end - this.start,
      decodeTokensPerSecond: n > 1 && decodeMs > 0 ? ((n - 1) * 1000) / decodeMs : 0,
    };
  }
}
