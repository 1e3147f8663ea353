/**
 * Proposals from a smaller draft model with the same tokenizer, run greedily with its own
 * executor and KV cache. Its cache follows the sequence: before each proposal it keeps the
 * longest prefix it shares with the sequence (rejected guesses drop out) and feeds the rest.
 * Every sequence speculating with the same draft model draws from its executor's block pool.
 */
import { TachyonError } from "../../errors.js";
import type { Tokenizer } from "../../tokenizer/tokenizer.js";
import { prefillChunk, type ModelExecutor } from "../executor.js";
import type { SequenceKv } from "../kv-cache.js";
import type { Proposal, Proposer } from "./proposer.js";

/** A loaded draft model: what the proposer runs and the tokenizer it must share with the target. */
export interface DraftModel {
  executor: ModelExecutor;
  tokenizer: Tokenizer;
}

const checked = new WeakMap<Tokenizer, WeakSet<Tokenizer>>();

/** Throws unless both tokenizers give every id the same token (the draft's ids mean the target's). */
export function assertSameTokenizer(target: Tokenizer, draft: Tokenizer): void {
  if (target === draft || checked.get(target)?.has(draft)) return;
  const size = Math.max(target.vocabSize, draft.vocabSize);
  for (let id = 0; id < size; id++) {
    const a = target.idToToken(id);
    const b = draft.idToToken(id);
    if (a !== b) {
      throw new TachyonError(
        `the draft model's tokenizer differs from the target's at id ${id} ` +
          `(${JSON.stringify(b)} vs ${JSON.stringify(a)}); a draft model must use the same tokenizer`,
        "argument",
      );
    }
  }
  if (!checked.has(target)) checked.set(target, new WeakSet());
  checked.get(target)!.add(draft);
}

export class DraftModelProposer implements Proposer {
  private readonly seq: SequenceKv;
  /** The token at each position of the draft's cache. */
  private cached: number[] = [];

  constructor(
    private readonly draft: ModelExecutor,
    readonly maxTokens: number,
  ) {
    this.seq = draft.newSequence();
  }

  propose(tokens: readonly number[], k: number): Proposal {
    // Positions up to tokens.length + k - 2 are written (the last guess is never fed).
    k = Math.min(k, this.draft.contextLength - tokens.length + 1);
    if (k < 1) return { tokens: [] };
    let keep = 0;
    const limit = Math.min(this.cached.length, tokens.length - 1);
    while (keep < limit && this.cached[keep] === tokens[keep]) keep++;
    this.seq.truncate(keep);
    this.cached.length = keep;
    // Sequences batched by a server share the draft's cache: propose only what it can hold now.
    const pool = this.draft.allocator;
    while (k > 0 && this.seq.blocksNeeded(tokens.length + k - 1) > pool.freeBlocks) k--;
    if (k < 1) return { tokens: [] };

    const out: number[] = [];
    let feed = tokens.slice(keep);
    for (;;) {
      let next = 0;
      for (let i = 0; i < feed.length; i += prefillChunk) {
        [next] = this.draft.stepGreedy([{ seq: this.seq, tokens: feed.slice(i, i + prefillChunk) }]);
      }
      this.cached.push(...feed);
      out.push(next);
      if (out.length === k) return { tokens: out };
      feed = [next];
    }
  }

  close(): void {
    this.seq.free();
    this.cached = [];
  }
}
