/**
 * The paged KV cache's bookkeeping: a pool of fixed-size blocks and, per sequence, the table of
 * blocks holding its positions. The storage itself belongs to the backend; this file only decides
 * which slot each token goes to. Batch 1 is one sequence drawing from the same pool.
 *
 * Prefix caching: a full block is named by a hash of its tokens and of every token before it, so
 * sequences whose first k·blockSize tokens are the same share k blocks (their keys and values are
 * the same) and compute them once. Blocks are reference counted; a named block that no sequence
 * uses stays cached until a fresh block is needed, least recently used first.
 */
import { createHash } from "node:crypto";
import { TachyonError } from "../errors.js";

export class BlockAllocator {
  /** Unused blocks that hold nothing worth keeping. */
  private readonly free: number[];
  private readonly refs: Int32Array;
  private readonly names: (string | undefined)[];
  private readonly byName = new Map<string, number>();
  /** Named blocks no sequence uses, least recently used first (a Set keeps insertion order). */
  private readonly evictable = new Set<number>();

  constructor(readonly numBlocks: number) {
    // Pop from the end: low block ids first, which keeps small runs compact.
    this.free = Array.from({ length: numBlocks }, (_, i) => numBlocks - 1 - i);
    this.refs = new Int32Array(numBlocks);
    this.names = new Array<string | undefined>(numBlocks);
  }

  /** Blocks a sequence can get now: the unused ones and the cached ones nobody uses. */
  get freeBlocks(): number {
    return this.free.length + this.evictable.size;
  }

  /** Blocks holding a named (shareable) prefix, used or not. */
  get cachedBlocks(): number {
    return this.byName.size;
  }

  allocate(): number {
    let block = this.free.pop();
    if (block === undefined) {
      const oldest = this.evictable.values().next();
      if (oldest.done) {
        throw new TachyonError(
          `the KV cache is full (${this.numBlocks} blocks in use); raise --max-context or shorten the request`,
          "capacity",
        );
      }
      block = oldest.value;
      this.evictable.delete(block);
      this.byName.delete(this.names[block]!);
      this.names[block] = undefined;
    }
    this.refs[block] = 1;
    return block;
  }

  release(blocks: Iterable<number>): void {
    for (const b of blocks) {
      if (this.refs[b] <= 0) throw new Error(`KV block ${b} released more often than it was taken`);
      if (--this.refs[b] > 0) continue;
      if (this.names[b] === undefined) this.free.push(b);
      else this.evictable.add(b);
    }
  }

  /** The block cached under `name`, now used by one more sequence; undefined when none is. */
  acquireCached(name: string): number | undefined {
    const block = this.byName.get(name);
    if (block === undefined) return undefined;
    if (this.refs[block]++ === 0) this.evictable.delete(block);
    return block;
  }

  /** Takes a block's name back (its content is about to change). */
  unpublish(block: number): void {
    const name = this.names[block];
    if (name === undefined) return;
    if (this.byName.get(name) === block) this.byName.delete(name);
    this.names[block] = undefined;
  }

  /** Names a full block so later sequences with the same prefix can share it (the first one named wins). */
  publish(block: number, name: string): void {
    if (this.names[block] !== undefined || this.byName.has(name)) return;
    this.names[block] = name;
    this.byName.set(name, block);
  }
}

/** A full block's name: its tokens and, through the previous block's name, everything before them. */
function blockName(previous: string, tokens: readonly number[]): string {
  return createHash("sha256")
    .update(previous)
    .update(new Uint8Array(Int32Array.from(tokens).buffer))
    .digest("base64");
}

/** One sequence's place in the cache: its block table and how many positions are filled. */
export class SequenceKv {
  private blocks: number[] = [];
  private table = new Int32Array(0);
  /** Names of the leading full blocks, as far as they have been named. */
  private names: string[] = [];
  /** Positions written so far (the next token goes to position `length`). */
  length = 0;

  constructor(
    private readonly allocator: BlockAllocator,
    readonly blockSize: number,
    /**
     * Names the family of sequences whose cached blocks this one may share: blocks are shared
     * only within a family, e.g. those whose MTP cache layers are filled.
     */
    private readonly prefixFamily = "",
  ) {}

  /** Ensures room for positions [0, newLength), allocating blocks as needed. */
  reserve(newLength: number): void {
    const needed = Math.ceil(newLength / this.blockSize);
    if (needed <= this.blocks.length) return;
    while (this.blocks.length < needed) this.blocks.push(this.allocator.allocate());
    this.table = Int32Array.from(this.blocks);
  }

  /** Blocks that reserve(newLength) would have to allocate. */
  blocksNeeded(newLength: number): number {
    return Math.max(0, Math.ceil(newLength / this.blockSize) - this.blocks.length);
  }

  /**
   * Starts an empty sequence on the cached blocks of the longest cached prefix of `tokens`, always
   * leaving the last token to compute (its logits choose the next token). Returns the number of
   * positions that came from the cache.
   */
  reuseCachedPrefix(tokens: readonly number[]): number {
    if (this.blocks.length > 0) throw new Error("reuseCachedPrefix needs an empty sequence");
    const bs = this.blockSize;
    for (let i = 0; (i + 1) * bs < tokens.length; i++) {
      const name = blockName(this.names.at(-1) ?? this.prefixFamily, tokens.slice(i * bs, (i + 1) * bs));
      const block = this.allocator.acquireCached(name);
      if (block === undefined) break;
      this.blocks.push(block);
      this.names.push(name);
    }
    this.table = Int32Array.from(this.blocks);
    this.length = this.blocks.length * bs;
    return this.length;
  }

  /**
   * Names the blocks filled so far (positions below `length`) so later sequences starting with the
   * same tokens can reuse them. `tokens` starts with this sequence's tokens.
   */
  publishFullBlocks(tokens: readonly number[]): void {
    const bs = this.blockSize;
    const full = Math.floor(this.length / bs);
    for (let i = this.names.length; i < full; i++) {
      const name = blockName(this.names.at(-1) ?? this.prefixFamily, tokens.slice(i * bs, (i + 1) * bs));
      this.allocator.publish(this.blocks[i], name);
      this.names.push(name);
    }
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
    // Named blocks cut into or dropped no longer hold what their names say once rewritten.
    const keptNames = Math.floor(newLength / this.blockSize);
    for (let i = keptNames; i < this.names.length; i++) this.allocator.unpublish(this.blocks[i]);
    this.names.length = Math.min(this.names.length, keptNames);
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

  /** Returns every block to the pool; the last blocks go first, so a cached prefix outlives its tail. */
  free(): void {
    this.allocator.release(this.blocks.reverse());
    this.blocks = [];
    this.names = [];
    this.table = new Int32Array(0);
    this.length = 0;
  }
}
