/**
 * The generation loop of one sequence: prefill the prompt, then sample, stream and stop. Text is
 * detokenized incrementally (never splitting a character) and checked against stop strings before
 * it is shown. The loop yields to the event loop between tokens so a server stays responsive and
 * an AbortSignal can end it.
 */
import type { Tokenizer } from "../tokenizer/tokenizer.js";
import { prefillChunk, type ModelExecutor } from "./executor.js";
import type { SamplingParams } from "./sampling.js";
import { generationSettings, SequenceOutput } from "./sequence-output.js";
import { SpeculativeDecoder, type StepTokens } from "./speculative/decoder.js";
import type { SpeculationOptions } from "./speculative/options.js";
import type { SpeculationStats } from "./speculative/stats.js";

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
  const settings = generationSettings(executor, promptIds, options);
  const { maxTokens } = settings;
  const output = new SequenceOutput(tokenizer, promptIds, settings);
  const seq = executor.newSequence();
  const decoder = SpeculativeDecoder.start(
    executor,
    tokenizer,
    seq,
    promptIds,
    settings,
    options.speculation,
  );
  try {
    for (let end = prefillChunk; end < promptIds.length; end += prefillChunk) {
      decoder.fill(end); // earlier chunks only fill the cache
      await yieldToEventLoop();
    }
    let ready: StepTokens = decoder.step(maxTokens);
    let next = 0;
    let endReason: FinishReason = "length";
    while (!output.done) {
      if (options.signal?.aborted) {
        endReason = "abort";
        break;
      }
      const out = output.push(ready.tokens[next], ready.logits?.[next]);
      next++;
      if (out) yield out;
      if (output.done) break;
      if (next === ready.tokens.length) {
        await yieldToEventLoop();
        ready = decoder.step(maxTokens - output.tokens.length);
        next = 0;
      }
    }
    const tail = output.finish(endReason);
    if (tail) yield tail;
  } finally {
    decoder.close();
    seq.free();
  }
  return {
    ...output.result(),
    ...(options.speculation && { speculation: decoder.counter.stats(options.speculation.method) }),
  };
}
