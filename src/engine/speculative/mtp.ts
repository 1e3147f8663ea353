/**
 * Proposals from the model's own multi-token-prediction modules (DeepSeek-V3 / MiMo style),
 * chained: depth d at position i reads h_{d-1}[i] and token i + d and guesses token i + d + 1.
 *
 * After each target step the modules run over the rows the step kept, so their KV-cache layers
 * hold every accepted position: depth d at row i reads token i + d, known for all rows but the
 * last d − 1, which read the proposals of the depths before (exact when those are accepted).
 * The last row of each depth is the next proposal. The work runs as a continuation of the target
 * step (its hidden states are still on the device), one small step per depth.
 */
import { TachyonError } from "../../errors.js";
import type { ModelExecutor } from "../executor.js";
import type { SequenceKv } from "../kv-cache.js";
import type { Proposal, Proposer, TargetStep } from "./proposer.js";

export class MtpProposer implements Proposer {
  readonly maxTokens: number;
  private proposals: number[] = [];
  /** Sequence length the proposals continue (-1: none). */
  private proposedAfter = -1;

  constructor(
    private readonly executor: ModelExecutor,
    private readonly seq: SequenceKv,
  ) {
    this.maxTokens = executor.config.numMtpModules;
    if (this.maxTokens === 0) {
      throw new TachyonError(
        "the model has no MTP modules (num_nextn_predict_layers); use --spec draft or --spec ngram",
        "argument",
      );
    }
  }

  observe(tokens: readonly number[], { start, kept, hidden }: TargetStep): void {
    const proposals: number[] = [];
    const tokenAt = (i: number) => (i < tokens.length ? tokens[i] : proposals[i - tokens.length]);
    // Proposals follow only a step whose last kept row is the one before the pending token.
    const frontier = start + kept === tokens.length - 1;
    let prev = hidden;
    for (let depth = 1; depth <= this.maxTokens; depth++) {
      const rows = Math.min(kept, tokens.length + proposals.length - depth - start);
      if (rows < 1) break;
      const rowTokens = Array.from({ length: rows }, (_, i) => tokenAt(start + i + depth));
      const propose = frontier && rows === kept;
      const out = this.executor.mtpStep(this.seq, depth, prev, start, rowTokens, propose);
      if (out.proposal !== null) proposals.push(out.proposal);
      prev = out.hidden;
    }
    this.proposals = proposals;
    this.proposedAfter = frontier ? tokens.length : -1;
  }

  propose(tokens: readonly number[], k: number): Proposal {
    return { tokens: tokens.length === this.proposedAfter ? this.proposals.slice(0, k) : [] };
  }
}
