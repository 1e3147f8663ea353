/**
 * The model executor: one forward step over the rows of any number of sequences. It owns the
 * backend's KV storage and the block pool, and turns "these tokens for these sequences" into the
 * positions, cache slots and block tables the forward pass needs.
 */
import type { Backend, KvStorage } from "../backends/backend.js";
import type { ModelConfig } from "../model/config.js";
import { forward, type ModelWeights } from "../model/transformer.js";
import { BlockAllocator, SequenceKv } from "./kv-cache.js";

export interface StepInput {
  seq: SequenceKv;
  tokens: readonly number[];
  /** Return logits for every row of this input, not only the last (verification, scoring). */
  allLogits?: boolean;
}

export interface KvCacheOptions {
  /** Total token slots across all sequences. */
  maxTokens: number;
  /** Longest sequence allowed (prompt + generated), at most the model's max_position_embeddings. */
  contextLength: number;
  blockSize?: number;
}

export class ModelExecutor {
  readonly kv: KvStorage;
  readonly allocator: BlockAllocator;
  readonly blockSize: number;
  readonly contextLength: number;

  constructor(
    readonly backend: Backend,
    readonly config: ModelConfig,
    private readonly weights: ModelWeights,
    cache: KvCacheOptions,
  ) {
    this.blockSize = cache.blockSize ?? 16;
    this.contextLength = Math.min(cache.contextLength, config.maxPositions);
    const numBlocks = Math.ceil(cache.maxTokens / this.blockSize);
    this.allocator = new BlockAllocator(numBlocks);
    this.kv = backend.createKvCache({
      numLayers: config.numLayers,
      numBlocks,
      blockSize: this.blockSize,
      numKvHeads: config.numKvHeads,
      headDim: config.headDim,
    });
  }

  newSequence(): SequenceKv {
    return new SequenceKv(this.allocator, this.blockSize);
  }

  /**
   * Appends each input's tokens to its sequence and returns, per input, the logits of its last row
   * ([vocab]) or of all its rows ([rows * vocab]) when allLogits is set.
   */
  step(inputs: readonly StepInput[]): Float32Array[] {
    let rows = 0;
    for (const inp of inputs) rows += inp.tokens.length;
    const tokens = new Int32Array(rows);
    const positions = new Int32Array(rows);
    const slots = new Int32Array(rows);
    const blockTables: Int32Array[] = new Array(rows);
    const logitRows: number[] = [];
    let r = 0;
    for (const { seq, tokens: toks, allLogits } of inputs) {
      seq.reserve(seq.length + toks.length);
      for (let i = 0; i < toks.length; i++, r++) {
        tokens[r] = toks[i];
        positions[r] = seq.length + i;
        slots[r] = seq.slot(seq.length + i);
        blockTables[r] = seq.blockTable;
        if (allLogits || i === toks.length - 1) logitRows.push(r);
      }
    }
    const logits = this.backend.read(
      forward(this.backend, this.weights, this.config, this.kv, {
        tokens,
        attention: { positions, slots, blockTables },
        logitRows: Int32Array.from(logitRows),
      }),
    );
    for (const inp of inputs) inp.seq.length += inp.tokens.length;

    const vocab = this.config.vocabSize;
    const out: Float32Array[] = [];
    let row = 0;
    for (const inp of inputs) {
      const n = inp.allLogits ? inp.tokens.length : 1;
      out.push(logits.slice(row * vocab, (row + n) * vocab));
      row += n;
    }
    return out;
  }
}
