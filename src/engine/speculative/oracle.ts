/**
 * Proposes the continuation of a sequence known in advance, e.g. the target's own greedy output:
 * every proposal is accepted, so the accepted length per step is fixed. `tachyon bench` uses it
 * to measure speculation speed on random weights, which cannot give real acceptance.
 */
import type { Proposal, Proposer } from "./proposer.js";

export class OracleProposer implements Proposer {
  constructor(
    private readonly reference: readonly number[],
    readonly maxTokens: number,
  ) {}

  propose(tokens: readonly number[], k: number): Proposal {
    return { tokens: this.reference.slice(tokens.length, tokens.length + k) };
  }
}
