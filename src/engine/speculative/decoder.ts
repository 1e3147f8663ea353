/**
 * One sequence's decoding steps, speculative or not: feed what the target's cache lacks (the
 * pending token, or the prompt's last chunk) followed by proposed tokens, choose tokens from the
 * logits, keep the accepted ones and roll the cache back past the rest. Without a proposer this
 * is plain decoding, one token per step.
 */
import type { ModelExecutor } from "../executor.js";
import type { SequenceKv } from "../kv-cache.js";
import type { Sampler } from "../sampling.js";
import { acceptGreedy, acceptSampled, type Verdict } from "./acceptance.js";
import type { SpeculationLength } from "./adaptive-length.js";
import type { Proposal, Proposer } from "./proposer.js";
import { SpeculationCounter } from "./stats.js";

/**
 * Where tokens are chosen: "argmax" on the device (plain greedy), "device" by the backend's sampler
 * (no proposals then), "host" from logits read back (the Sampler, speculative sampling, logprobs).
 */
export type DecodeMode = "argmax" | "device" | "host";

/** Tokens one step produced; in host mode with the logits row each was chosen from. */
export interface StepTokens {
  tokens: number[];
  logits?: Float32Array[];
}

export interface Speculation {
  proposer: Proposer;
  length: SpeculationLength;
}

export class SpeculativeDecoder {
  /** Prompt and every token chosen so far; the last one is not yet in the target's cache. */
  readonly tokens: number[];
  readonly counter = new SpeculationCounter();
  private p = new Float64Array(0);
  private residual = new Float64Array(0);

  constructor(
    private readonly executor: ModelExecutor,
    private readonly seq: SequenceKv,
    private readonly sampler: Sampler,
    private readonly mode: DecodeMode,
    prompt: readonly number[],
    private readonly speculation: Speculation | null,
  ) {
    this.tokens = [...prompt];
  }

  /** Feeds the tokens up to `end` (an early prompt chunk) without choosing any. */
  fill(end: number): void {
    const start = this.seq.length;
    this.executor.stepGreedy([{ seq: this.seq, tokens: this.tokens.slice(start, end) }]);
    this.observe(start, end - start);
  }

  /**
   * One step: feeds what the cache lacks plus proposals (when only the pending token is missing)
   * and returns the 1 to `limit` tokens it produced, recorded in the sampler.
   */
  step(limit: number): StepTokens {
    const t0 = performance.now();
    const seq = this.seq;
    const start = seq.length;
    const feed = this.tokens.slice(start);
    const decoding = feed.length === 1;
    const spec = decoding ? this.speculation : null;
    const proposal = spec ? this.propose(spec, Math.min(spec.length.choose(), limit - 1)) : { tokens: [] };
    const drafts = proposal.tokens;
    const input = { seq, tokens: [...feed, ...drafts], allLogits: drafts.length > 0 };

    let verdict: Verdict;
    let rows: Float32Array[] | undefined;
    if (this.mode === "argmax") {
      verdict = acceptGreedy(drafts, this.executor.stepGreedy([input]));
      for (let j = 0; j < verdict.accepted; j++) this.sampler.accept(drafts[j]);
      this.sampler.accept(verdict.next);
    } else if (this.mode === "device" && drafts.length === 0) {
      const draw = { params: this.sampler.params, ...this.sampler.deviceDraw() };
      const [next] = this.executor.stepSample([input], [draw]);
      this.sampler.accept(next);
      verdict = { accepted: 0, next };
    } else {
      const [logits] = this.executor.step([input]);
      const V = this.executor.config.vocabSize;
      const row = (j: number) => logits.subarray(j * V, (j + 1) * V);
      if (this.p.length !== V && drafts.length > 0) {
        this.p = new Float64Array(V);
        this.residual = new Float64Array(V);
      }
      verdict = acceptSampled(this.sampler, proposal, row, this.p, this.residual);
      rows = Array.from({ length: verdict.accepted + 1 }, (_, j) => row(j));
    }

    const produced = [...drafts.slice(0, verdict.accepted), verdict.next];
    this.tokens.push(...produced);
    seq.truncate(start + feed.length + verdict.accepted);
    this.observe(start, feed.length + verdict.accepted);
    if (spec) {
      this.counter.record(drafts.length, verdict.accepted);
      spec.length.record(drafts.length, verdict.accepted, performance.now() - t0);
    }
    return { tokens: produced, logits: rows };
  }

  /** Releases what the proposer holds. */
  close(): void {
    this.speculation?.proposer.close?.();
  }

  /** Proposes up to k tokens, keeping only ids the target's vocabulary has. */
  private propose(spec: Speculation, k: number): Proposal {
    if (k < 1) return { tokens: [] };
    const proposal = spec.proposer.propose(this.tokens, k);
    const V = this.executor.config.vocabSize;
    let n = Math.min(k, proposal.tokens.length);
    const bad = proposal.tokens.findIndex((t) => !(Number.isInteger(t) && t >= 0 && t < V));
    if (bad >= 0 && bad < n) n = bad;
    return { tokens: proposal.tokens.slice(0, n), probs: proposal.probs?.slice(0, n) };
  }

  /** Lets the proposer follow the target step whose rows [start, start + kept) were kept. */
  private observe(start: number, kept: number): void {
    const proposer = this.speculation?.proposer;
    proposer?.observe?.(this.tokens, { start, kept, hidden: this.executor.lastHidden });
  }
}
