/**
 * One generation the scheduler runs: its tokens (the prompt, then what it generated), how many of
 * them are in the KV cache, how its next token is chosen, and the stream its output goes to.
 * Positions [0, kv.length) are computed; the rest still have to go through the model: the whole
 * prompt at first, one token while decoding, everything again after a preemption.
 */
import type { Tokenizer } from "../tokenizer/tokenizer.js";
import type { ChoiceResult, ModelExecutor, TokenChoice } from "./executor.js";
import type { FinishReason, GeneratedToken, GenerationResult } from "./generate.js";
import type { SequenceKv } from "./kv-cache.js";
import { Sampler } from "./sampling.js";
import {
  samplingMode,
  SequenceOutput,
  type GenerationSettings,
  type SamplingMode,
} from "./sequence-output.js";

export class Sequence {
  readonly tokens: number[];
  readonly promptLength: number;
  readonly kv: SequenceKv;
  private readonly output: SequenceOutput;
  private readonly sampler: Sampler;
  private readonly mode: SamplingMode;
  /** Chunks produced and not yet read. */
  private readonly unread: GeneratedToken[] = [];
  private wake: (() => void) | null = null;
  private outcome: { result: GenerationResult } | { error: unknown } | null = null;
  /** The consumer stopped reading before the end. */
  private abandoned = false;

  constructor(
    executor: ModelExecutor,
    tokenizer: Tokenizer,
    promptIds: readonly number[],
    settings: GenerationSettings,
    private readonly signal: AbortSignal | undefined,
    /** A sibling with the same prompt (n > 1): this one starts once the leader's prompt is cached. */
    readonly leader: Sequence | null,
  ) {
    this.tokens = [...promptIds];
    this.promptLength = promptIds.length;
    this.kv = executor.newSequence();
    this.sampler = new Sampler(settings.params, executor.config.vocabSize);
    this.sampler.setPrompt(promptIds);
    this.mode = samplingMode(settings, executor.backend, false);
    this.output = new SequenceOutput(tokenizer, promptIds, settings);
  }

  get finished(): boolean {
    return this.outcome !== null;
  }

  /** Nobody wants the rest: the request was aborted or its consumer stopped reading. */
  get cancelled(): boolean {
    return this.abandoned || this.signal?.aborted === true;
  }

  /** Tokens that have to go through the model before the next token can be chosen. */
  get uncomputed(): number {
    return this.tokens.length - this.kv.length;
  }

  get promptComputed(): boolean {
    return this.kv.length >= this.promptLength;
  }

  /** How the next token is chosen after a step whose rows for this sequence end at `computedTo`. */
  choice(computedTo: number): TokenChoice {
    if (computedTo < this.tokens.length) return { by: "none" };
    if (this.mode === "argmax") return { by: "argmax" };
    if (this.mode === "device")
      return { by: "draw", draw: { params: this.sampler.params, ...this.sampler.deviceDraw() } };
    return { by: "host" };
  }

  /** Takes the result of a step that computed every token: chooses, records and streams the next one. */
  advance(result: ChoiceResult): void {
    const token = result.tokens?.[0] ?? this.sampler.sample(result.logits!);
    this.sampler.accept(token);
    this.tokens.push(token);
    const out = this.output.push(token, result.logits);
    if (out) this.emit(out);
    if (this.output.done) this.end(this.output.finishReason!);
  }

  /** Ends the stream normally (for `reason` unless a token already ended it) and frees the KV blocks. */
  end(reason: FinishReason): void {
    if (this.outcome) return;
    const tail = this.output.finish(reason);
    if (tail) this.emit(tail);
    this.settle({ result: this.output.result() });
  }

  /** Ends the stream with an error (the consumer's next read throws it) and frees the KV blocks. */
  fail(error: unknown): void {
    if (!this.outcome) this.settle({ error });
  }

  /** The output, as generateTokens gives it: chunks, then the result. */
  async *stream(): AsyncGenerator<GeneratedToken, GenerationResult> {
    let read = 0;
    try {
      for (;;) {
        while (read < this.unread.length) yield this.unread[read++];
        this.unread.length = read = 0;
        if (this.outcome) {
          if ("error" in this.outcome) throw this.outcome.error;
          return this.outcome.result;
        }
        await new Promise<void>((resolve) => (this.wake = resolve));
      }
    } finally {
      if (!this.outcome) this.abandoned = true;
    }
  }

  private settle(outcome: NonNullable<Sequence["outcome"]>): void {
    this.outcome = outcome;
    this.kv.free();
    this.notify();
  }

  private emit(chunk: GeneratedToken): void {
    this.unread.push(chunk);
    this.notify();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }
}
