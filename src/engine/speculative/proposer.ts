/**
 * What every speculative proposer offers the decoder: guesses of the next tokens, which the target
 * model then verifies all at once. Proposers differ in where the guesses come from (the model's
 * own MTP modules, a smaller draft model, earlier text of the sequence), never in how they are
 * checked, so the decoder treats them alike.
 */
import type { Hidden } from "../executor.js";

export interface Proposal {
  tokens: number[];
  /**
   * The proposer's distribution q (dense, vocabulary-sized) that each token was drawn from. Absent
   * when the tokens were chosen greedily or copied: q is then a point mass on each token.
   */
  probs?: Float64Array[];
}

/** A target-model step: rows [start, start + kept) of it are now part of the sequence. */
export interface TargetStep {
  /** Position of the step's first row. */
  start: number;
  kept: number;
  /** The main model's hidden states of the step's rows, valid until the next step. */
  hidden: Hidden;
}

export interface Proposer {
  /** Most tokens it can propose per step. */
  readonly maxTokens: number;
  /**
   * Up to k tokens to follow `tokens` (prompt + output so far). The target's cache holds every
   * token but the last, which the verification step feeds first.
   */
  propose(tokens: readonly number[], k: number): Proposal;
  /** Called after each target step, before anything else runs: `tokens` is the sequence as now known. */
  observe?(tokens: readonly number[], step: TargetStep): void;
  /**
   * Releases what it holds (a draft model's cache blocks): when its sequence ends, and when the
   * scheduler preempts it, after which it is used again and starts afresh.
   */
  close?(): void;
}
