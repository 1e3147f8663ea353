/**
 * The generation loop of one sequence: prefill the prompt, then sample, stream and stop. Text is
 * detokenized incrementally (never splitting a character) and checked against stop strings before
 * it is shown. The loop yields to the event loop between tokens so a server stays responsive and
 * an AbortSignal can end it.
 */
import type { Tokenizer } from "../tokenizer/tokenizer.js";
import type { ModelExecutor } from "./executor.js";
import { Sampler, type SamplingParams } from "./sampling.js";
import { generationSettings, samplingMode, SequenceOutput } from "./sequence-output.js";

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
}

/** Prompt rows per forward step: bounds activation memory on long prompts. */
const prefillChunk = 256;

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export async function* generateTokens(
  executor: ModelExecutor,
  tokenizer: Tokenizer,
  promptIds: readonly number[],
  options: GenerateOptions = {},
): AsyncGenerator<GeneratedToken, GenerationResult> {
  const settings = generationSettings(executor, promptIds, options);
  const { params } = settings;
  const sampler = new Sampler(params, executor.config.vocabSize);
  sampler.setPrompt(promptIds);
  const output = new SequenceOutput(tokenizer, promptIds, settings);
  const seq = executor.newSequence();

  try {
    const mode = samplingMode(settings, executor.backend);
    let logits: Float32Array = new Float32Array(0);
    let deviceToken = 0;
    const advance = (tokens: readonly number[]): void => {
      if (mode === "argmax") [deviceToken] = executor.stepGreedy([{ seq, tokens }]);
      else if (mode === "device")
        [deviceToken] = executor.stepSample([{ seq, tokens }], [{ params, ...sampler.deviceDraw() }]);
      else [logits] = executor.step([{ seq, tokens }]);
    };
    for (let i = 0; i < promptIds.length; i += prefillChunk) {
      const chunk = promptIds.slice(i, i + prefillChunk);
      if (i + prefillChunk >= promptIds.length) {
        advance(chunk);
      } else {
        executor.stepGreedy([{ seq, tokens: chunk }]); // earlier chunks only fill the cache
        await yieldToEventLoop();
      }
    }
    let endReason: FinishReason = "length";
    while (!output.done) {
      if (options.signal?.aborted) {
        endReason = "abort";
        break;
      }
      const token = mode === "host" ? sampler.sample(logits) : deviceToken;
      sampler.accept(token);
      const out = output.push(token, logits);
      if (out) yield out;
      if (output.done) break;
      await yieldToEventLoop();
      advance([token]);
    }
    const tail = output.finish(endReason);
    if (tail) yield tail;
  } finally {
    seq.free();
  }
  return output.result();
}
