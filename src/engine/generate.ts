/**
 * The generation loop of one sequence: prefill the prompt, then sample, stream and stop. Text is
 * detokenized incrementally (never splitting a character) and checked against stop strings before
 * it is shown. The loop yields to the event loop between tokens so a server stays responsive and
 * an AbortSignal can end it.
 */
import { TachyonError } from "../errors.js";
import { StreamDecoder } from "../tokenizer/stream-decoder.js";
import type { Tokenizer } from "../tokenizer/tokenizer.js";
import { prefillChunk, type ModelExecutor } from "./executor.js";
import {
  logSoftmaxAt,
  Sampler,
  topLogprobs,
  validateSamplingParams,
  type SamplingParams,
} from "./sampling.js";
import { SpeculativeDecoder, type DecodeMode, type StepTokens } from "./speculative/decoder.js";
import { createSpeculation, type SpeculationOptions } from "./speculative/options.js";
import type { SpeculationStats } from "./speculative/stats.js";
import { StopStringMatcher } from "./stop-strings.js";

export type { SpeculationOptions, SpeculationStats };

export interface GenerateOptions extends Partial<SamplingParams> {
  /** Most tokens to generate (default: up to the context limit). */
  maxTokens?: number;
  /** Strings that end generation; they are not part of the output. */
  stop?: string[];
  /** Token ids that end generation, in addition to the model's EOS unless ignoreEos. */
  stopTokenIds?: number[];
  ignoreEos?: boolean;
  /** Report each token's log-probability and this many top alternatives (0 = the token's only). */
  logprobs?: number;
  signal?: AbortSignal;
  /** Speculative decoding: propose tokens and verify several per step (output unchanged). */
  speculation?: SpeculationOptions;
}

export interface TokenLogprob {
  token: number;
  text: string;
  logprob: number;
}

/**
 * One generated token and the text it made visible (may be empty while text is held back). A
 * final chunk with token null carries text that was held back until the stream ended.
 */
export interface GeneratedToken {
  token: number | null;
  text: string;
  logprob?: number;
  topLogprobs?: TokenLogprob[];
}

export type FinishReason = "stop" | "length" | "abort";

export interface GenerationResult {
  text: string;
  tokens: number[];
  finishReason: FinishReason;
  promptTokens: number;
  completionTokens: number;
  /** Prompt submitted → first token sampled. */
  timeToFirstTokenMs: number;
  totalMs: number;
  /** Tokens after the first, per second of decoding. */
  decodeTokensPerSecond: number;
  /** What speculation achieved, when the request asked for it. */
  speculation?: SpeculationStats;
}

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export async function* generateTokens(
  executor: ModelExecutor,
  tokenizer: Tokenizer,
  promptIds: readonly number[],
  options: GenerateOptions = {},
): AsyncGenerator<GeneratedToken, GenerationResult> {
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
  const maxTokens = Math.min(options.maxTokens ?? room, room);
  const stopIds = new Set(options.stopTokenIds ?? []);
  if (!options.ignoreEos) for (const id of cfg.eosTokenIds) stopIds.add(id);
  const topN = options.logprobs;

  const sampler = new Sampler(params, cfg.vocabSize);
  sampler.setPrompt(promptIds);
  const detokenizer = new StreamDecoder(tokenizer, promptIds);
  const stops = new StopStringMatcher(options.stop ?? []);
  const seq = executor.newSequence();
  const start = performance.now();
  let firstTokenAt = 0;
  const tokens: number[] = [];
  let text = "";
  let finishReason: FinishReason = "length";
  let matchedStopString = false;

  // The token is chosen where the logits are: plain greedy by an argmax, anything else by the
  // backend's sampler when it has one; only with logprobs do the logits come to the host.
  // Speculative sampling needs the logits of the rows with proposals on the host too.
  const plainGreedy =
    params.temperature === 0 &&
    params.repetitionPenalty === 1 &&
    params.presencePenalty === 0 &&
    params.frequencyPenalty === 0;
  const mode: DecodeMode =
    topN !== undefined ? "host" : plainGreedy ? "argmax" : executor.backend.sampleRows ? "device" : "host";
  const speculation = options.speculation
    ? createSpeculation(options.speculation, executor, tokenizer, seq)
    : null;
  const decoder = new SpeculativeDecoder(executor, seq, sampler, mode, promptIds, speculation);
  try {
    for (let end = prefillChunk; end < promptIds.length; end += prefillChunk) {
      decoder.fill(end); // earlier chunks only fill the cache
      await yieldToEventLoop();
    }
    let ready: StepTokens = decoder.step(maxTokens);
    let next = 0;
    while (tokens.length < maxTokens) {
      if (options.signal?.aborted) {
        finishReason = "abort";
        break;
      }
      const logits = ready.logits?.[next];
      const token = ready.tokens[next++];
      tokens.push(token);
      if (tokens.length === 1) firstTokenAt = performance.now();
      if (stopIds.has(token)) {
        finishReason = "stop";
        break;
      }
      const out: GeneratedToken = { token, text: "" };
      if (topN !== undefined && logits) {
        out.logprob = logSoftmaxAt(logits, token);
        out.topLogprobs = topLogprobs(logits, topN).map((t) => ({ ...t, text: tokenizer.decode([t.token]) }));
      }
      const visible = stops.push(detokenizer.push(token));
      out.text = visible.text;
      text += visible.text;
      yield out;
      if (visible.stopped) {
        finishReason = "stop";
        matchedStopString = true;
        break;
      }
      if (tokens.length === maxTokens) break;
      if (next === ready.tokens.length) {
        await yieldToEventLoop();
        ready = decoder.step(maxTokens - tokens.length);
        next = 0;
      }
    }
    if (!matchedStopString) {
      const tail = stops.push(detokenizer.flush()).text + stops.flush();
      if (tail) {
        text += tail;
        yield { token: null, text: tail };
      }
    }
  } finally {
    decoder.close();
    seq.free();
  }
  const end = performance.now();
  const decodeMs = end - (firstTokenAt || end);
  return {
    text,
    tokens,
    finishReason,
    promptTokens: promptIds.length,
    completionTokens: tokens.length,
    timeToFirstTokenMs: (firstTokenAt || end) - start,
    totalMs: end - start,
    decodeTokensPerSecond: tokens.length > 1 && decodeMs > 0 ? ((tokens.length - 1) * 1000) / decodeMs : 0,
    ...(speculation && { speculation: decoder.counter.stats(options.speculation!.method) }),
  };
}
