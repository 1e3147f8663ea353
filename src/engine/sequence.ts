/**
 * One generation the scheduler runs: its tokens (the prompt, then what it generated), how many of
 * them are in the KV cache, how its steps go (its decoder: what it feeds, with proposals when it
 * speculates, and how its tokens are chosen), and the stream its output goes to. Positions
 * [0, kv.length) are computed; the rest still have to go through the model: the whole prompt at
 * first, one token while decoding, everything again after a preemption.
 */
import type { Tokenizer } from "../tokenizer/tokenizer.js";
import type { ChoiceResult, ModelExecutor } from "./executor.js";
import type { FinishReason, GeneratedToken, GenerationResult, SpeculationOptions } from "./generate.js";
import type { SequenceKv } from "./kv-cache.js";
import { SequenceOutput, type GenerationSettings } from "./sequence-output.js";
import { SpeculativeDecoder, type PlannedStep } from "./speculative/decoder.js";
import { prefixFamily } from "./speculative/options.js";

/** What one step did for a sequence, for the scheduler's counts. */
export interface StepOutcome {
  /** Tokens streamed (or ending it). */
  generated: number;
  proposed: number;
  accepted: number;
}

export class Sequence {
  readonly promptLength: number;
  readonly kv: SequenceKv;
  private readonly decoder: SpeculativeDecoder;
  private readonly output: SequenceOutput;
  /** Chunks produced and not yet read. */
  private readonly unread: GeneratedToken[] = [];
  private wake: (() => void) | null = null;
  private outcome: { result: GenerationResult } | { error: unknown } | null = null;
  /** The consumer stopped reading before the end. */
  private abandoned = false;

  /** Throws a TachyonError ("argument") for speculation options that cannot work. */
  constructor(
    executor: ModelExecutor,
    tokenizer: Tokenizer,
    promptIds: readonly number[],
    private readonly settings: GenerationSettings,
    private readonly speculation: SpeculationOptions | undefined,
    private readonly signal: AbortSignal | undefined,
    /** A sibling with the same prompt (n > 1): this one starts once the leader's prompt is cached. */
    readonly leader: Sequence | null,
  ) {
    this.promptLength = promptIds.length;
    this.kv = executor.newSequence(prefixFamily(speculation));
    this.decoder = SpeculativeDecoder.start(executor, tokenizer, this.kv, promptIds, settings, speculation);
    this.output = new SequenceOutput(tokenizer, promptIds, settings);
  }

  get tokens(): readonly number[] {
    return this.decoder.tokens;
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

  /** Tokens it would have the next step propose (0 unless it speculates and only its pending token is missing). */
  get wantedProposals(): number {
    return this.decoder.wantedProposals(this.settings.maxTokens - this.output.tokens.length);
  }

  /** Its part of a step computing its tokens up to `to`, with up to `maxProposals` proposals; once the batch is final. */
  plan(to: number, maxProposals: number): PlannedStep {
    return this.decoder.plan(to, maxProposals);
  }

  /**
   * Takes the step's result: keeps the accepted tokens, names the cache's full blocks for reuse
   * and streams the tokens, as far as the output goes on.
   */
  advance(result: ChoiceResult): StepOutcome {
    const step = this.decoder.settle(result);
    // Rolled back past rejected proposals, the cache holds this sequence's tokens alone.
    this.kv.publishFullBlocks(this.tokens);
    let generated = 0;
    while (generated < step.tokens.length && !this.output.done) {
      const out = this.output.push(step.tokens[generated], step.logits?.[generated]);
      generated++;
      if (out) this.emit(out);
    }
    if (this.output.done) this.end(this.output.finishReason!);
    return { generated, proposed: step.proposed, accepted: step.accepted };
  }

  /** Gives its KV blocks back to be recomputed later (tokens, sampler and output stay as they are). */
  preempt(): void {
    this.kv.free();
    this.decoder.close();
  }

  /** Ends the stream normally (for `reason` unless a token already ended it) and frees the KV blocks. */
  end(reason: FinishReason): void {
    if (this.outcome) return;
    const tail = this.output.finish(reason);
    if (tail) this.emit(tail);
    const method = this.speculation?.method;
    this.settle({
      result: { ...this.output.result(), ...(method && { speculation: this.decoder.counter.stats(method) }) },
    });
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
    this.decoder.close();
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
