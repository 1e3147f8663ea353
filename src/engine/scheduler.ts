/**
 * Continuous batching: many generations share each forward step. Requests join and leave between
 * steps. Each step takes the decode row of every running sequence first, then fills what is left
 * of a token budget with chunks of prompts (chunked prefill), so a long prompt never stalls the
 * streams already running. KV blocks are taken as sequences grow; when none are left, the
 * youngest running sequence is preempted (its blocks freed, to be recomputed later, mostly from
 * the prefix cache) so the older ones can finish.
 *
 * A sequence whose request asked for speculation adds its proposed tokens after its decode row,
 * verified in the same step (src/engine/speculative/decoder.ts holds the per-sequence logic, the
 * one-sequence loop's too). Proposals come last, from the budget and the free blocks the rows
 * above left: a guess never delays a prompt or another stream's decode row, and never preempts.
 */
import { TachyonError } from "../errors.js";
import type { Tokenizer } from "../tokenizer/tokenizer.js";
import type { ChoiceResult, ModelExecutor } from "./executor.js";
import type { GeneratedToken, GenerateOptions, GenerationResult } from "./generate.js";
import { Sequence } from "./sequence.js";
import { generationSettings, type GenerationSettings } from "./sequence-output.js";
import type { PlannedStep } from "./speculative/decoder.js";

export interface SchedulerOptions {
  /** Most tokens (rows) one step computes: decode rows first, prompt chunks, then proposals fill the rest. */
  maxBatchTokens?: number;
  /** Most sequences running at once. */
  maxRunning?: number;
  /** Most sequences waiting to start; beyond it submit refuses with a "busy" TachyonError. */
  maxWaiting?: number;
}

export interface SchedulerStats {
  waiting: number;
  running: number;
  kvBlocks: number;
  kvBlocksUsed: number;
  /** Blocks holding a shareable prompt prefix (in use or kept for reuse). */
  kvBlocksCached: number;
  blockSize: number;
  /** Tokens run through the model (prompt chunks and decode rows). */
  computedTokens: number;
  /** Prompt tokens whose KV came from the prefix cache instead. */
  cachedTokens: number;
  generatedTokens: number;
  preemptions: number;
  /** Tokens proposed by speculating sequences, and how many of them the model accepted. */
  proposedTokens: number;
  acceptedTokens: number;
}

/** A sequence's rows in the step being scheduled: its tokens up to `to`, then any proposals. */
interface Scheduled {
  seq: Sequence;
  to: number;
}

/** A sequence's part of the step as planned: its input, proposals included, and its choice. */
type Batched = { seq: Sequence } & PlannedStep;

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class Scheduler {
  private readonly waiting: Sequence[] = [];
  private readonly running: Sequence[] = [];
  private readonly maxBatchTokens: number;
  private readonly maxRunning: number;
  private readonly maxWaiting: number;
  private loop: Promise<void> | null = null;
  private closed = false;
  private computedTokens = 0;
  private cachedTokens = 0;
  private generatedTokens = 0;
  private preemptions = 0;
  private proposedTokens = 0;
  private acceptedTokens = 0;
  /** Calls to submit so far. */
  private submissions = 0;

  constructor(
    private readonly executor: ModelExecutor,
    private readonly tokenizer: Tokenizer,
    options: SchedulerOptions = {},
  ) {
    this.maxBatchTokens = options.maxBatchTokens ?? 256;
    this.maxRunning = options.maxRunning ?? 64;
    this.maxWaiting = options.maxWaiting ?? 256;
  }

  /**
   * Queues `n` generations from one prompt (they share its cached prefix) and returns their
   * streams. Throws a TachyonError: "argument" for a request that can never run, "busy" when the
   * queue is full, "unavailable" after close().
   */
  submit(
    promptIds: readonly number[],
    options: GenerateOptions = {},
    n = 1,
  ): AsyncGenerator<GeneratedToken, GenerationResult>[] {
    this.submissions++;
    if (this.closed) throw new TachyonError("the server is shutting down", "unavailable");
    const settings = generationSettings(this.executor, promptIds, options);
    this.checkCapacity(promptIds.length, settings.maxTokens);
    if (options.speculation?.method === "custom" && n > 1) {
      throw new TachyonError("a custom proposer serves one sequence: ask for one choice (n = 1)", "argument");
    }
    if (this.waiting.length + n > this.maxWaiting) {
      throw new TachyonError(
        `the queue is full (${this.waiting.length} requests waiting); retry shortly`,
        "busy",
      );
    }
    let leader: Sequence | null = null;
    const streams: AsyncGenerator<GeneratedToken, GenerationResult>[] = [];
    for (let i = 0; i < n; i++) {
      const seq: Sequence = new Sequence(
        this.executor,
        this.tokenizer,
        promptIds,
        siblingSettings(settings, i),
        options.speculation,
        options.signal,
        leader,
      );
      leader ??= seq;
      this.waiting.push(seq);
      streams.push(seq.stream());
    }
    // The loop starts on the next turn, so requests arriving together share its first step.
    this.loop ??= yieldToEventLoop()
      .then(() => this.run())
      .finally(() => (this.loop = null));
    return streams;
  }

  stats(): SchedulerStats {
    const alloc = this.executor.allocator;
    return {
      waiting: this.waiting.length,
      running: this.running.length,
      kvBlocks: alloc.numBlocks,
      kvBlocksUsed: alloc.numBlocks - alloc.freeBlocks,
      kvBlocksCached: alloc.cachedBlocks,
      blockSize: this.executor.blockSize,
      computedTokens: this.computedTokens,
      cachedTokens: this.cachedTokens,
      generatedTokens: this.generatedTokens,
      preemptions: this.preemptions,
      proposedTokens: this.proposedTokens,
      acceptedTokens: this.acceptedTokens,
    };
  }

  /** Refuses new requests; what is queued or running goes on. */
  close(): void {
    this.closed = true;
  }

  /** Ends every queued and running generation now (finish reason "abort"), freeing their blocks. */
  abortAll(): void {
    for (const seq of [...this.running, ...this.waiting]) seq.end("abort");
    this.running.length = this.waiting.length = 0;
  }

  /** Resolves when nothing is queued or running. */
  async idle(): Promise<void> {
    while (this.loop) await this.loop;
  }

  /** A request that needs more KV blocks than the whole cache holds would wait forever: refuse it. */
  private checkCapacity(promptTokens: number, maxTokens: number): void {
    const bs = this.executor.blockSize;
    const capacity = this.executor.allocator.numBlocks * bs;
    if (Math.ceil((promptTokens + maxTokens) / bs) * bs > capacity) {
      throw new TachyonError(
        `the prompt (${promptTokens} tokens) plus max_tokens (${maxTokens}) needs more KV cache than the ` +
          `server holds (${capacity} tokens); lower max_tokens or shorten the prompt`,
        "argument",
      );
    }
  }

  private async run(): Promise<void> {
    while (this.running.length > 0 || this.waiting.length > 0) {
      const progressed = this.step();
      // Between steps, requests arrive, streams are written and disconnects are noticed. The
      // server takes in about one request per turn of the event loop, so keep turning while
      // requests keep arriving: a burst then joins the next step instead of one per step.
      let submissions: number;
      do {
        submissions = this.submissions;
        await yieldToEventLoop();
      } while (this.submissions !== submissions);
      if (!progressed) await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }

  /** One batched forward step; returns false when nothing could be scheduled. */
  private step(): boolean {
    this.dropCancelled();
    const batch = this.finalBatch(this.schedule());
    if (batch.length === 0) return false;
    let results: ChoiceResult[];
    try {
      results = this.executor.stepChoosing(
        batch.map((e) => e.input),
        batch.map((e) => e.choice),
      );
    } catch (error) {
      // A step that fails ends the generations in it, never the scheduler.
      for (const { seq } of batch) this.retire(seq, () => seq.fail(error));
      return true;
    }
    batch.forEach(({ seq, input }, i) => {
      this.computedTokens += input.tokens.length;
      try {
        const outcome = seq.advance(results[i]);
        this.generatedTokens += outcome.generated;
        this.proposedTokens += outcome.proposed;
        this.acceptedTokens += outcome.accepted;
      } catch (error) {
        seq.fail(error); // e.g. NaN logits: this sequence only
      }
      if (seq.finished) this.retire(seq);
    });
    return true;
  }

  /** This step's rows: every decode row, then prompt chunks, within the token budget and the free blocks. */
  private schedule(): { rows: Scheduled[]; budget: number } {
    const rows: Scheduled[] = [];
    let budget = this.maxBatchTokens;
    const preempt = (victim: Sequence): void => {
      const at = rows.findIndex((e) => e.seq === victim);
      if (at >= 0) budget += rows.splice(at, 1)[0].to - victim.kv.length;
      this.running.splice(this.running.indexOf(victim), 1);
      victim.preempt();
      this.waiting.unshift(victim);
      this.preemptions++;
    };
    const take = (seq: Sequence): void => {
      const from = seq.kv.length;
      const to = from + Math.min(seq.uncomputed, budget);
      while (seq.kv.blocksNeeded(to) > this.executor.allocator.freeBlocks) {
        const victim = this.running.at(-1)!;
        preempt(victim);
        if (victim === seq) return;
      }
      seq.kv.reserve(to);
      rows.push({ seq, to });
      budget -= to - from;
    };

    // Decode rows first: a running stream never waits behind a prompt.
    for (const seq of [...this.running]) {
      if (budget > 0 && seq.uncomputed === 1 && this.running.includes(seq)) take(seq);
    }
    for (const seq of [...this.running]) {
      if (budget > 0 && seq.uncomputed > 1 && this.running.includes(seq)) take(seq);
    }
    // Then new sequences, first come first served, while the budget and the blocks last.
    for (const seq of [...this.waiting]) {
      if (budget === 0 || this.running.length >= this.maxRunning) break;
      if (seq.leader && !seq.leader.promptComputed && !seq.leader.finished) continue;
      const cached = seq.kv.reuseCachedPrefix(seq.tokens);
      const to = seq.kv.length + Math.min(seq.uncomputed, budget);
      if (seq.kv.blocksNeeded(to) > this.executor.allocator.freeBlocks) {
        seq.kv.free(); // a waiting sequence holds no blocks, so running ones can always grow
        break;
      }
      this.cachedTokens += cached;
      this.waiting.splice(this.waiting.indexOf(seq), 1);
      this.running.push(seq);
      take(seq);
    }
    return { rows, budget };
  }

  /**
   * The final batch: each scheduled sequence's input and choice, proposals included. Speculating
   * sequences share the budget left evenly and propose only into free blocks. A sequence whose
   * proposer fails ends with the error.
   */
  private finalBatch({ rows, budget }: { rows: Scheduled[]; budget: number }): Batched[] {
    const alloc = this.executor.allocator;
    const wanted = rows.map(({ seq }) => seq.wantedProposals);
    let speculating = wanted.filter((k) => k > 0).length;
    const batch: Batched[] = [];
    rows.forEach(({ seq, to }, i) => {
      let k = 0;
      if (wanted[i] > 0) {
        // An even share of what is left among the speculating sequences still to come.
        k = Math.min(wanted[i], Math.floor(budget / speculating--));
        while (k > 0 && seq.kv.blocksNeeded(to + k) > alloc.freeBlocks) k--;
      }
      try {
        const planned = seq.plan(to, k);
        const proposed = planned.input.tokens.length - (to - seq.kv.length);
        seq.kv.reserve(to + proposed);
        budget -= proposed;
        batch.push({ seq, ...planned });
      } catch (error) {
        this.retire(seq, () => seq.fail(error));
      }
    });
    return batch;
  }

  private dropCancelled(): void {
    for (const seq of [...this.running, ...this.waiting]) {
      if (seq.cancelled) this.retire(seq, () => seq.end("abort"));
    }
  }

  /** Takes a sequence out of the queues; `finish` ends its stream if it has not ended yet. */
  private retire(seq: Sequence, finish?: () => void): void {
    finish?.();
    for (const list of [this.running, this.waiting]) {
      const i = list.indexOf(seq);
      if (i >= 0) list.splice(i, 1);
    }
  }
}

/** Sibling i of an n > 1 request draws from its own seeded stream, so seeded choices differ. */
function siblingSettings(settings: GenerationSettings, i: number): GenerationSettings {
  const seed = settings.params.seed;
  if (i === 0 || seed === undefined) return settings;
  const sibling = seed + i <= Number.MAX_SAFE_INTEGER ? seed + i : seed - i;
  return { ...settings, params: { ...settings.params, seed: sibling } };
}
