/**
 * The CUDA backend: bf16 weights, float32 activations and KV cache, kernels compiled at load time
 * for this GPU and model. Activations come from one arena that is reset at the start of every
 * step, so a step allocates nothing from the driver and its addresses repeat step after step —
 * which is what lets a captured CUDA graph replay it.
 */
import type {
  AttentionParams,
  Backend,
  CapturedGraph,
  DeviceDraw,
  GateUpOptions,
  KvCacheSpec,
  KvStorage,
  LinearOptions,
  RowNorm,
  Step,
  StepRows,
  Tensor,
} from "../backend.js";
import { float32ToBf16Bits, float32ToF16Bits, toFloat32, type DType } from "../../model/dtype.js";
import type { ModelConfig } from "../../model/config.js";
import type { RopeConfig } from "../../model/rope.js";
import type { QuantizedWeight, QuantScheme } from "../../quant/quantized-weight.js";
import { randomQuantPlan } from "../../quant/random-codes.js";
import { chunkWeights, checkDeviceSupport, deviceLayout, qgemvFormat } from "./quant-layout.js";
import { CudaContext, gib, tracing, type KernelArg } from "./context.js";
import { CudaError, Driver, type DevicePtr, type Handle } from "./driver.js";
import { CublasLt } from "./cublaslt.js";
import { Kernels } from "./kernels.js";
import { Nvrtc } from "./nvrtc.js";
import { Timeline } from "./timeline.js";
import { Staging } from "./staging.js";
import { l2PrefetchArg, l2PrefetchBytes } from "./l2-prefetch.js";
import { followsOnDevice, packStep, packedWords, type PackedStep } from "./step-layout.js";

/** A quantized weight's device parts (see quant-layout.ts); ptr of its tensor holds the codes. */
interface DeviceQuant {
  scheme: QuantScheme;
  groupSize: number;
  scales: DevicePtr;
  /** Bytes of the codes (at the tensor's ptr) and of the scales. */
  codeBytes: number;
  scaleBytes: number;
}

/** Activations rounded to int8 per block of 32, with a (scale, sum) float2 per block. */
interface Int8Rows {
  q: DevicePtr;
  scales: DevicePtr;
}

export class CudaTensor implements Tensor {
  /** The int8 copy its producer made for an integer-weight GEMV, if it made one. */
  int8?: Int8Rows;
  /** The half copy (times FP8_X_SCALE) its producer made for an fp8-weight GEMV, if it made one. */
  half?: DevicePtr;
  /** Its plain half copy, which a gate·up on the tensor cores makes for an integer down product there. */
  plainHalf?: DevicePtr;
  constructor(
    readonly rows: number,
    readonly cols: number,
    readonly ptr: DevicePtr,
    readonly quant?: DeviceQuant,
  ) {}
}

const quantOf = (w: Tensor): DeviceQuant | undefined => (w as CudaTensor).quant;

class CudaKvStorage implements KvStorage {
  constructor(
    readonly spec: KvCacheSpec,
    readonly keys: DevicePtr,
    readonly values: DevicePtr,
    readonly bytes: number,
  ) {}
  /** Bytes of one layer's keys (or values). */
  get layerBytes(): number {
    return this.spec.numBlocks * this.spec.blockSize * this.spec.numKvHeads * this.spec.headDim * 4;
  }
}

interface CudaStep extends Step {
  tokens: DevicePtr;
  positions: DevicePtr;
  slots: DevicePtr;
  outputRows: DevicePtr;
  /** [rows, maxBlocks] block tables, padded to the pool size so every step has the same layout. */
  blockTables: DevicePtr;
  maxBlocks: number;
  /** Prefill attention tiles: [first row, row count] pairs (see prefillTiles). */
  tiles: DevicePtr;
  tileCount: number;
  /** Per row, the first position of its run (freshFrom), for steps below the prefill size. */
  fresh: DevicePtr;
  /** The most fresh keys a row reads. */
  mostFresh: number;
  /** Rows of an embedding table that the arg-max feeding the step already picked (prepareFedStep). */
  embedded?: { table: Tensor; rows: CudaTensor };
}

/**
 * Steps of at most this many rows (decode, speculative verification, short prompts) use the GEMV
 * kernels, which keep activations in float32 and read each weight once for all rows; the decode
 * attention kernel splits each row's keys over many blocks. Larger steps (prompt chunks, batched
 * decode of many sequences) multiply on tensor cores with bf16 activations: past 16 rows a GEMV
 * stops being bound by the weight read.
 */
const maxGemvRows = 16;

/**
 * Fewest rows of a step whose quantized products run on the tensor cores (qmma in
 * kernels/qgemv.cu) rather than the dp4a / half2 GEMV, whose instructions grow with the rows, by
 * scheme. Measured on the H100 (8B, docs/BENCHMARKS.md, GEMV against qmma, ms per step). Session
 * 16: int4 4 rows 3.24 / 3.27, 5 rows 3.59 / 3.36; int8 4 rows 4.13 / 4.49, 5 rows 4.76 / 4.54;
 * int2-g32 4 rows 3.13 / 3.22, 5 rows 3.47 / 3.23. Session 23, after qmma's slices met by mail:
 * int4 3 rows 2.63 / 2.89, 4 rows 3.19 / 3.07; fp8 3 rows 3.78 / 3.81, 4 rows 4.24 / 3.98; int8 4
 * rows 4.16 / 4.30, 5 rows 4.73 / 4.38. TACHYON_QMMA_FROM_ROWS overrides all of them for
 * measurements (17: never).
 */
const qmmaFromRows: Record<QuantScheme, number> = { int4: 4, fp8: 4, int8: 5, int2: 5 };
const qmmaOverride = optionalNumber(process.env.TACHYON_QMMA_FROM_ROWS);

/**
 * K each qmma block covers, whose half copy of x it stages in shared memory (32 KB for 1024 k
 * of 16 rows). Measured on the H100 (8B, docs/BENCHMARKS.md session 15): steps of 2 / 4 / 8 rows
 * of int4 on qmma 3.89 / 4.04 / 4.26 ms with slices of 512, 3.44 / 3.55 / 3.84 with 1024; int8
 * and fp8 alike.
 */
const qmmaSliceK = 1024;

/**
 * qmma blocks per multiprocessor a product's grid aims at (QMMA_MINBLOCKS in kernels/qgemv.cu):
 * each block loops over its share of a slice's row blocks, its loads running on from one into the
 * next. Measured level with a block per row block (session 15); TACHYON_QMMA_RESIDENT overrides
 * it for measurements (0: a block per row block).
 */
const qmmaResident = Number(process.env.TACHYON_QMMA_RESIDENT ?? 2);

/**
 * Most slices of K whose blocks meet by mail on Hopper (SliceMail in kernels/qgemv.cu): they run as
 * one cluster, of at most the portable cluster size. Products of more slices (the 8B's down, 14)
 * meet through global memory.
 */
const qmmaMailSlices = 8;

/** Most row blocks a qmma block whose slices meet by mail loops over (each takes mail slots). */
const qmmaMailRounds = 8;

/**
 * Shared memory a qmma block whose slices meet by mail takes beyond its slice of x: per row block
 * it loops over, a float4 slot per lane, x tile and slice for each tile it owns, and an 8-byte
 * mailbox per owned tile.
 */
function qmmaMailBytes(rounds: number, slices: number, xRows: number): number {
  const owned = Math.ceil(8 / slices);
  return rounds * owned * (slices * (xRows / 8) * 32 * 16 + 8);
}

/** foldsGateUp's switch, for measurements (TACHYON_GATE_UP_FOLD=0: the norm and quantize_x run as kernels). */
const gateUpFold = process.env.TACHYON_GATE_UP_FOLD !== "0";

/** K of one qmma warp step (4 lanes, a chunk each): the multiple of it a row must be. */
function qmmaStepK(scheme: QuantScheme): number {
  return 4 * chunkWeights[scheme];
}

/**
 * Partial-sum bytes (256 threads, 16 bytes per 8 x rows each) and counters of a qmma product of
 * `rowBlocks` row blocks and `slices` slices of K, for x padded to `xRows` rows.
 */
function qmmaNeeds(
  rowBlocks: number,
  slices: number,
  xRows: number,
): { partialBytes: number; counters: number } {
  return { partialBytes: slices > 1 ? rowBlocks * slices * 256 * 2 * xRows : 0, counters: rowBlocks };
}

interface QmmaScratch {
  partials: DevicePtr;
  partialBytes: number;
  counterPtr: DevicePtr;
  counters: number;
}

interface CudaGraph extends CapturedGraph {
  exec: unknown;
  /** Arena bytes in use at the end of capture: the replayed kernels write below this. */
  arenaEnd: number;
  /** Where the captured step's rows were (CudaBackend.rowsAt). */
  rowsAt: DevicePtr;
}

/** Bump allocator over one device buffer; reset() frees everything at once. */
class Arena {
  private offset = 0;
  constructor(
    readonly base: DevicePtr,
    readonly capacity: number,
  ) {}
  alloc(bytes: number): DevicePtr {
    const at = this.offset;
    this.offset += Math.ceil(bytes / 256) * 256;
    if (this.offset > this.capacity) {
      throw new CudaError(
        `activation arena exhausted (${gib(this.capacity)}): the step has more rows than the backend was sized for`,
      );
    }
    return this.base + at;
  }
  reset(): void {
    this.offset = 0;
  }
  /** Where the next allocation would go. */
  get used(): number {
    return this.offset;
  }
  /** Skips past memory that a replayed graph uses, so later allocations do not overlap it. */
  skipTo(used: number): void {
    this.offset = Math.max(this.offset, used);
  }
}

/** Steps of at least this many rows (prompt chunks) use the tensor-core prefill attention. */
const prefillAttentionMinRows = 64;

export interface CudaBackendOptions {
  /** Most rows one step may have (prefill chunk size). */
  maxRows: number;
  /**
   * Most keys of a step's own rows that the decode attention rotates and holds itself (default:
   * what 28 KB of its shared memory hold); a step with a longer run of one sequence's rows has them
   * rotated and cached by rope_store first.
   */
  freshKeys?: number;
  /**
   * Blocks a decode attention step aims at: each row's keys are split over as many blocks as that
   * leaves, 1 to 8 (one cluster). Without it (or TACHYON_ATTENTION_BLOCKS, for measurements), the
   * splits are chosen so that every cluster is resident at once (attentionPlan).
   */
  attentionBlocks?: number;
}

/**
 * Warps per multiprocessor the quantized GEMV's row splitting aims to fill (gemvSplit). Its
 * registers allow about 24 resident warps, and fewer, longer warps keep more of each row's loads
 * in one pipeline: on the H100 16 measured best (8B int4-g128 416.7 tok/s against 397.4 at 64,
 * int8 281.6 against 281.1, fp8 276.6 against 264.5; 8 and 4 lose on int8 and fp8).
 */
const quantizedWarpsPerSm = 16;

/** Shared-memory bytes of one row of x that a GEMV folding a norm in makes (NormFold). */
function normedRowBytes(q: DeviceQuant, K: number): number {
  return q.scheme === "fp8" ? 2 * K : K + (K / 32) * 8;
}

/** float4s each thread of a norm block holds in registers (kernels/norm.cu). */
const normSlots = 4;

/**
 * Threads of a norm block over `group` values (kernels/norm.cu): as few as fill their slots
 * (4096 values: 256 threads).
 */
function normThreads(group: number): number {
  if (group % 4 !== 0 || group > normSlots * 4 * 1024)
    throw new CudaError(
      `RMSNorm over ${group} values is not supported by the CUDA kernels (a multiple of 4, at most ${normSlots * 4 * 1024}); run this model with --device cpu`,
    );
  return Math.min(1024, Math.max(32, Math.ceil(group / 4 / normSlots / 32) * 32));
}

/** An environment variable's number, for measurements; undefined when it is not set. */
function optionalNumber(value: string | undefined): number | undefined {
  return value === undefined || value === "" ? undefined : Number(value);
}

/** Most blocks that share one row in argmax_rows (kernels/elementwise.cu). */
const argmaxParts = 64;

export class CudaBackend implements Backend {
  readonly name = "cuda";
  private readonly arena: Arena;
  /** Elements of the largest quantized weight: the size of the bf16 dequantization scratch. */
  private largestQuantized = 0;
  private dequantScratch: DevicePtr | null = null;
  /** Where qmma's slices meet (qmmaScratch), once a step needs it. */
  private qmmaSpace: QmmaScratch | null = null;
  /** attentionPlan's answers, by rows and kv heads. */
  private readonly attentionPlans = new Map<number, { splits: number; wave: boolean }>();
  /** qmmaMailPlan's answers, by scheme, kernel and product shape. */
  private readonly qmmaMailPlans = new Map<string, { blocks: number; sharedBytes: number }>();
  /** Whether a graph is being captured (nothing may be allocated). */
  private capturing = false;
  /** Whether any weight is of an integer scheme: producers then also write int8 activations. */
  private intWeights = false;
  /** Whether any weight is fp8: producers then also write half activations. */
  private fp8Weights = false;
  /** Block-table width of every step: the KV pool's block count (set by createKvCache). */
  private tableWidth = 1;
  /** Positions per block of the KV pool (set by createKvCache). */
  private blockSize = 1;
  /**
   * Where steps of up to maxGemvRows rows keep their rows: one address for all of them, so a graph
   * captured on one such step replays on the next; larger steps' rows go to the arena. Sized by
   * createKvCache for the pool's block tables.
   */
  private stepRows: { ptr: DevicePtr; bytes: number } | null = null;
  /** What stepRows holds, as uploaded (a fed step's tokens aside); null before the first upload. */
  private rowsOnDevice: PackedStep | null = null;
  /**
   * Fed steps (prepareFedStep) whose rows the arg-max moved on on the device instead of an upload,
   * and whose tokens it embedded.
   */
  readonly fedSteps = { advanced: 0, embedded: 0 };
  /** Where the latest prepared step's rows are: a graph replays only on rows where it was captured. */
  private rowsAt: DevicePtr = 0;
  private readonly invFreq: DevicePtr;
  /** Where argmax_rows' blocks of a row leave their candidates, and their counters (kept at 0). */
  private readonly argmaxSpace: { parts: DevicePtr; done: DevicePtr };
  /** Uploads of step rows and sampling parameters, and the ids a pipelined step reads back. */
  private readonly staging: Staging;

  private constructor(
    readonly ctx: CudaContext,
    private readonly kernels: Kernels,
    /** The kernel timeline, when TACHYON_TIMELINE is set (timeline.ts). */
    readonly timeline: Timeline | undefined,
    private readonly cfg: ModelConfig,
    arenaBytes: number,
    private readonly lt: CublasLt | null,
    private readonly freshKeys: number,
    private readonly attentionBlocks: number | undefined,
    readonly maxStepRows: number,
  ) {
    this.arena = new Arena(ctx.alloc(arenaBytes, "activation buffers"), arenaBytes);
    this.staging = new Staging(ctx);
    this.invFreq = ctx.alloc(cfg.rope.invFreq.byteLength, "rope frequencies");
    ctx.upload(this.invFreq, cfg.rope.invFreq);
    const done = ctx.alloc(4 * maxStepRows, "arg-max counters");
    ctx.fill32(done, 0, maxStepRows);
    this.argmaxSpace = { parts: ctx.alloc(8 * argmaxParts * maxStepRows, "arg-max candidates"), done };
  }

  /** Whether a CUDA GPU is usable here, and if not, why. */
  static probe(): { ok: boolean; reason: string } {
    const { driver, reason } = Driver.tryLoad();
    return { ok: driver !== null, reason };
  }

  static create(cfg: ModelConfig, options: CudaBackendOptions): CudaBackend {
    const { driver, reason } = Driver.tryLoad();
    if (!driver) throw new CudaError(`--device cuda: ${reason}`);
    const ctx = new CudaContext(driver, 0);
    const freshKeys = options.freshKeys ?? Math.floor(7168 / cfg.headDim);
    normThreads(cfg.hiddenSize); // refuses a model the norm kernel cannot hold, before any upload
    if (cfg.qkNorm) normThreads(cfg.headDim);
    const timeline = tracing ? new Timeline(ctx) : undefined;
    const kernels = new Kernels(
      ctx,
      Nvrtc.load(),
      {
        NORM_SLOTS: normSlots,
        HEAD_DIM: cfg.headDim,
        GROUP: cfg.numHeads / cfg.numKvHeads,
        MAX_FRESH: freshKeys,
      },
      timeline,
    );
    return new CudaBackend(
      ctx,
      kernels,
      timeline,
      cfg,
      activationBytes(cfg, options.maxRows),
      CublasLt.tryLoad(ctx).lt,
      freshKeys,
      options.attentionBlocks ?? optionalNumber(process.env.TACHYON_ATTENTION_BLOCKS),
      options.maxRows,
    );
  }

  checkCapacity(weightBytes: number, contextTokens: number, fraction: number): void {
    const c = this.cfg;
    const weights = weightBytes;
    const kv = 2 * (c.numLayers + c.numMtpModules) * contextTokens * c.numKvHeads * c.headDim * 4;
    const { free, total } = this.ctx.memInfo();
    const allowed = Math.min(free, fraction * total - this.ctx.allocatedBytes);
    if (weights + kv > allowed) {
      throw new CudaError(
        `the model does not fit on ${this.deviceName}: it needs ${gib(weights + kv)} ` +
          `(weights ${gib(weights)}, KV cache for ${contextTokens} tokens ${gib(kv)}) after ` +
          `${gib(this.ctx.allocatedBytes)} of activation buffers, and ${gib(Math.max(0, allowed))} is available ` +
          `(${gib(free)} free, --gpu-memory-fraction ${fraction}); lower --max-context, use a smaller model, or --device cpu`,
      );
    }
  }

  get deviceName(): string {
    return this.ctx.info.name;
  }

  weight(name: string, dtype: DType, shape: readonly number[], bytes: Uint8Array): Tensor {
    const rows = shape.length === 2 ? shape[0] : 1;
    const cols = shape.length === 2 ? shape[1] : shape[0];
    let bf16: Uint8Array = bytes;
    if (dtype !== "BF16") {
      const f = toFloat32(bytes, dtype);
      const bits = new Uint16Array(f.length);
      for (let i = 0; i < f.length; i++) bits[i] = float32ToBf16Bits(f[i]);
      bf16 = new Uint8Array(bits.buffer);
    }
    const ptr = this.ctx.alloc(bf16.byteLength, `loading ${name}`);
    this.ctx.upload(ptr, bf16);
    return new CudaTensor(rows, cols, ptr);
  }

  quantizedWeight(name: string, w: QuantizedWeight): Tensor {
    const layout = deviceLayout(name, w);
    const codes = this.ctx.alloc(layout.codes.byteLength, `loading ${name}`);
    this.ctx.upload(codes, layout.codes);
    const scales = this.ctx.alloc(layout.scales.byteLength, `loading ${name} (scales)`);
    this.ctx.upload(scales, layout.scales);
    this.largestQuantized = Math.max(this.largestQuantized, w.rows * w.cols);
    this.intWeights ||= w.scheme !== "fp8";
    this.fp8Weights ||= w.scheme === "fp8";
    return new CudaTensor(w.rows, w.cols, codes, {
      scheme: w.scheme,
      groupSize: w.groupSize,
      scales,
      codeBytes: layout.codes.byteLength,
      scaleBytes: layout.scales.byteLength,
    });
  }

  /**
   * A quantized weight of random codes (never all zero) with one scale and offset for the whole
   * tensor, chosen so its values have the given mean and std: for benchmarks.
   */
  randomQuantizedWeight(
    shape: readonly [number, number],
    scheme: QuantScheme,
    groupSize: number,
    dist: { mean: number; std: number; seed: number },
  ): Tensor {
    const plan = randomQuantPlan(scheme, shape, groupSize, dist);
    checkDeviceSupport("random weight", plan);
    const codes = this.ctx.alloc(plan.bytes, "random weights");
    this.launch("fill_random_u32", [1024, 1, 1], 256, [
      { ptr: codes },
      { u64: plan.bytes / 4 },
      { i32: dist.seed | 0 },
      { i32: plan.mask | 0 },
    ]);
    const scales = this.ctx.alloc(plan.groups * 4, "random weights (scales)");
    const bits =
      scheme === "fp8"
        ? new Uint32Array(new Float32Array([plan.scale]).buffer)[0]
        : float32ToF16Bits(plan.scale) | (float32ToF16Bits(plan.offset ?? 0) << 16);
    this.ctx.fill32(scales, bits, plan.groups);
    this.largestQuantized = Math.max(this.largestQuantized, plan.rows * plan.cols);
    this.intWeights ||= scheme !== "fp8";
    this.fp8Weights ||= scheme === "fp8";
    return new CudaTensor(plan.rows, plan.cols, codes, {
      scheme,
      groupSize: plan.groupSize,
      scales,
      codeBytes: plan.bytes,
      scaleBytes: plan.groups * 4,
    });
  }

  randomWeight(shape: readonly number[], dist: { mean: number; std: number; seed: number }): Tensor {
    const rows = shape.length === 2 ? shape[0] : 1;
    const cols = shape.length === 2 ? shape[1] : shape[0];
    const ptr = this.ctx.alloc(rows * cols * 2, "random weights");
    this.launch("fill_random_bf16", [1024, 1, 1], 256, [
      { ptr },
      { u64: rows * cols },
      { i32: dist.seed | 0 },
      { f32: dist.mean },
      { f32: dist.std },
    ]);
    return new CudaTensor(rows, cols, ptr);
  }

  createKvCache(spec: KvCacheSpec): KvStorage {
    this.tableWidth = spec.numBlocks;
    this.blockSize = spec.blockSize;
    const rowsBytes = 4 * packedWords(maxGemvRows, spec.numBlocks);
    if (!this.stepRows || this.stepRows.bytes < rowsBytes) {
      if (this.stepRows) this.ctx.free(this.stepRows.ptr, this.stepRows.bytes);
      this.stepRows = { ptr: this.ctx.alloc(rowsBytes, "step rows"), bytes: rowsBytes };
      this.rowsOnDevice = null;
    }
    const layerBytes = spec.numBlocks * spec.blockSize * spec.numKvHeads * spec.headDim * 4;
    const total = layerBytes * spec.numLayers;
    const keys = this.ctx.alloc(total, "the KV cache (keys)");
    const values = this.ctx.alloc(total, "the KV cache (values)");
    return new CudaKvStorage(spec, keys, values, 2 * total);
  }

  resetActivations(): void {
    this.arena.reset();
  }

  prepareStep(rows: StepRows): Step {
    const { step, packed } = this.layOut(rows);
    this.staging.upload(step.tokens, packed.packed);
    return step;
  }

  prepareFedStep(rows: StepRows, from: Tensor, embedTable?: Tensor): { step: Step; ids: () => Int32Array } {
    if (from.rows !== rows.tokens.length) {
      throw new RangeError(
        `prepareFedStep: ${from.rows} rows of logits for a step of ${rows.tokens.length} tokens`,
      );
    }
    const { step, packed, replaces } = this.layOut(rows);
    // The rows on the device, moved on by the arg-max kernel, or uploaded (then fed their tokens).
    const advance = replaces !== null && followsOnDevice(replaces, packed, this.blockSize);
    if (advance) this.fedSteps.advanced++;
    else this.staging.upload(step.tokens, packed.packed);
    if (embedTable) {
      step.embedded = { table: embedTable, rows: this.tensor(from.rows, embedTable.cols) };
      this.fedSteps.embedded++;
    }
    this.launchArgmax(from, step.tokens, advance ? step.maxBlocks : undefined, step.embedded);
    const ids = this.staging.download(step.tokens, 4 * from.rows);
    return { step, ids: () => new Int32Array(ids().buffer) };
  }

  /**
   * A step's rows packed (step-layout.ts) and where they go: stepRows when it holds them (then
   * `replaces` is what stepRows held before, if known, and rowsOnDevice becomes these), else the
   * arena.
   */
  private layOut(rows: StepRows): { step: CudaStep; packed: PackedStep; replaces: PackedStep | null } {
    const M = rows.tokens.length;
    const packed = packStep(rows, this.tableWidth, this.usesPrefillAttention(M));
    const { layout } = packed;
    const held = this.stepRows;
    const inStepRows = M <= maxGemvRows && held !== null && packed.packed.byteLength <= held.bytes;
    const base = inStepRows ? held.ptr : this.arena.alloc(packed.packed.byteLength);
    const replaces = inStepRows ? this.rowsOnDevice : null;
    if (inStepRows) this.rowsOnDevice = packed;
    this.rowsAt = base;
    const step: CudaStep = {
      rows,
      tokens: base,
      positions: base + 4 * layout.positions,
      slots: base + 4 * layout.slots,
      outputRows: base + 4 * layout.outputRowsAt,
      blockTables: base + 4 * layout.blockTables,
      maxBlocks: layout.tableWidth,
      tiles: base + 4 * layout.tiles,
      tileCount: layout.tileCount,
      fresh: base + 4 * layout.fresh,
      mostFresh: layout.mostFresh,
    };
    return { step, packed, replaces };
  }

  private tensor(rows: number, cols: number): CudaTensor {
    return new CudaTensor(rows, cols, this.arena.alloc(rows * cols * 4));
  }

  private launch(name: string, grid: [number, number, number], block: number, args: KernelArg[]): void {
    this.ctx.launch(this.kernels.get(name), grid, [block, 1, 1], args, name);
  }

  embed(table: Tensor, step: Step): Tensor {
    const s = step as CudaStep;
    if (s.embedded?.table === table) return s.embedded.rows;
    const out = this.tensor(s.rows.tokens.length, table.cols);
    this.launch("embed", [out.rows, 1, 1], 256, [
      { ptr: (table as CudaTensor).ptr },
      { ptr: s.tokens },
      { ptr: out.ptr },
      { i32: table.cols },
    ]);
    return out;
  }

  rmsNorm(x: Tensor, weight: Tensor, eps: number): Tensor {
    const out = this.tensor(x.rows, x.cols);
    const group = weight.cols;
    // Whole-row norms also write the int8 and half copies a quantized product reads.
    const q = group === x.cols ? this.int8For(out) : undefined;
    const h = group === x.cols ? this.halfFor(out) : undefined;
    this.launch("rmsnorm", [(x.rows * x.cols) / group, 1, 1], normThreads(group), [
      { ptr: (x as CudaTensor).ptr },
      { ptr: (weight as CudaTensor).ptr },
      { ptr: out.ptr },
      { i32: group },
      { f32: eps },
      { ptr: q?.q ?? 0 },
      { ptr: q?.scales ?? 0 },
      { ptr: h ?? 0 },
    ]);
    return out;
  }

  linear(x: Tensor, w: Tensor, o: LinearOptions = {}): Tensor {
    return this.products(x, [w], [o.bias], o.norm, o.residual)[0];
  }

  linearMany(
    x: Tensor,
    ws: readonly Tensor[],
    biases: readonly (Tensor | undefined)[],
    norm?: RowNorm,
  ): Tensor[] {
    if (ws.length > 3) throw new RangeError("linearMany fuses at most three products");
    return this.products(x, ws, biases, norm);
  }

  /** linear and linearMany: products of x (normed with `norm`), plus `residual` (one weight only). */
  private products(
    x: Tensor,
    ws: readonly Tensor[],
    biases: readonly (Tensor | undefined)[],
    norm?: RowNorm,
    residual?: Tensor,
  ): Tensor[] {
    if (this.lt && x.rows > maxGemvRows) {
      // One bf16 copy of x serves every product, quantized weights included (dense).
      const xb = this.bf16Copy(this.normed(x, norm));
      return ws.map((w, i) => {
        const out = this.tensor(x.rows, w.rows);
        this.tensorCoreLinear(out, xb, this.dense(w), biases[i], residual);
        return out;
      });
    }
    if (ws.some((w) => quantOf(w))) return this.quantizedGemv(x, ws, biases, norm, residual);
    const xn = this.normed(x, norm);
    const outs = ws.map((w) => this.tensor(x.rows, w.rows));
    const K = x.cols;
    const totalRows = ws.reduce((n, w) => n + w.rows, 0);
    // Rows in chunks of up to 16: each chunk reads the weights once.
    for (let r = 0; r < x.rows; r += 16) {
      const m = Math.min(16, x.rows - r);
      const seg = new DataView(new ArrayBuffer(88));
      ws.forEach((w, i) => {
        seg.setBigUint64(8 * i, BigInt((w as CudaTensor).ptr), true);
        seg.setBigUint64(24 + 8 * i, BigInt(biases[i] ? (biases[i] as CudaTensor).ptr : 0), true);
        seg.setBigUint64(48 + 8 * i, BigInt(outs[i].ptr + r * w.rows * 4), true);
        seg.setInt32(72 + 4 * i, w.rows, true);
      });
      const split = this.gemvSplit(totalRows);
      this.launch(`gemv_bf16_m${m}`, [Math.ceil((totalRows * split) / 8), 1, 1], 256, [
        { bytes: new Uint8Array(seg.buffer) },
        { ptr: (xn as CudaTensor).ptr + r * K * 4 },
        this.residualArg(residual, ws, r),
        { i32: K },
        { i32: split },
      ]);
    }
    return outs;
  }

  /** x, or rmsNorm(x) run as its own kernel where a product cannot fold `norm` in. */
  private normed(x: Tensor, norm: RowNorm | undefined): Tensor {
    return norm ? this.rmsNorm(x, norm.weight, norm.eps) : x;
  }

  /**
   * Whether a quantized GEMV of `m` rows over `groups` pairs of weight rows folds the norm of its
   * input in (qgemv_norm_m1 in kernels/qgemv.cu): one-row steps, rows of at most FOLD_SLOTS ·
   * 1024 values, products of about one wave of blocks. Every block makes its own normed x, which
   * pays only where there are few blocks. Measured on the H100 (8B int4, session 11 of
   * docs/BENCHMARKS.md): q/k/v's 384 blocks took 6.2 µs plus a 3.8 µs norm, 8.3 µs folded;
   * gate·up's 1792 went from 21.9 to 30.6 µs; steps of 2 and 4 rows lost (2.72 → 2.81 ms,
   * 3.38 → 3.78 ms). So gate·up, the LM head and longer steps run the norm kernel first.
   */
  private foldsNorm(m: number, K: number, groups: number): boolean {
    const blocks = Math.ceil((groups * this.gemvSplit(groups, quantizedWarpsPerSm)) / 8);
    return m === 1 && K % 128 === 0 && K <= 4096 && blocks <= 4 * this.ctx.info.multiprocessors;
  }

  /**
   * Whether a one-row gate·up folds its norm in and rounds its own output for down
   * (qgate_up_fold_m1 in kernels/qgemv.cu): integer schemes in a model without fp8 weights (whose
   * products read a half copy instead), K of 1024, 2048 or 4096 (a thread per 32 k, streams of a
   * whole number of warps in a block of 128), N a multiple of 32. Measured on the H100 (8B, session
   * 17 of docs/BENCHMARKS.md, alternating with the previous commit): int4-g128 517 → 525 tok/s,
   * int2-g32 552 → 598 / 600, int8 332 → 340. TACHYON_GATE_UP_FOLD=0 turns it off for measurements.
   */
  private foldsGateUp(m: number, q: DeviceQuant, K: number, N: number): boolean {
    return (
      m === 1 &&
      q.scheme !== "fp8" &&
      !this.fp8Weights &&
      [1024, 2048, 4096].includes(K) &&
      N % 32 === 0 &&
      gateUpFold
    );
  }

  gateUp(x: Tensor, gate: Tensor, up: Tensor, o: GateUpOptions = {}): Tensor {
    const { gateBias, upBias, norm } = o;
    const out = this.tensor(x.rows, gate.rows);
    const K = x.cols;
    const N = gate.rows;
    if (this.lt && x.rows > maxGemvRows) {
      const xb = this.bf16Copy(this.normed(x, norm));
      const g = this.tensor(x.rows, N);
      const u = this.tensor(x.rows, N);
      this.tensorCoreLinear(g, xb, this.dense(gate), gateBias);
      this.tensorCoreLinear(u, xb, this.dense(up), upBias);
      return this.siluMul(g, u);
    }
    const qg = quantOf(gate);
    const qu = quantOf(up);
    if (qg || qu) {
      if (!qg || !qu || qg.scheme !== qu.scheme || qg.groupSize !== qu.groupSize) {
        const xn = this.normed(x, norm);
        return this.siluMul(this.linear(xn, gate, { bias: gateBias }), this.linear(xn, up, { bias: upBias }));
      }
      // Both kernels' first arguments: the weights, their scales and biases.
      const weights = [
        { ptr: (gate as CudaTensor).ptr },
        { ptr: (up as CudaTensor).ptr },
        { ptr: qg.scales },
        { ptr: qu.scales },
        { ptr: gateBias ? (gateBias as CudaTensor).ptr : 0 },
        { ptr: upBias ? (upBias as CudaTensor).ptr : 0 },
      ];
      if (norm && this.foldsGateUp(x.rows, qg, K, N)) {
        const yq = this.int8For(out);
        this.ctx.launch(
          this.qgemvKernel(qg, "qgate_up_fold_m1"),
          [N / 32, 1, 1],
          [128, 1, 1],
          [
            ...weights,
            { ptr: (x as CudaTensor).ptr },
            { ptr: (norm.weight as CudaTensor).ptr },
            { f32: norm.eps },
            { ptr: out.ptr },
            { ptr: yq?.q ?? 0 },
            { ptr: yq?.scales ?? 0 },
            { i32: K },
            { i32: qg.groupSize },
          ],
          "qgate_up_fold",
        );
        return out;
      }
      x = this.normed(x, norm);
      const xq = this.int8Rows(x, qg);
      const xh = this.halfRows(x, qg);
      const yh = qg.scheme === "fp8" ? this.halfFor(out) : this.plainHalfFor(out, qg, K);
      for (let r = 0; r < x.rows; r += 16) {
        const m = Math.min(16, x.rows - r);
        const args = [
          ...weights,
          { ptr: xq.q && xq.q + r * K },
          { ptr: xq.scales && xq.scales + r * (K / 32) * 8 },
          { ptr: xh && xh + r * K * 2 },
          { ptr: out.ptr + r * N * 4 },
          { ptr: yh ? yh + r * N * 2 : 0 },
        ];
        if (this.tensorCoreRows(qg, m, K)) {
          // Tiles of 8 gate rows and the same 8 up rows.
          this.launchQmma(qg, "qmma_gate_up", m, Math.ceil(N / 8), K, [
            ...args,
            { i32: m },
            { i32: N },
            { i32: K },
          ]);
          continue;
        }
        const split = this.gemvSplit(N, quantizedWarpsPerSm);
        const blocks = Math.ceil((N * split) / 8);
        this.ctx.launch(
          this.qgemvKernel(qg, `qgate_up_m${m}`),
          [blocks, 1, 1],
          [256, 1, 1],
          [
            ...args,
            { i32: N },
            { i32: K },
            { i32: qg.groupSize },
            { i32: split },
            this.l2Prefetch([gate, up], blocks),
          ],
          "qgate_up",
        );
      }
      return out;
    }
    const xn = this.normed(x, norm);
    for (let r = 0; r < x.rows; r += 16) {
      const m = Math.min(16, x.rows - r);
      const split = this.gemvSplit(N);
      this.launch(`gate_up_bf16_m${m}`, [Math.ceil((N * split) / 8), 1, 1], 256, [
        { ptr: (gate as CudaTensor).ptr },
        { ptr: (up as CudaTensor).ptr },
        { ptr: gateBias ? (gateBias as CudaTensor).ptr : 0 },
        { ptr: upBias ? (upBias as CudaTensor).ptr : 0 },
        { ptr: (xn as CudaTensor).ptr + r * K * 4 },
        { ptr: out.ptr + r * N * 4 },
        { i32: N },
        { i32: K },
        { i32: split },
      ]);
    }
    return out;
  }

  private siluMul(g: Tensor, u: Tensor): Tensor {
    const out = this.tensor(g.rows, g.cols);
    const n = g.rows * g.cols;
    this.launch("silu_mul", [Math.ceil(n / 256), 1, 1], 256, [
      { ptr: (g as CudaTensor).ptr },
      { ptr: (u as CudaTensor).ptr },
      { ptr: out.ptr },
      { i32: n },
    ]);
    return out;
  }

  private qgemvKernel(q: DeviceQuant, name: string): Handle {
    return this.kernels.variant("qgemv", { QFMT: qgemvFormat[q.scheme] }, name);
  }

  /**
   * Products with quantized weights for steps of at most 16 rows: the sub-16-bit GEMV (larger
   * steps dequantize each weight for the tensor cores, see dense).
   */
  private quantizedGemv(
    x: Tensor,
    ws: readonly Tensor[],
    biases: readonly (Tensor | undefined)[],
    norm: RowNorm | undefined,
    residual: Tensor | undefined,
  ): Tensor[] {
    const q = quantOf(ws[0]);
    const fusable = ws.every((w) => {
      const wq = quantOf(w);
      return wq && q && wq.scheme === q.scheme && wq.groupSize === q.groupSize;
    });
    // Weights of different schemes (a --keep'd one among them) go one launch each.
    if (!fusable) {
      const xn = this.normed(x, norm);
      return ws.map((w, i) => this.products(xn, [w], [biases[i]])[0]);
    }
    const outs = ws.map((w) => this.tensor(x.rows, w.rows));
    const K = x.cols;
    const groups = ws.reduce((n, w) => n + Math.ceil(w.rows / 2), 0); // 2 rows per warp (ROWS)
    if (norm && this.foldsNorm(x.rows, K, groups)) {
      // The norm's input (x) instead of x's int8 or half copies; rows fit in one launch.
      const xin = [
        { bytes: this.segments(ws, biases, outs, 0) },
        { ptr: (x as CudaTensor).ptr },
        { ptr: (norm.weight as CudaTensor).ptr },
        { f32: norm.eps },
        this.residualArg(residual, ws, 0),
      ];
      this.launchQgemv(q!, `qgemv_norm_m${x.rows}`, groups, xin, K, ws, normedRowBytes(q!, K) * x.rows);
      return outs;
    }
    x = this.normed(x, norm);
    const plain = (x as CudaTensor).plainHalf;
    const fromHalf = plain !== undefined && this.qmmaReadsHalf(q!, x.rows, K);
    const xq = fromHalf ? { q: 0, scales: 0 } : this.int8Rows(x, q!);
    const xh = fromHalf ? plain : this.halfRows(x, q!);
    for (let r = 0; r < x.rows; r += 16) {
      const m = Math.min(16, x.rows - r);
      const xin = [
        { bytes: this.segments(ws, biases, outs, r) },
        { ptr: xq.q && xq.q + r * K },
        { ptr: xq.scales && xq.scales + r * (K / 32) * 8 },
        { ptr: xh && xh + r * K * 2 },
      ];
      if (this.tensorCoreRows(q!, m, K)) {
        // Tiles of 16 rows of one product.
        const tiles = ws.reduce((n, w) => n + Math.ceil(w.rows / 16), 0);
        this.launchQmma(q!, "qmma", m, tiles, K, [
          ...xin,
          this.residualArg(residual, ws, r),
          { i32: m },
          { i32: K },
        ]);
        continue;
      }
      this.launchQgemv(q!, `qgemv_m${m}`, groups, [...xin, this.residualArg(residual, ws, r)], K, ws);
    }
    return outs;
  }

  /** QSegments (kernels/qgemv.cu) of up to three quantized products, their outputs from row r on. */
  private segments(
    ws: readonly Tensor[],
    biases: readonly (Tensor | undefined)[],
    outs: readonly CudaTensor[],
    r: number,
  ): Uint8Array {
    const seg = new DataView(new ArrayBuffer(112));
    ws.forEach((w, i) => {
      seg.setBigUint64(8 * i, BigInt((w as CudaTensor).ptr), true);
      seg.setBigUint64(24 + 8 * i, BigInt(quantOf(w)!.scales), true);
      seg.setBigUint64(48 + 8 * i, BigInt(biases[i] ? (biases[i] as CudaTensor).ptr : 0), true);
      seg.setBigUint64(72 + 8 * i, BigInt(outs[i].ptr + r * w.rows * 4), true);
      seg.setInt32(96 + 4 * i, w.rows, true);
    });
    return new Uint8Array(seg.buffer);
  }

  /** The residual a single product adds, from row r on (null for none). */
  private residualArg(residual: Tensor | undefined, ws: readonly Tensor[], r: number): KernelArg {
    return { ptr: residual ? (residual as CudaTensor).ptr + r * ws[0].rows * 4 : 0 };
  }

  /**
   * A quantized GEMV (qgemv_m*, qgemv_norm_m*) of the weights `ws` over `groups` pairs of rows:
   * `args` are its arguments up to the residual. It prefetches the leading rows of the first two
   * weights (q/k/v: of q and k; v's come last and are left to the stream).
   */
  private launchQgemv(
    q: DeviceQuant,
    name: string,
    groups: number,
    args: KernelArg[],
    K: number,
    ws: readonly Tensor[],
    shared = 0,
  ): void {
    const split = this.gemvSplit(groups, quantizedWarpsPerSm);
    const blocks = Math.ceil((groups * split) / 8);
    this.ctx.launch(
      this.qgemvKernel(q, name),
      [blocks, 1, 1],
      [256, 1, 1],
      [...args, { i32: K }, { i32: q.groupSize }, { i32: split }, this.l2Prefetch(ws.slice(0, 2), blocks)],
      "qgemv",
      shared,
    );
  }

  /**
   * The L2 prefetch of a quantized GEMV of `blocks` blocks over `ws` (l2-prefetch.ts): each
   * weight's codes and scales, issued by up to one block per multiprocessor.
   */
  private l2Prefetch(ws: readonly Tensor[], blocks: number): KernelArg {
    const ranges = ws.flatMap((w): [DevicePtr, number][] => {
      const q = quantOf(w)!;
      return [
        [(w as CudaTensor).ptr, q.codeBytes],
        [q.scales, q.scaleBytes],
      ];
    });
    const issuers = Math.min(blocks, this.ctx.info.multiprocessors);
    return { bytes: l2PrefetchArg(ranges, l2PrefetchBytes, issuers) };
  }

  /**
   * Whether a quantized product of `m` rows runs on the tensor cores (qmma, kernels/qgemv.cu):
   * from its scheme's qmmaFromRows rows, on Ampere and later, for rows of whole warp steps
   * (qmmaStepK) and groups of a power of two or one group a row.
   */
  private tensorCoreRows(q: DeviceQuant, m: number, K: number): boolean {
    const from = qmmaOverride ?? qmmaFromRows[q.scheme];
    const groupsFit = (q.groupSize & (q.groupSize - 1)) === 0 || q.groupSize >= K;
    return m >= from && K % qmmaStepK(q.scheme) === 0 && groupsFit && this.ctx.info.computeCapability[0] >= 8;
  }

  /**
   * A qmma kernel (`name`_m8 or _m16) over `tiles` warp tiles of a step of `m` rows: row blocks of
   * 8 tiles, cut along K into slices of qmmaSliceK, and per slice enough blocks for qmmaResident
   * a multiprocessor, each looping over its share of the row blocks; `args` are its arguments up
   * to K. On Hopper, a row block's slices (up to qmmaMailSlices) run as a cluster and meet by mail
   * (qmmaMailPlan); otherwise through the scratch space in global memory.
   */
  private launchQmma(
    q: DeviceQuant,
    name: string,
    m: number,
    tiles: number,
    K: number,
    args: KernelArg[],
  ): void {
    const xRows = m <= 8 ? 8 : 16;
    const rowBlocks = Math.ceil(tiles / 8);
    const slices = Math.ceil(K / qmmaSliceK);
    const kernel = this.qgemvKernel(q, `${name}_m${xRows}`);
    // x's slice as half, and for the integer schemes float sums of x per row by group (at most
    // one a step).
    const sliceK = Math.min(K, qmmaSliceK);
    const xBytes = sliceK * xRows * 2 + (q.scheme === "fp8" ? 0 : (sliceK / qmmaStepK(q.scheme)) * xRows * 4);
    const byMail = this.ctx.info.computeCapability[0] >= 9 && slices > 1 && slices <= qmmaMailSlices;
    let blocks: number;
    let sharedBytes = xBytes;
    let scratch: QmmaScratch | null = null;
    if (byMail) {
      ({ blocks, sharedBytes } = this.qmmaMailPlan(q, kernel, name, rowBlocks, slices, xRows, xBytes));
    } else {
      scratch = this.qmmaScratch(qmmaNeeds(rowBlocks, slices, xRows));
      const perSlice = Math.floor((qmmaResident * this.ctx.info.multiprocessors) / slices);
      blocks = qmmaResident > 0 ? Math.min(rowBlocks, Math.max(1, perSlice)) : rowBlocks;
    }
    this.ctx.launch(
      kernel,
      [blocks, 1, slices],
      [256, 1, 1],
      [
        ...args,
        { i32: q.groupSize },
        { i32: qmmaSliceK },
        { i32: rowBlocks },
        { ptr: scratch?.partials ?? 0 },
        { ptr: scratch?.counterPtr ?? 0 },
      ],
      name,
      sharedBytes,
      byMail ? slices : 0,
    );
  }

  /**
   * Blocks per slice and shared memory of a qmma product whose slices meet by mail: the fewest
   * rounds (row blocks a block loops over, each with its own mail slots) with which every
   * cluster of the grid is resident at once, as the driver counts them for that shared memory,
   * and the row blocks spread evenly over the rounds. A grid of more clusters than fit runs the
   * last in a second wave (H100, 8B int4, 16 rows: gate·up 53.4 µs a layer with 66 blocks a
   * slice, 35.7 with 56). With TACHYON_QMMA_RESIDENT=0, one row block a block.
   */
  private qmmaMailPlan(
    q: DeviceQuant,
    kernel: Handle,
    name: string,
    rowBlocks: number,
    slices: number,
    xRows: number,
    xBytes: number,
  ): { blocks: number; sharedBytes: number } {
    const key = `${q.scheme} ${name} ${xRows} ${rowBlocks} ${slices} ${xBytes}`;
    let plan = this.qmmaMailPlans.get(key);
    for (let rounds = 1; !plan; rounds++) {
      const sharedBytes = xBytes + qmmaMailBytes(rounds, slices, xRows);
      const fit =
        qmmaResident > 0 ? this.ctx.maxActiveClusters(kernel, 256, sharedBytes, slices, name) : Infinity;
      if (fit * rounds >= rowBlocks || rounds === qmmaMailRounds)
        plan = { blocks: Math.ceil(rowBlocks / rounds), sharedBytes };
    }
    this.qmmaMailPlans.set(key, plan);
    return plan;
  }

  /**
   * The space where qmma's slices of K meet (partial sums, and a zeroed counter per row of
   * blocks): first sized for this model's largest products, before any graph is captured, and
   * grown (outside a capture) for a product larger than those.
   */
  private qmmaScratch(needs = { partialBytes: 0, counters: 0 }): QmmaScratch {
    const have = this.qmmaSpace;
    if (have && needs.partialBytes <= have.partialBytes && needs.counters <= have.counters) return have;
    // Never smaller than before: a grown buffer keeps serving the product it grew for.
    let partialBytes = Math.max(needs.partialBytes, have?.partialBytes ?? 0);
    let counters = Math.max(needs.counters, have?.counters ?? 0);
    for (const [rows, K] of this.largestProducts()) {
      const n = qmmaNeeds(Math.ceil(rows / 128), Math.ceil(K / qmmaSliceK), 16); // 16: the most x rows
      partialBytes = Math.max(partialBytes, n.partialBytes);
      counters = Math.max(counters, n.counters);
    }
    if (have) {
      if (this.capturing)
        throw new CudaError(
          `internal: a tensor-core product inside a CUDA graph outgrew the space sized for it`,
        );
      this.ctx.synchronize();
      this.ctx.free(have.partials);
      this.ctx.free(have.counterPtr);
    }
    const counterPtr = this.ctx.alloc(counters * 4, "tensor-core product counters");
    this.ctx.upload(counterPtr, new Int32Array(counters));
    const partials = this.ctx.alloc(Math.max(partialBytes, 16), "tensor-core product partial sums");
    this.qmmaSpace = { partials, partialBytes, counterPtr, counters };
    return this.qmmaSpace;
  }

  /**
   * [tile rows, K] of the model's largest quantized products: gate·up (a gate and an up row per
   * output), q/k/v (each padded to 16 rows), o, down, the LM head, an MTP module's projection of
   * two hidden states.
   */
  private largestProducts(): [number, number][] {
    const H = this.cfg.hiddenSize;
    const I = this.cfg.intermediateSize;
    const qW = this.cfg.numHeads * this.cfg.headDim;
    const kvW = this.cfg.numKvHeads * this.cfg.headDim;
    return [
      [2 * I, H],
      [qW + 2 * kvW + 48, H],
      [H, qW],
      [H, I],
      [this.cfg.vocabSize, H],
      [H, 2 * H],
    ];
  }

  /**
   * Space for an int8 copy of `out` that its producing kernel fills, when the model has
   * integer weights (so the GEMV that reads it needs no quantize_x launch) and rows split into
   * blocks of 32; undefined otherwise.
   */
  private int8For(out: CudaTensor): Int8Rows | undefined {
    if (!this.intWeights || out.cols % 32 !== 0) return undefined;
    const n = out.rows * out.cols;
    out.int8 = { q: this.arena.alloc(n), scales: this.arena.alloc((n / 32) * 8) };
    return out.int8;
  }

  /**
   * Space for the plain half copy of a gate·up's output `out` that qmma_gate_up fills where an
   * integer down product of the same scheme would take it on the tensor cores (qmmaReadsHalf):
   * down's qmma stages x from it, and no quantize_x runs between the two. Not beside fp8 weights,
   * whose copies are scaled.
   */
  private plainHalfFor(out: CudaTensor, q: DeviceQuant, K: number): DevicePtr | undefined {
    if (this.fp8Weights || !this.tensorCoreRows(q, out.rows, K) || !this.qmmaReadsHalf(q, out.rows, out.cols))
      return undefined;
    out.plainHalf = this.arena.alloc(out.rows * out.cols * 2);
    return out.plainHalf;
  }

  /**
   * Whether an integer-weight product of `m` rows over K (at most one launch) runs on the tensor
   * cores, where it can stage x from a plain half copy.
   */
  private qmmaReadsHalf(q: DeviceQuant, m: number, K: number): boolean {
    return q.scheme !== "fp8" && m <= 16 && this.tensorCoreRows(q, m, K);
  }

  /** Space for the half copy of `out` that its producing kernel fills, when the model has fp8 weights. */
  private halfFor(out: CudaTensor): DevicePtr | undefined {
    if (!this.fp8Weights) return undefined;
    out.half = this.arena.alloc(out.rows * out.cols * 2);
    return out.half;
  }

  /** x · FP8_X_SCALE as half for the fp8-weight GEMV (0 for the other schemes, which do not read it). */
  private halfRows(x: Tensor, q: DeviceQuant): DevicePtr {
    if (q.scheme !== "fp8") return 0;
    const made = (x as CudaTensor).half;
    if (made) return made;
    const n = x.rows * x.cols;
    const out = this.arena.alloc(n * 2);
    this.launch("half_x", [Math.ceil(n / 256), 1, 1], 256, [
      { ptr: (x as CudaTensor).ptr },
      { ptr: out },
      { i32: n },
    ]);
    return out;
  }

  /**
   * x rounded to int8 per block of 32, with a (scale, sum) per block, for the integer-weight GEMV
   * (kernels/qgemv.cu); fp8 weights read the half copy instead (null pointers).
   */
  private int8Rows(x: Tensor, q: DeviceQuant): Int8Rows {
    if (q.scheme === "fp8") return { q: 0, scales: 0 };
    const made = (x as CudaTensor).int8;
    if (made) return made;
    const n = x.rows * x.cols;
    const out = { q: this.arena.alloc(n), scales: this.arena.alloc((n / 32) * 8) };
    this.launch("quantize_x", [x.rows, Math.ceil(x.cols / 256), 1], 256, [
      { ptr: (x as CudaTensor).ptr },
      { ptr: out.q },
      { ptr: out.scales },
      { i32: x.cols },
    ]);
    return out;
  }

  /**
   * A weight as bf16 for the tensor cores: itself, or for a quantized weight its dequantization
   * into the scratch buffer (stream order keeps one use from overwriting the previous one early).
   */
  private dense(w: Tensor): Tensor {
    const q = quantOf(w);
    if (!q) return w;
    this.dequantScratch ??= this.ctx.alloc(this.largestQuantized * 2, "dequantization scratch");
    const work = Math.ceil((w.rows * w.cols) / chunkWeights[q.scheme]);
    this.ctx.launch(
      this.qgemvKernel(q, "dequantize_bf16"),
      [Math.min(Math.ceil(work / 256), 4096), 1, 1],
      [256, 1, 1],
      [
        { ptr: (w as CudaTensor).ptr },
        { ptr: q.scales },
        { ptr: this.dequantScratch },
        { i32: w.rows },
        { i32: w.cols },
        { i32: q.groupSize },
      ],
      "dequantize_bf16",
    );
    return new CudaTensor(w.rows, w.cols, this.dequantScratch);
  }

  /**
   * Warps per output row for a GEMV over `rows` rows: the fewest (1, 2 or 4) that give one warp
   * for every warp slot of the GPU (`perSm` per multiprocessor), so short matrices still keep
   * every SM streaming.
   */
  private gemvSplit(rows: number, perSm = 64): number {
    const slots = this.ctx.info.multiprocessors * perSm;
    return rows >= slots ? 1 : 2 * rows >= slots ? 2 : 4;
  }

  /** x as bf16 (for tensor-core products): returns the device address of the copy. */
  private bf16Copy(x: Tensor): DevicePtr {
    const n = x.rows * x.cols;
    const ptr = this.arena.alloc(n * 2);
    this.launch("to_bf16", [Math.ceil(n / 256), 1, 1], 256, [
      { ptr: (x as CudaTensor).ptr },
      { ptr },
      { i32: n },
    ]);
    return ptr;
  }

  private tensorCoreLinear(
    out: CudaTensor,
    xb: DevicePtr,
    w: Tensor,
    bias?: Tensor,
    residual?: Tensor,
  ): void {
    const add = residual ? (residual as CudaTensor).ptr : undefined;
    this.lt!.matmul(out.ptr, xb, (w as CudaTensor).ptr, out.rows, w.rows, w.cols, add);
    if (bias) {
      const n = out.rows * out.cols;
      this.launch("add_bias", [Math.ceil(n / 256), 1, 1], 256, [
        { ptr: out.ptr },
        { ptr: (bias as CudaTensor).ptr },
        { i32: out.cols },
        { i32: n },
      ]);
    }
  }

  attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    kv: KvStorage,
    layer: number,
    _rope: RopeConfig,
    step: Step,
    p: AttentionParams,
  ): Tensor {
    const store = kv as CudaKvStorage;
    const s = step as CudaStep;
    const M = q.rows;
    const keys = store.keys + layer * store.layerBytes;
    const values = store.values + layer * store.layerBytes;
    const out = this.tensor(M, p.numHeads * p.headDim);
    const scale = 1 / Math.sqrt(p.headDim);
    if (this.usesPrefillAttention(M)) {
      this.launch("prefill_attention", [s.tileCount, p.numHeads, 1], 128, [
        { ptr: this.ropeAndStore(q, k, v, store, layer, s).ptr },
        { ptr: keys },
        { ptr: values },
        { ptr: s.positions },
        { ptr: s.blockTables },
        { ptr: s.tiles },
        { ptr: out.ptr },
        { i32: p.numKvHeads },
        { i32: s.maxBlocks },
        { i32: store.spec.blockSize },
        { i32: p.slidingWindow ?? 0 },
        { f32: scale },
      ]);
      return out;
    }
    // Runs of rows whose keys would not fit in the kernel's shared memory (MAX_FRESH in
    // kernels/attention.cu) have them rotated and cached by rope_store first.
    const rotate = s.mostFresh <= this.freshKeys;
    const qIn = rotate ? (q as CudaTensor) : this.ropeAndStore(q, k, v, store, layer, s);
    const { splits, wave } = this.attentionPlan(M, p.numKvHeads);
    const int8 = p.headDim % 32 === 0 ? this.int8For(out) : undefined;
    const half = this.halfFor(out);
    this.ctx.launch(
      this.kernels.get(wave ? "attention_decode_wave" : "attention_decode"),
      [M, p.numKvHeads, splits],
      [256, 1, 1],
      [
        { ptr: qIn.ptr },
        { ptr: (k as CudaTensor).ptr },
        { ptr: (v as CudaTensor).ptr },
        { ptr: keys },
        { ptr: values },
        { ptr: s.positions },
        { ptr: s.fresh },
        { ptr: s.slots },
        { ptr: s.blockTables },
        { ptr: this.invFreq },
        { ptr: out.ptr },
        { ptr: int8?.q ?? 0 },
        { ptr: int8?.scales ?? 0 },
        { ptr: half ?? 0 },
        { i32: p.numKvHeads },
        { i32: s.maxBlocks },
        { i32: store.spec.blockSize },
        { i32: p.slidingWindow ?? 0 },
        { f32: scale },
        { i32: rotate ? 1 : 0 },
      ],
      "attention_decode",
      0,
      // A cluster launch on Hopper even of one block: the blocks meet by st.async (kernels/attention.cu).
      this.ctx.info.computeCapability[0] >= 9 ? splits : 0,
    );
    return out;
  }

  /**
   * How a decode attention step of M rows is launched: the blocks each row's keys are split over
   * (a cluster whose partial results meet in distributed shared memory on Hopper, at most 8), and
   * whether it takes the variant that loads its first cached keys before its wait
   * (attention_decode_wave: its registers leave one block a multiprocessor, so only for steps
   * whose blocks all fit at once).
   *
   * On Hopper, the most splits with which every cluster of the wave variant is resident at once,
   * as the driver counts them (cuOccupancyMaxActiveClusters). A cluster takes all its blocks from
   * one GPC, so fewer clusters fit than the multiprocessors suggest: on the H100, 16 clusters of 8
   * (a verify step of 2 rows of 8 kv heads) are 128 blocks on 132 multiprocessors, yet only 15
   * fit, and the last ran in a second wave (9.3 µs a layer against 4.8 for one row; docs/BENCHMARKS.md
   * session 23). Steps with more clusters than fit even unsplit take the plain kernel, split so
   * that about two blocks a multiprocessor run (its registers allow two), as do steps of more than
   * maxGemvRows rows (batched decode: rows enough to fill the GPU, one block each) and an explicit
   * attentionBlocks. TACHYON_ATTENTION_SPLITS forces the splits for measurements.
   */
  private attentionPlan(M: number, kvHeads: number): { splits: number; wave: boolean } {
    const key = M * 1024 + kvHeads;
    let plan = this.attentionPlans.get(key);
    if (plan) return plan;
    const hopper = this.ctx.info.computeCapability[0] >= 9;
    const clusters = M * kvHeads;
    const waveFits = (splits: number) =>
      !hopper
        ? clusters * splits <= this.ctx.info.multiprocessors
        : clusters <=
          this.ctx.maxActiveClusters(this.kernels.get("attention_decode_wave"), 256, 0, splits, "attention");
    const forced = optionalNumber(process.env.TACHYON_ATTENTION_SPLITS);
    if (forced !== undefined) plan = { splits: forced, wave: waveFits(forced) };
    else if (M > maxGemvRows || !hopper) plan = { splits: 1, wave: waveFits(1) };
    else if (this.attentionBlocks === undefined)
      for (let splits = 8; splits >= 1 && !plan; splits--)
        if (waveFits(splits)) plan = { splits, wave: true };
    if (!plan) {
      const blocks = this.attentionBlocks ?? 2 * this.ctx.info.multiprocessors;
      const splits = Math.max(1, Math.min(8, Math.floor(blocks / clusters)));
      plan = { splits, wave: waveFits(splits) };
    }
    this.attentionPlans.set(key, plan);
    return plan;
  }

  /** Whether a step of M rows runs the tensor-core prefill attention (head sizes up to 128). */
  private usesPrefillAttention(M: number): boolean {
    return M >= prefillAttentionMinRows && this.cfg.headDim % 16 === 0 && this.cfg.headDim <= 128;
  }

  /** Rotates q and k (rope) and writes k and v to the cache: returns the rotated q. */
  private ropeAndStore(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    store: CudaKvStorage,
    layer: number,
    s: CudaStep,
  ): CudaTensor {
    const { headDim, numKvHeads } = store.spec;
    const numHeads = q.cols / headDim;
    const out = this.tensor(q.rows, q.cols);
    this.launch("rope_store", [q.rows, numHeads + numKvHeads, 1], headDim / 2, [
      { ptr: (q as CudaTensor).ptr },
      { ptr: (k as CudaTensor).ptr },
      { ptr: (v as CudaTensor).ptr },
      { ptr: out.ptr },
      { ptr: store.keys + layer * store.layerBytes },
      { ptr: store.values + layer * store.layerBytes },
      { ptr: s.positions },
      { ptr: s.slots },
      { ptr: this.invFreq },
      { i32: numHeads },
      { i32: numKvHeads },
    ]);
    return out;
  }

  concatCols(a: Tensor, b: Tensor): Tensor {
    const out = this.tensor(a.rows, a.cols + b.cols);
    this.launch("concat_cols", [a.rows, 1, 1], 256, [
      { ptr: (a as CudaTensor).ptr },
      { ptr: (b as CudaTensor).ptr },
      { ptr: out.ptr },
      { i32: a.cols },
      { i32: b.cols },
    ]);
    return out;
  }

  gatherOutputRows(x: Tensor, step: Step): Tensor {
    const s = step as CudaStep;
    const out = this.tensor(s.rows.outputRows.length, x.cols);
    if (out.rows === 0) return out;
    this.launch("gather_rows", [out.rows, 1, 1], 256, [
      { ptr: (x as CudaTensor).ptr },
      { ptr: s.outputRows },
      { ptr: out.ptr },
      { i32: x.cols },
    ]);
    return out;
  }

  sliceRows(x: Tensor, start: number, count: number): Tensor {
    return new CudaTensor(count, x.cols, (x as CudaTensor).ptr + start * x.cols * 4);
  }

  argmaxRows(x: Tensor): Int32Array {
    const ids = this.arena.alloc(x.rows * 4);
    this.launchArgmax(x, ids);
    const out = new Int32Array(x.rows);
    this.ctx.download(ids, out);
    return out;
  }

  /**
   * Each row's arg-max into `ids`, a row split over blocks of 1024 values (float4s when the row
   * allows; the kernel's 256 threads × 4 loads), at most argmaxParts: 32 for an 8B vocabulary,
   * whose row one block took 8.9 µs to read. With `advanceTable`, `ids` is the token of a one-row
   * step's rows with block tables that wide, which the kernel moves on by a position
   * (followsOnDevice). With `embedded`, each row's id also picks its row of that table.
   */
  private launchArgmax(
    x: Tensor,
    ids: DevicePtr,
    advanceTable?: number,
    embedded?: { table: Tensor; rows: CudaTensor },
  ): void {
    const units = x.cols % 4 === 0 ? x.cols / 4 : x.cols;
    const parts = Math.min(argmaxParts, Math.ceil(units / 1024));
    for (let r0 = 0; r0 < x.rows; r0 += this.maxStepRows) {
      const rows = Math.min(this.maxStepRows, x.rows - r0);
      this.launch("argmax_rows", [rows, parts, 1], 256, [
        { ptr: (x as CudaTensor).ptr + r0 * x.cols * 4 },
        { ptr: ids + r0 * 4 },
        { i32: x.cols },
        { ptr: this.argmaxSpace.parts },
        { ptr: this.argmaxSpace.done },
        { ptr: advanceTable === undefined ? 0 : ids },
        { i32: advanceTable ?? 0 },
        { i32: this.blockSize },
        { ptr: embedded ? (embedded.table as CudaTensor).ptr : 0 },
        { ptr: embedded ? embedded.rows.ptr + r0 * embedded.rows.cols * 4 : 0 },
        { i32: embedded?.table.cols ?? 0 },
      ]);
    }
  }

  sampleRows(logits: Tensor, rows: readonly DeviceDraw[]): Int32Array {
    if (logits.cols > 256 * 1024) throw new RangeError("device sampling supports vocabularies up to 262144");
    // One upload: per row 11 words of SampleParams, then all rows' history tokens and counts.
    const historyLength = rows.reduce((n, r) => n + r.tokens.length, 0);
    const words = new ArrayBuffer(4 * (11 * rows.length + 2 * historyLength));
    const f32 = new Float32Array(words);
    const i32 = new Int32Array(words);
    const u32 = new Uint32Array(words);
    const tokensAt = 11 * rows.length;
    const countsAt = tokensAt + historyLength;
    let offset = 0;
    rows.forEach((r, i) => {
      const b = 11 * i;
      f32[b] = r.params.temperature;
      i32[b + 1] = r.params.topK;
      f32[b + 2] = r.params.topP;
      f32[b + 3] = r.params.minP;
      u32[b + 4] = r.random >>> 0;
      f32[b + 5] = r.params.repetitionPenalty;
      f32[b + 6] = r.params.presencePenalty;
      f32[b + 7] = r.params.frequencyPenalty;
      i32[b + 8] = offset;
      i32[b + 9] = r.tokens.length;
      i32.set(r.tokens, tokensAt + offset);
      i32.set(r.outputCounts, countsAt + offset);
      offset += r.tokens.length;
    });
    const base = this.arena.alloc(words.byteLength);
    this.staging.upload(base, i32);
    const ids = this.arena.alloc(rows.length * 4);
    this.launch("sample_rows", [rows.length, 1, 1], 1024, [
      { ptr: (logits as CudaTensor).ptr },
      { i32: logits.cols },
      { ptr: base },
      { ptr: base + 4 * tokensAt },
      { ptr: base + 4 * countsAt },
      { ptr: ids },
    ]);
    const out = new Int32Array(rows.length);
    this.ctx.download(ids, out);
    return out;
  }

  captureGraph(body: () => Tensor): CapturedGraph {
    if (this.intWeights || this.fp8Weights) this.qmmaScratch(); // no allocation inside a capture
    let output: Tensor | undefined;
    this.capturing = true;
    let exec: Handle;
    try {
      exec = this.ctx.capture(() => {
        output = body();
      });
    } finally {
      this.capturing = false;
    }
    const graph: CudaGraph = { exec, output: output!, arenaEnd: this.arena.used, rowsAt: this.rowsAt };
    return graph;
  }

  replayGraph(graph: CapturedGraph): Tensor {
    const g = graph as CudaGraph;
    if (g.rowsAt !== this.rowsAt) {
      throw new CudaError(
        `a graph captured on step rows at ${g.rowsAt} was replayed on rows at ${this.rowsAt}`,
      );
    }
    this.ctx.replay(g.exec);
    this.arena.skipTo(g.arenaEnd);
    return g.output;
  }

  /** Device-to-device copy bandwidth (bytes read + written per second) over `bytes`-sized buffers. */
  copyBandwidth(bytes = 2 ** 30, repeats = 20): number {
    const a = this.ctx.alloc(bytes, "the bandwidth probe");
    const b = this.ctx.alloc(bytes, "the bandwidth probe");
    try {
      this.ctx.fill32(a, 0x3f800000, bytes / 4);
      this.ctx.copyAsync(b, a, bytes); // warm-up
      const ms = this.ctx.time(() => {
        for (let i = 0; i < repeats; i++) this.ctx.copyAsync(i % 2 ? a : b, i % 2 ? b : a, bytes);
      });
      return (2 * bytes * repeats) / (ms / 1000);
    } finally {
      this.ctx.free(a, bytes);
      this.ctx.free(b, bytes);
    }
  }

  read(x: Tensor): Float32Array {
    const out = new Float32Array(x.rows * x.cols);
    this.ctx.download((x as CudaTensor).ptr, out);
    return out;
  }
}

/**
 * Upper bound of one step's activation bytes for `rows` rows: every tensor the forward pass
 * creates, for every layer (MTP modules included), plus step metadata.
 */
export function activationBytes(cfg: ModelConfig, rows: number): number {
  const H = cfg.hiddenSize;
  const qW = cfg.numHeads * cfg.headDim;
  const kvW = cfg.numKvHeads * cfg.headDim;
  const I = cfg.intermediateSize;
  // q, k, v; rotated q; attention output; o, two residual sums and two norms, down; gate, up and
  // their product kept apart for tensor cores; bf16 copies of the products' inputs (half a float
  // each); int8 copies of the norms', attention's and gate·up's outputs (1.25 bytes each; the
  // last made by quantize_x) for integer weights; half copies of the same (half a float each) for
  // fp8 weights.
  const perLayer =
    7 * H +
    4 * qW +
    4 * kvW +
    4 * I +
    (2 * H + qW + I) * 0.3125 +
    (2 * H + qW + I) * 0.5 +
    (cfg.qkNorm ? qW + kvW : 0);
  const layers = cfg.numLayers + cfg.numMtpModules;
  const floatsPerRow = layers * (perLayer + 16) + 4 * H + 2 * cfg.vocabSize;
  const metadataPerRow = 8 + Math.ceil(cfg.maxPositions / 16);
  return Math.ceil((rows * (floatsPerRow + metadataPerRow) * 4 + layers * 64 * 256) * 1.25) + (1 << 20);
}
