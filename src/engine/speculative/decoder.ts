/**
 * One sequence's decoding steps, speculative or not, whoever runs the step (the one-sequence loop
 * in generate.ts, or the scheduler among other sequences): `plan` says what the sequence feeds
 * (what the target's cache lacks, then proposed tokens when that is only the pending token) and
 * how its tokens are chosen; `settle` takes the step's result, keeps the accepted tokens, rolls
 * the cache back past the rest and lets the proposer follow. Without a proposer it is plain
 * decoding, one token per step.
 */
import type { Tokenizer } from "../../tokenizer/tokenizer.js";
import type { ChoiceResult, Hidden, ModelExecutor, StepInput, TokenChoice } from "../executor.js";
import type { SequenceKv } from "../kv-cache.js";
import { GreedyPipeline } from "../greedy-pipeline.js";
import { Sampler } from "../sampling.js";
import { samplingMode, type GenerationSettings, type SamplingMode } from "../sequence-output.js";
import { acceptGreedy, acceptSampled, type Verdict } from "./acceptance.js";
import type { SpeculationLength } from "./adaptive-length.js";
import { createSpeculation, type SpeculationOptions } from "./options.js";
import type { Proposal, Proposer } from "./proposer.js";
import { SpeculationCounter } from "./stats.js";

/** Tokens one step produced; in host mode with the logits row each was chosen from. */
export interface StepTokens {
  tokens: number[];
  logits?: Float32Array[];
  /** Tokens the step proposed, and how many of them the target accepted. */
  proposed: number;
  accepted: number;
}

export interface Speculation {
  proposer: Proposer;
  length: SpeculationLength;
}

/** This sequence's part of a step: its input and how its tokens are chosen. */
export interface PlannedStep {
  input: StepInput;
  choice: TokenChoice;
}

const noProposal: Proposal = { tokens: [] };

export class SpeculativeDecoder {
  /** Prompt and every token chosen so far; the last one is not yet in the target's cache. */
  readonly tokens: number[];
  readonly counter = new SpeculationCounter();
  private p = new Float64Array(0);
  private residual = new Float64Array(0);
  /** Plain greedy steps in flight (see step); null otherwise. */
  private pipeline: GreedyPipeline | null = null;
  /** The step planned and not yet settled. */
  private planned: {
    start: number;
    fed: number;
    proposal: Proposal;
    speculating: boolean;
    t0: number;
  } | null = null;

  constructor(
    private readonly executor: ModelExecutor,
    private readonly seq: SequenceKv,
    private readonly sampler: Sampler,
    /** A speculating sequence verifies by argmax or on the host ("device" draws one token). */
    private readonly mode: SamplingMode,
    prompt: readonly number[],
    private readonly speculation: Speculation | null,
  ) {
    this.tokens = [...prompt];
  }

  /**
   * The decoder of a new generation in `seq`: its sampler, its proposer when it speculates, and
   * where its tokens are chosen. Throws a TachyonError for speculation options that cannot work.
   */
  static start(
    executor: ModelExecutor,
    tokenizer: Tokenizer,
    seq: SequenceKv,
    prompt: readonly number[],
    settings: GenerationSettings,
    options: SpeculationOptions | undefined,
  ): SpeculativeDecoder {
    const sampler = new Sampler(settings.params, executor.config.vocabSize);
    sampler.setPrompt(prompt);
    const speculation = options ? createSpeculation(options, executor, tokenizer, seq) : null;
    const mode = samplingMode(settings, executor.backend, speculation !== null);
    return new SpeculativeDecoder(executor, seq, sampler, mode, prompt, speculation);
  }

  /** Feeds the tokens up to `end` (an early prompt chunk) without choosing any. */
  fill(end: number): void {
    this.run(end, 0);
  }

  /**
   * One step on its own: feeds what the cache lacks plus proposals; returns the 1 to `limit`
   * tokens it produced. Plain greedy decoding, once only the pending token is missing from the
   * cache, goes through a GreedyPipeline: the step after this one is already enqueued when it
   * returns (close() drops it).
   */
  step(limit: number): StepTokens {
    const plainGreedy = !this.speculation && this.mode === "argmax";
    if (plainGreedy && (this.pipeline || this.seq.length === this.tokens.length - 1)) {
      this.pipeline ??= new GreedyPipeline(this.executor, this.seq, this.tokens[this.tokens.length - 1]);
      const token = this.pipeline.next(limit > 1);
      if (limit <= 1) this.pipeline = null; // spent: nothing in flight
      this.tokens.push(token);
      this.sampler.accept(token);
      return { tokens: [token], proposed: 0, accepted: 0 };
    }
    return this.run(this.tokens.length, this.wantedProposals(limit));
  }

  /**
   * How many tokens the next step should propose (the adaptive length's choice) when at most
   * `limit` tokens may still be produced; 0 unless only the pending token is missing from the cache.
   */
  wantedProposals(limit: number): number {
    if (!this.speculation || this.seq.length !== this.tokens.length - 1) return 0;
    return Math.min(this.speculation.length.choose(), limit - 1);
  }

  /**
   * The next step's part for this sequence: its tokens from the cache's end up to `end`, then, when
   * that is the pending token alone, up to `maxProposals` proposed tokens. Plan once the step is
   * final: a device draw takes a word from the sequence's seeded stream.
   */
  plan(end: number, maxProposals: number): PlannedStep {
    const start = this.seq.length;
    const feed = this.tokens.slice(start, end);
    const chooses = end === this.tokens.length;
    const speculating = chooses && feed.length === 1 && this.speculation !== null;
    const proposal = speculating ? this.propose(this.speculation!, maxProposals) : noProposal;
    this.planned = { start, fed: feed.length, proposal, speculating, t0: performance.now() };
    const drafts = proposal.tokens;
    return {
      input: { seq: this.seq, tokens: [...feed, ...drafts], allLogits: drafts.length > 0 },
      choice: chooses ? this.choice() : { by: "none" },
    };
  }

  /**
   * Takes the result of the planned step: chooses the tokens (recorded in the sampler), keeps the
   * accepted proposals, rolls the cache back past the rejected ones and lets the proposer follow.
   * Returns the tokens produced (none after an early prompt chunk).
   */
  settle(result: ChoiceResult): StepTokens {
    const { start, fed, proposal, speculating, t0 } = this.planned!;
    this.planned = null;
    if (start + fed < this.tokens.length) {
      this.observe(start, fed, result.hidden);
      return { tokens: [], proposed: 0, accepted: 0 };
    }
    const drafts = proposal.tokens;
    let verdict: Verdict;
    let rows: Float32Array[] | undefined;
    if (result.tokens) {
      // Chosen on the device: the argmax of every row, or one draw.
      verdict = acceptGreedy(drafts, result.tokens);
      for (let j = 0; j < verdict.accepted; j++) this.sampler.accept(drafts[j]);
      this.sampler.accept(verdict.next);
    } else {
      const V = this.executor.config.vocabSize;
      const logits = result.logits!;
      const row = (j: number) => logits.subarray(j * V, (j + 1) * V);
      if (this.p.length !== V && proposal.probs) {
        this.p = new Float64Array(V);
        this.residual = new Float64Array(V);
      }
      verdict = acceptSampled(this.sampler, proposal, row, this.p, this.residual);
      rows = Array.from({ length: verdict.accepted + 1 }, (_, j) => row(j));
    }

    const produced = [...drafts.slice(0, verdict.accepted), verdict.next];
    this.tokens.push(...produced);
    this.seq.truncate(start + fed + verdict.accepted);
    this.observe(start, fed + verdict.accepted, result.hidden);
    if (speculating) {
      this.counter.record(drafts.length, verdict.accepted);
      this.speculation!.length.record(drafts.length, verdict.accepted, performance.now() - t0);
    }
    return { tokens: produced, logits: rows, proposed: drafts.length, accepted: verdict.accepted };
  }

  /**
   * Releases what the proposer holds. It starts afresh if used again, as after a preemption (the
   * cache is recomputed, and a draft model's cache blocks are better back in its pool meanwhile).
   */
  close(): void {
    this.pipeline?.close();
    this.pipeline = null;
    this.speculation?.proposer.close?.();
  }

  private run(end: number, maxProposals: number): StepTokens {
    const { input, choice } = this.plan(end, maxProposals);
    const [result] = this.executor.stepChoosing([input], [choice]);
    return this.settle(result);
  }

  private choice(): TokenChoice {
    if (this.mode === "argmax") return { by: "argmax" };
    if (this.mode === "device")
      return { by: "draw", draw: { params: this.sampler.params, ...this.sampler.deviceDraw() } };
    return { by: "host" };
  }

  /** Proposes up to k tokens, keeping only ids the target's vocabulary has. */
  private propose(spec: Speculation, k: number): Proposal {
    if (k < 1) return noProposal;
    const proposal = spec.proposer.propose(this.tokens, k);
    const V = this.executor.config.vocabSize;
    let n = Math.min(k, proposal.tokens.length);
    const bad = proposal.tokens.findIndex((t) => !(Number.isInteger(t) && t >= 0 && t < V));
    if (bad >= 0 && bad < n) n = bad;
    return { tokens: proposal.tokens.slice(0, n), probs: proposal.probs?.slice(0, n) };
  }

  /** Lets the proposer follow the target step whose rows [start, start + kept) were kept. */
  private observe(start: number, kept: number, hidden: Hidden): void {
    this.speculation?.proposer.observe?.(this.tokens, { start, kept, hidden });
  }
}
