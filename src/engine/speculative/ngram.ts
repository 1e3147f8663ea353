/**
 * N-gram (prompt lookup) proposals: if the sequence's last n tokens occurred earlier, propose the
 * tokens that followed that occurrence. Needs no weights; strong wherever output repeats its
 * input (code edits, quoting, loops).
 */
import type { Proposal, Proposer } from "./proposer.js";

export class NgramProposer implements Proposer {
  constructor(
    readonly maxTokens: number,
    /** Longest suffix to look up; shorter ones are tried when it has no earlier occurrence. */
    private readonly maxN = 4,
    private readonly minN = 1,
  ) {}

  propose(tokens: readonly number[], k: number): Proposal {
    const len = tokens.length;
    for (let n = Math.min(this.maxN, len - 1); n >= this.minN; n--) {
      // The latest earlier occurrence with at least one token after it.
      for (let i = len - n - 1; i >= 0; i--) {
        let j = 0;
        while (j < n && tokens[i + j] === tokens[len - n + j]) j++;
        if (j === n) return { tokens: tokens.slice(i + n, Math.min(i + n + k, len)) };
      }
    }
    return { tokens: [] };
  }
}
