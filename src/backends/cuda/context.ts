/**
 * One GPU, one context, one stream for the work (and one beside it for copies back to the host):
 * device memory, kernel modules, launches, CUDA graphs and timing events, in the shapes the CUDA
 * backend needs. Every call is checked (driver.ts).
 */
import koffi from "koffi";
import { CudaError, type DeviceInfo, type DevicePtr, type Driver, type Handle } from "./driver.js";

/** A kernel argument: a device pointer, a 32-bit int or a 32-bit float. */
export type KernelArg =
  { ptr: DevicePtr } | { u64: number } | { i32: number } | { f32: number } | { bytes: Uint8Array };

const MAX_ARGS = 32;
/** Bytes of argument values one launch may pass (structs passed by value included). */
const ARG_BYTES = 1024;
const CU_STREAM_NON_BLOCKING = 1;
const CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION = 4;
const CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6;
/** CUlaunchConfig (56 bytes) followed by up to two CUlaunchAttributes (72 bytes each). */
const LAUNCH_CONFIG_BYTES = 56 + 2 * 72;
const CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1;
const CU_MEMHOSTALLOC_PORTABLE = 1;
const CU_EVENT_DISABLE_TIMING = 2;
const CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
/** Dynamic shared memory any kernel may take without opting in. */
const DEFAULT_SHARED_BYTES = 48 * 1024;

/**
 * Kernels never launched, by name without the row-count suffix (TACHYON_SKIP=rmsnorm,qgate_up): a
 * measurement tool, not a mode. Results are garbage, but the step's time without those kernels is
 * what they cost inside the captured graph (scripts/gpu-skip.sh).
 */
const skipped = new Set((process.env.TACHYON_SKIP ?? "").split(",").filter(Boolean));

/** Whether launches are traced for the kernel timeline (TACHYON_TIMELINE=1, timeline.ts). */
export const tracing = Boolean(process.env.TACHYON_TIMELINE);

/** A traced kernel launch: its name, block count, and the graph replay it ran in (-1: none). */
export interface TracedLaunch {
  what: string;
  blocks: number;
  run: number;
}

export class CudaContext {
  readonly info: DeviceInfo;
  readonly stream: Handle;
  /**
   * Where copies back to the host wait for their data (downloadBeside): the work stream goes on
   * meanwhile. A copy on the work stream between two steps held the next step back by about 10 µs
   * on an H100 (docs/BENCHMARKS.md, session 20).
   */
  private readonly copyStream: Handle;
  /**
   * The point of the work stream that copyStream waits for: recorded anew for each copy (a wait
   * holds on to the record made before it, so one event serves every copy).
   */
  private readonly copyMark: Handle;
  /** Bytes this context holds in device memory. */
  allocatedBytes = 0;
  /** Times the host waited for the whole stream: work enqueued before the latest one has run. */
  synchronizations = 0;
  // Launch arguments are written into one native block, each value at its own 8-byte-aligned
  // offset, followed by the kernelParams array of their addresses; the driver copies both at
  // launch, so the block is reused.
  private readonly argBlock: unknown;
  private readonly argView: DataView;
  private readonly argBase: bigint;
  /**
   * Programmatic dependent launch (compute capability 9.0+): each kernel may start while its
   * predecessor finishes; kernels wait (griddepcontrol.wait) before reading earlier results.
   */
  readonly dependentLaunch: boolean;
  // While tracing: the captured kernels of each graph, and between startTrace() and takeTrace()
  // the launches in order (a replay adds the kernels its graph captured); nothing is kept
  // outside such a window, so a long-running server with tracing on does not grow.
  private traced: TracedLaunch[] | null = null;
  private captured: TracedLaunch[] | null = null;
  private readonly graphLaunches = new Map<Handle, TracedLaunch[]>();
  private replays = 0;
  /** Dynamic shared memory each kernel was let use beyond DEFAULT_SHARED_BYTES. */
  private readonly sharedAllowed = new Map<Handle, number>();

  constructor(
    readonly driver: Driver,
    readonly device = 0,
  ) {
    this.info = driver.deviceInfo(device);
    const ctx = [null] as unknown[];
    driver.call("cuDevicePrimaryCtxRetain", [ctx, device]);
    driver.call("cuCtxSetCurrent", [ctx[0]]);
    const stream = [null] as unknown[];
    driver.call("cuStreamCreate", [stream, CU_STREAM_NON_BLOCKING]);
    this.stream = stream[0];
    driver.call("cuStreamCreate", [stream, CU_STREAM_NON_BLOCKING]);
    this.copyStream = stream[0];
    this.copyMark = this.event(false);
    const blockBytes = ARG_BYTES + 8 * MAX_ARGS + LAUNCH_CONFIG_BYTES;
    this.argBlock = koffi.alloc("uint8_t", blockBytes);
    this.argView = new DataView(koffi.view(this.argBlock, blockBytes));
    this.argBase = koffi.address(this.argBlock);
    this.dependentLaunch = this.info.computeCapability[0] >= 9 && process.env.TACHYON_PDL !== "0";
    // The launch config's fixed parts: the stream, then the attributes (dependent launch first).
    const c = ARG_BYTES + 8 * MAX_ARGS;
    this.argView.setBigUint64(c + 32, koffi.address(this.stream), true);
    this.argView.setBigUint64(c + 40, this.argBase + BigInt(c + 56), true);
    if (this.dependentLaunch) {
      this.argView.setUint32(c + 56, CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION, true);
      this.argView.setInt32(c + 64, 1, true);
    }
  }

  memInfo(): { free: number; total: number } {
    const free = [0];
    const total = [0];
    this.driver.call("cuMemGetInfo_v2", [free, total]);
    return { free: Number(free[0]), total: Number(total[0]) };
  }

  /** Device memory; `what` names the purpose in the out-of-memory message. */
  alloc(bytes: number, what: string): DevicePtr {
    const out = [0];
    try {
      this.driver.call("cuMemAlloc_v2", [out, Math.max(bytes, 256)]);
    } catch (e) {
      const { free } = this.memInfo();
      throw new CudaError(
        `${(e as Error).message} while allocating ${what} (need ${gib(bytes)}, ${gib(free)} free of ` +
          `${gib(this.info.totalMemory)}); use a smaller model, --max-context, or --device cpu`,
      );
    }
    this.allocatedBytes += bytes;
    return Number(out[0]);
  }

  free(ptr: DevicePtr, bytes = 0): void {
    this.driver.call("cuMemFree_v2", [ptr]);
    this.allocatedBytes -= bytes;
  }

  upload(dst: DevicePtr, src: ArrayBufferView): void {
    this.driver.call("cuMemcpyHtoD_v2", [dst, src, src.byteLength]);
  }

  download(src: DevicePtr, dst: ArrayBufferView): void {
    this.synchronize();
    this.driver.call("cuMemcpyDtoH_v2", [dst, src, dst.byteLength]);
  }

  /** Page-locked host memory, which copies in stream order need (staging.ts). */
  pinned(bytes: number): { host: unknown; view: ArrayBuffer } {
    const p = [null] as unknown[];
    this.driver.call("cuMemHostAlloc", [p, bytes, CU_MEMHOSTALLOC_PORTABLE]);
    return { host: p[0], view: koffi.view(p[0], bytes) };
  }

  freePinned(host: unknown): void {
    this.driver.call("cuMemFreeHost", [host]);
  }

  /** Copies page-locked `host` to `dst` when the stream gets there. */
  uploadAsync(dst: DevicePtr, host: unknown, bytes: number): void {
    this.driver.call("cuMemcpyHtoDAsync_v2", [dst, host, bytes, this.stream]);
  }

  /**
   * Copies `src` to page-locked `host` once the work stream has passed this point, on the copy
   * stream, and marks `done` there when the copy has run. Later work does not wait for the copy:
   * it must not overwrite `src` before `done` (a step's rows are rewritten only by the next
   * step's upload or arg-max, after the host has read the token this copies).
   */
  downloadBeside(host: unknown, src: DevicePtr, bytes: number, done: Handle): void {
    this.driver.call("cuEventRecord", [this.copyMark, this.stream]);
    this.driver.call("cuStreamWaitEvent", [this.copyStream, this.copyMark, 0]);
    this.driver.call("cuMemcpyDtoHAsync_v2", [host, src, bytes, this.copyStream]);
    this.driver.call("cuEventRecord", [done, this.copyStream]);
  }

  copyAsync(dst: DevicePtr, src: DevicePtr, bytes: number): void {
    this.driver.call("cuMemcpyDtoDAsync_v2", [dst, src, bytes, this.stream]);
  }

  fill32(dst: DevicePtr, value: number, count: number): void {
    this.driver.call("cuMemsetD32Async", [dst, value >>> 0, count, this.stream]);
  }

  loadModule(image: Buffer, what: string): Handle {
    const m = [null] as unknown[];
    this.driver.call("cuModuleLoadData", [m, image], `loading kernels ${what}`);
    return m[0];
  }

  /** Sets the pointer-sized global `name` of `module` to `value`. */
  setGlobalPointer(module: Handle, name: string, value: DevicePtr): void {
    const at = [0];
    const bytes = [0];
    this.driver.call("cuModuleGetGlobal_v2", [at, bytes, module, name]);
    this.upload(Number(at[0]), new BigUint64Array([BigInt(value)]));
  }

  /** Starts keeping the launches (see `tracing`). */
  startTrace(): void {
    this.traced = [];
  }

  /** The launches since startTrace(); stops keeping them. */
  takeTrace(): TracedLaunch[] {
    const t = this.traced ?? [];
    this.traced = null;
    return t;
  }

  /** The kernel `name` in `module`, or null if the module has none. */
  findFunction(module: Handle, name: string): Handle | null {
    const f = [null] as unknown[];
    return this.driver.tryCall("cuModuleGetFunction", [f, module, name]) ? f[0] : null;
  }

  /**
   * Launches `fn`. With `cluster` (compute capability 9.0+), blocks go in thread-block clusters of
   * that many consecutive blocks along z, which can reach each other's shared memory; a cluster of
   * one is still a cluster launch, which cluster instructions such as st.async need.
   */
  launch(
    fn: Handle,
    grid: [number, number, number],
    block: [number, number, number],
    args: KernelArg[],
    what: string,
    sharedBytes = 0,
    cluster = 0,
  ): void {
    if (skipped.size && skipped.has(what.replace(/_m\d+$/, ""))) return;
    if (tracing) (this.captured ?? this.traced)?.push({ what, blocks: grid[0] * grid[1] * grid[2], run: -1 });
    if (args.length > MAX_ARGS) throw new RangeError(`too many kernel arguments (${args.length})`);
    this.allowShared(fn, sharedBytes, what);
    const v = this.argView;
    let offset = 0;
    args.forEach((a, i) => {
      v.setBigUint64(ARG_BYTES + 8 * i, this.argBase + BigInt(offset), true);
      if ("ptr" in a) v.setBigUint64(offset, BigInt(a.ptr), true);
      else if ("u64" in a) v.setBigUint64(offset, BigInt(a.u64), true);
      else if ("i32" in a) v.setInt32(offset, a.i32, true);
      else if ("f32" in a) v.setFloat32(offset, a.f32, true);
      else new Uint8Array(v.buffer).set(a.bytes, offset);
      offset += Math.ceil(("bytes" in a ? a.bytes.byteLength : 8) / 8) * 8;
    });
    if (offset > ARG_BYTES) throw new RangeError(`kernel arguments of ${what} take ${offset} bytes`);
    // Passed as an integer: on x86-64 a pointer and a uint64 travel the same way.
    const params = this.argBase + BigInt(ARG_BYTES);
    if (this.dependentLaunch || cluster > 0) {
      const config = this.launchConfig(grid, block, sharedBytes, cluster);
      this.driver.call("cuLaunchKernelEx", [config, fn, params, 0], `launching ${what}`);
      return;
    }
    this.driver.call(
      "cuLaunchKernel",
      [fn, grid[0], grid[1], grid[2], block[0], block[1], block[2], sharedBytes, this.stream, params, 0],
      `launching ${what}`,
    );
  }

  /** cuLaunchKernelEx's launch config for these dimensions (written in place), and its address. */
  private launchConfig(
    grid: [number, number, number],
    block: [number, number, number],
    sharedBytes: number,
    cluster: number,
  ): bigint {
    const v = this.argView;
    const c = ARG_BYTES + 8 * MAX_ARGS;
    [grid[0], grid[1], grid[2], block[0], block[1], block[2], sharedBytes].forEach((d, i) =>
      v.setUint32(c + 4 * i, d, true),
    );
    let attributes = this.dependentLaunch ? 1 : 0;
    if (cluster > 0) {
      const a = c + 56 + 72 * attributes++;
      [CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION, 0, 1, 1, cluster].forEach((d, i) =>
        v.setUint32(a + 4 * i, d, true),
      );
    }
    v.setUint32(c + 48, attributes, true);
    return this.argBase + BigInt(c);
  }

  /**
   * How many clusters of `cluster` blocks of `fn` (`threads` each, `sharedBytes` of dynamic shared
   * memory) the device holds at once: a grid of more runs in waves.
   */
  maxActiveClusters(fn: Handle, threads: number, sharedBytes: number, cluster: number, what: string): number {
    this.allowShared(fn, sharedBytes, what);
    const n = [0];
    const config = this.launchConfig([1, 1, cluster], [threads, 1, 1], sharedBytes, cluster);
    this.driver.call(
      "cuOccupancyMaxActiveClusters",
      [n, fn, config],
      `asking how many clusters of ${what} fit`,
    );
    return n[0];
  }

  /** Lets `fn` take `bytes` of dynamic shared memory (above 48 KB a kernel must opt in). */
  private allowShared(fn: Handle, bytes: number, what: string): void {
    if (bytes <= DEFAULT_SHARED_BYTES || (this.sharedAllowed.get(fn) ?? 0) >= bytes) return;
    this.driver.call(
      "cuFuncSetAttribute",
      [fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes],
      `letting ${what} use ${bytes} bytes of shared memory`,
    );
    this.sharedAllowed.set(fn, bytes);
  }

  synchronize(): void {
    this.driver.call("cuStreamSynchronize", [this.stream]);
    this.synchronizations++;
  }

  /** Records what `body` launches on the stream as a CUDA graph, ready to replay. */
  capture(body: () => void): Handle {
    this.driver.call("cuStreamBeginCapture_v2", [this.stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL]);
    const graph = [null] as unknown[];
    const launches: TracedLaunch[] = [];
    if (tracing) this.captured = launches;
    try {
      body();
    } finally {
      this.captured = null;
      this.driver.call("cuStreamEndCapture", [this.stream, graph]);
    }
    const exec = [null] as unknown[];
    this.driver.call("cuGraphInstantiateWithFlags", [exec, graph[0], 0]);
    this.driver.call("cuGraphDestroy", [graph[0]]);
    if (tracing) this.graphLaunches.set(exec[0], launches);
    return exec[0];
  }

  replay(exec: Handle): void {
    this.driver.call("cuGraphLaunch", [exec, this.stream]);
    if (this.traced) {
      const run = this.replays++;
      for (const l of this.graphLaunches.get(exec) ?? []) this.traced.push({ ...l, run });
    }
  }

  /** An event recorded on the stream now (for timing with elapsedMs). */
  record(): Handle {
    const e = this.event();
    this.recordEvent(e);
    return e;
  }

  /** A new event; one that does not time is cheaper to record and wait for. */
  event(timing = true): Handle {
    const e = [null] as unknown[];
    this.driver.call("cuEventCreate", [e, timing ? 0 : CU_EVENT_DISABLE_TIMING]);
    return e[0];
  }

  /** Marks the stream's current point with `event` (waitEvent returns once the GPU passed it). */
  recordEvent(event: Handle): void {
    this.driver.call("cuEventRecord", [event, this.stream]);
  }

  waitEvent(event: Handle): void {
    this.driver.call("cuEventSynchronize", [event]);
  }

  /** Milliseconds between two recorded events (waits for the later one). */
  elapsedMs(start: Handle, end: Handle): number {
    this.waitEvent(end);
    const ms = [0];
    this.driver.call("cuEventElapsedTime", [ms, start, end]);
    return ms[0];
  }

  /** Milliseconds the GPU spends on `body`'s work, between two events on the stream. */
  time(body: () => void): number {
    const start = this.record();
    body();
    return this.elapsedMs(start, this.record());
  }
}

export function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
}
