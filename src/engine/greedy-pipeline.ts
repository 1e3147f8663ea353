/**
 * Greedy decoding of one sequence with the host a step behind the device.
 *
 * Step n + 1 is enqueued, its token fed from step n's argmax on the device, before the host reads
 * step n's token. A step that waits for its token on the host leaves the GPU idle while the host
 * copies the token back, plans the next step and launches it: about 0.12 ms of a 2.2 ms step of
 * Llama-3-8B int4 on an H100 (docs/BENCHMARKS.md, session 10).
 *
 * The price is one step of work thrown away when generation stops on something the host decides
 * (an end-of-sequence token, a stop string); close() drops that step from the cache. Between
 * next() calls the step in flight holds the latest token, so the cache runs one position ahead of
 * the tokens returned: nothing else may step this sequence until close().
 */
import type { Tensor } from "../backends/backend.js";
import type { ModelExecutor } from "./executor.js";
import type { SequenceKv } from "./kv-cache.js";

/**
 * TACHYON_PIPELINE=0 waits for each token before enqueueing the next step, as before the
 * pipeline: a measurement switch (what the pipeline gains, in one run), not a mode.
 */
const serial = process.env.TACHYON_PIPELINE === "0";

export class GreedyPipeline {
  /** Logits of the step enqueued last, whose token the host has not read; null after next(false). */
  private inFlight: Tensor | null;

  /** Starts with `pending`, the sequence's latest token, not yet in its cache. */
  constructor(
    private readonly executor: ModelExecutor,
    private readonly seq: SequenceKv,
    pending: number,
  ) {
    this.inFlight = executor.enqueueGreedy(seq, pending).logits;
  }

  /**
   * The next greedy token. With `more` (the default), the step that feeds it is enqueued first;
   * without, no step follows (the caller wants no more tokens) and the pipeline is spent.
   */
  next(more = true): number {
    const logits = this.inFlight;
    if (!logits) throw new Error("GreedyPipeline.next: the pipeline was spent by next(false) or closed");
    if (!more || serial) {
      const token = this.executor.argmax(logits)[0];
      this.inFlight = more ? this.executor.enqueueGreedy(this.seq, token).logits : null;
      return token;
    }
    const { logits: following, previous } = this.executor.enqueueGreedy(this.seq, 0, logits);
    this.inFlight = following;
    return previous!();
  }

  /** Drops the step in flight from the cache: the last token returned is again the pending one. */
  close(): void {
    if (this.inFlight) this.seq.truncate(this.seq.length - 1);
    this.inFlight = null;
  }
}
