/**
 * Copies between host and device in stream order, through page-locked buffers.
 *
 * A plain upload (cuMemcpyHtoD from pageable memory) runs when it is called, not when the stream
 * gets there. The stream is non-blocking, so such an upload of one step's rows could overwrite
 * the previous step's while kernels enqueued before it still read them: prompt chunks are
 * enqueued back to back, and a pipelined decode (executor.ts) enqueues step n + 1 before step n
 * has run. Copies through these buffers wait their turn on the stream. Each buffer is reused only
 * once the copy that last used it has run (its event), so the host never writes one the GPU has
 * still to read. Downloads run on the context's copy stream, so the work after them does not wait
 * for them.
 */
import type { CudaContext } from "./context.js";
import type { DevicePtr, Handle } from "./driver.js";

interface Slot {
  host: unknown;
  view: ArrayBuffer;
  bytes: number;
  event: Handle;
  /** Copies that have used this buffer: a download's reader checks it is still the latest. */
  uses: number;
  /**
   * ctx.synchronizations when its last copy was enqueued, whose sync of the work stream means that
   * copy has run; Infinity for a download (on the copy stream): only its event says.
   */
  enqueuedAt: number;
}

/** Smallest buffer: a decode step's rows fit many times over. */
const minBytes = 1 << 16;

export class Staging {
  private readonly slots: Slot[] = [];
  private turn = 0;

  constructor(
    private readonly ctx: CudaContext,
    /** Buffers in the ring: copies that may be in flight at once. */
    private readonly count = 4,
  ) {}

  /** Copies `src` to `dst` when the stream gets there; `src` may be reused at once. */
  upload(dst: DevicePtr, src: ArrayBufferView): void {
    const bytes = src.byteLength;
    const slot = this.take(bytes);
    new Uint8Array(slot.view, 0, bytes).set(new Uint8Array(src.buffer, src.byteOffset, bytes));
    this.ctx.uploadAsync(dst, slot.host, bytes);
    this.ctx.recordEvent(slot.event);
    slot.enqueuedAt = this.ctx.synchronizations;
  }

  /**
   * Enqueues a copy of `bytes` from `src`, made when the stream gets there; returns what waits for
   * it and returns a copy of the bytes. Read it before `count` more copies reuse its buffer.
   */
  download(src: DevicePtr, bytes: number): () => Uint8Array {
    const slot = this.take(bytes);
    const use = slot.uses;
    this.ctx.downloadBeside(slot.host, src, bytes, slot.event);
    slot.enqueuedAt = Infinity;
    return () => {
      if (slot.uses !== use) throw new Error("a staged download was read after its buffer was reused");
      this.ctx.waitEvent(slot.event);
      return new Uint8Array(slot.view, 0, bytes).slice();
    };
  }

  /** The next buffer of the ring, once its last copy has run, of at least `bytes`. */
  private take(bytes: number): Slot {
    const i = this.turn;
    this.turn = (i + 1) % this.count;
    let slot = this.slots[i];
    // Most steps end with the host waiting for the stream: then an upload's wait is known to be over.
    if (slot && slot.enqueuedAt >= this.ctx.synchronizations) this.ctx.waitEvent(slot.event);
    if (!slot || slot.bytes < bytes) {
      if (slot) this.ctx.freePinned(slot.host);
      const size = Math.max(minBytes, 2 ** Math.ceil(Math.log2(bytes)));
      const { host, view } = this.ctx.pinned(size);
      const event = slot?.event ?? this.ctx.event(false);
      slot = { host, view, bytes: size, event, uses: slot?.uses ?? 0, enqueuedAt: 0 };
      this.slots[i] = slot;
    }
    slot.uses++;
    return slot;
  }
}
