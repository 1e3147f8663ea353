/**
 * The paged KV cache's bookkeeping: a pool of fixed-size blocks and, per sequence, the table of
 * blocks holding its positions. The storage itself belongs to the backend; this file only decides
 * which slot each token goes to. Batch 1 is one sequence drawing from the same pool.
 */
import { TachyonError } from "../errors.js";

export class BlockAllocator {
  private readonly free: number[];
  constructor(readonly numBlocks: number) {
    // Pop from the end: low block ids first, which keeps small runs compact.
    this.free = Array.from({ length: numBlocks }, (_, i) => numBlocks - 1 - i);
  }
  get freeBlocks(): number {
    return this.free.length;
  }
  allocate(): number {
    const block = this.free.pop();
    if (block === undefined) {
      throw new TachyonError(
        `the KV cache is full (${this.numBlocks} blocks in use); raise --max-context or shorten the request`,
        "capacity",
      );
    }
    return block;
  }
  release(blocks: Iterable<number>): void {
    for (const b of blocks) this.free.push(b);
  }
}

/** One sequence's place in the cache: its block table and how many positions are filled. */
export class SequenceKv {
  private blocks: number[] = [];
  private table = new Int32Array(0);
  /** Positions written so far (the next token goes to position `length`). */
  length = 0;

  constructor(
    private readonly allocator: BlockAllocator,
    readonly blockSize: number,
  ) {}

  /** Ensures room for positions [0, newLength), allocating blocks as needed. */
  reserve(newLength: number): void {
    const needed = Math.ceil(newLength / this.blockSize);
    if (needed <= this.blocks.length) return;
    while (this.blocks.length < needed) this.blocks.push(this.allocator.allocate());
    this.table = Int32Array.from(this.blocks);
  }

  /**
   * Forgets positions from `newLength` on (rejected speculative tokens) and returns the blocks no
   * longer needed to the pool. The forgotten slots keep stale values that later writes overwrite;
   * attention never reads past a row's own position, so they are never seen.
   */
  truncate(newLength: number): void {
    if (!Number.isInteger(newLength) || newLength < 0 || newLength > this.length) {
      throw new RangeError(`truncate: length ${newLength} is outside [0, ${this.length}]`);
    }
    this.length = newLength;
    const needed = Math.ceil(newLength / this.blockSize);
    if (needed === this.blocks.length) return;
    this.allocator.release(this.blocks.splice(needed));
    this.table = Int32Array.from(this.blocks);
  }

  /** The cache slot of a position. */
  slot(position: number): number {
    return this.blocks[Math.floor(position / this.blockSize)] * this.blockSize + (position % this.blockSize);
  }

  get blockTable(): Int32Array {
    return this.table;
  }

  /** Returns every block to the pool. */
  free(): void {
    this.allocator.release(this.blocks);
    this.blocks = [];
    this.table = new Int32Array(0);
    this.length = 0;
  }
}
