/**
 * The kernel timeline (TACHYON_TIMELINE=1): what each kernel of a replayed graph costs inside it,
 * with dependent launch on, measured directly rather than by leaving kernels out.
 *
 * Kernels compiled with TIMELINE (kernels/common.cuh) record, from thread 0 of their first block,
 * when it reached griddepcontrol.wait and when it passed it. Kernels pass their waits in launch
 * order, each only once its predecessor has finished, so the time from one kernel's pass to the
 * next one's is the first kernel's cost in the step: its work after the wait, its end, and the
 * hand-over to its successor. How long the first block sat at the wait shows whether dependent
 * launch had it resident before its predecessor finished. The host traces the same launches
 * (CudaContext), which name the records. A measurement tool, not a mode: the atomic and the
 * stores of one thread per kernel cost a little.
 */
import { CudaError, type DevicePtr, type Handle } from "./driver.js";
import type { CudaContext, TracedLaunch } from "./context.js";

/** Records the device buffer holds; later ones are counted but dropped. */
const capacity = 1 << 16;

export interface TimelineEvent extends TracedLaunch {
  /** Nanoseconds from the first record: when the first block reached, and when it passed, its wait. */
  arriveNs: number;
  leaveNs: number;
}

export class Timeline {
  private readonly buffer: DevicePtr;
  private readonly bytes = 8 * (1 + 3 * capacity);

  constructor(private readonly ctx: CudaContext) {
    this.buffer = ctx.alloc(this.bytes, "the kernel timeline");
    ctx.upload(this.buffer, new BigUint64Array(1));
  }

  /** The define that compiles the recording in. */
  readonly defines = { TIMELINE: capacity };

  /** Points a module's kernels at the buffer. */
  attach(module: Handle): void {
    this.ctx.setGlobalPointer(module, "timeline", this.buffer);
  }

  /** Forgets everything recorded and traced so far. */
  start(): void {
    this.ctx.synchronize();
    this.ctx.upload(this.buffer, new BigUint64Array(1));
    this.ctx.startTrace();
  }

  /** The launches since start(), each with its record. */
  stop(): TimelineEvent[] {
    const count = new BigUint64Array(1);
    this.ctx.download(this.buffer, count);
    const n = Number(count[0]);
    const launches = this.ctx.takeTrace();
    if (n > capacity)
      throw new CudaError(`the timeline holds ${capacity} kernels and ${n} ran; trace fewer steps`);
    const raw = new BigUint64Array(1 + 3 * n);
    this.ctx.download(this.buffer, raw);
    if (n !== launches.length) {
      throw new CudaError(
        `the timeline has ${n} kernel records for ${launches.length} launches: a kernel ran that does not ` +
          `call pdl_wait() once in its first block, or one was launched outside CudaContext.launch`,
      );
    }
    const t0 = n > 0 ? raw[1] : 0n;
    return launches.map((l, i) => {
      const blocks = Number(raw[3 + 3 * i]);
      if (blocks !== l.blocks)
        throw new CudaError(`timeline record ${i} (${l.what}) has ${blocks} blocks, its launch ${l.blocks}`);
      return { ...l, arriveNs: Number(raw[1 + 3 * i] - t0), leaveNs: Number(raw[2 + 3 * i] - t0) };
    });
  }
}

/** One kernel of the step, as summarise() reports it. */
export interface TimelineRow {
  /** The kernel, named with the one before it (q/k/v, o and down are all `qgemv`). */
  kernel: string;
  /** Launches per replay. */
  perRun: number;
  /** Mean microseconds from its pass to the next kernel's pass, and the sum over a replay. */
  meanUs: number;
  runUs: number;
  /** Mean microseconds its first block sat at the wait. */
  waitedUs: number;
}

/**
 * Cost per kernel of graph replays: rows sorted by their share of a replay, and a replay's total
 * (the last kernel of each replay has no successor inside it, so it is left out). Where replays
 * follow each other, also the step's period (one replay's first pass to the next one's), what
 * lies between them (the last kernel, whatever runs outside the graphs, the graph launch), and
 * of that the last kernel: its pass to the next recorded pass, outside the graph or not.
 */
export function summarise(events: readonly TimelineEvent[]): {
  rows: TimelineRow[];
  runUs: number;
  runs: number;
  periodUs: number | null;
  betweenUs: number | null;
  lastUs: number | null;
} {
  const byKernel = new Map<string, { n: number; us: number; waited: number }>();
  const runs = new Set<number>();
  const firstPass = new Map<number, number>();
  const lastPass = new Map<number, number>();
  const afterLast = new Map<number, number>(); // the pass recorded next after a replay's last kernel
  events.forEach((e, i) => {
    const next = events[i + 1];
    if (e.run >= 0) {
      if (!firstPass.has(e.run)) firstPass.set(e.run, e.leaveNs);
      lastPass.set(e.run, e.leaveNs);
      if (next && next.run !== e.run) afterLast.set(e.run, next.leaveNs);
    }
    if (e.run < 0 || next?.run !== e.run) return;
    runs.add(e.run);
    const prev = events[i - 1];
    const kernel =
      prev?.run === e.run ? `${base(e.what)} after ${base(prev.what)}` : `${base(e.what)} (first)`;
    const k = byKernel.get(kernel) ?? { n: 0, us: 0, waited: 0 };
    k.n++;
    k.us += (next.leaveNs - e.leaveNs) / 1000;
    k.waited += (e.leaveNs - e.arriveNs) / 1000;
    byKernel.set(kernel, k);
  });
  const r = Math.max(1, runs.size);
  const rows = [...byKernel].map(([kernel, k]) => ({
    kernel,
    perRun: k.n / r,
    meanUs: k.us / k.n,
    runUs: k.us / r,
    waitedUs: k.waited / k.n,
  }));
  rows.sort((a, b) => b.runUs - a.runUs);
  // Consecutive replays (run and run + 1 both recorded).
  const follow = [...firstPass.keys()].filter((run) => firstPass.has(run + 1));
  const mean = (f: (run: number) => number) =>
    follow.length ? follow.reduce((t, run) => t + f(run), 0) / follow.length / 1000 : null;
  return {
    rows,
    runUs: rows.reduce((t, x) => t + x.runUs, 0),
    runs: runs.size,
    periodUs: mean((run) => firstPass.get(run + 1)! - firstPass.get(run)!),
    betweenUs: mean((run) => firstPass.get(run + 1)! - lastPass.get(run)!),
    lastUs: mean((run) => afterLast.get(run)! - lastPass.get(run)!),
  };
}

/** A kernel's name without its row-count suffix. */
function base(what: string): string {
  return what.replace(/_m\d+$/, "");
}
