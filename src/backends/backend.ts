/**
 * The narrow boundary between a model definition and the hardware. A model's forward pass is
 * written once against these operations (src/model/transformer.ts); each backend implements
 * them. Operations take and return opaque tensors of rows: a step's input is M token rows, from
 * one or many sequences, prefill or decode alike — batch 1 is just M rows of one sequence.
 */
import type { DType } from "../model/dtype.js";
import type { RopeConfig } from "../model/rope.js";
import type { SamplingParams } from "../engine/sampling.js";
import type { QuantizedWeight, QuantScheme } from "../quant/quantized-weight.js";

/** A backend-owned 2-D tensor [rows, cols]; the storage behind it is the backend's business. */
export interface Tensor {
  readonly rows: number;
  readonly cols: number;
}

/** Shape of the paged KV cache: numBlocks blocks of blockSize token slots, for every layer. */
export interface KvCacheSpec {
  numLayers: number;
  numBlocks: number;
  blockSize: number;
  numKvHeads: number;
  headDim: number;
}

/** The KV cache storage a backend allocates once; the engine hands out its blocks. */
export interface KvStorage {
  readonly spec: KvCacheSpec;
  /** Bytes held, for reporting. */
  readonly bytes: number;
}

/**
 * The host-side description of one step's M rows: which token each row holds, its position in its
 * sequence, the cache slot its key and value go to, its sequence's block table (so attention can
 * find earlier keys), and which rows' outputs are wanted.
 */
export interface StepRows {
  tokens: Int32Array;
  positions: Int32Array;
  /** Flat cache slot (block * blockSize + offset) each row's key/value is written to. */
  slots: Int32Array;
  /** Block table of each row's sequence (rows of the same sequence share one array). */
  blockTables: readonly Int32Array[];
  /** Rows picked by gatherOutputRows, in order (usually each sequence's last row). */
  outputRows: Int32Array;
}

/**
 * A step's rows as the backend holds them (a GPU backend uploads them once per step into fixed
 * buffers, so a captured graph can replay the step with new rows).
 */
export interface Step {
  readonly rows: StepRows;
}

/** One row's sampling settings and history for Backend.sampleRows. */
export interface DeviceDraw {
  params: SamplingParams;
  /** Tokens seen so far (prompt ∪ output) and their counts in the output. */
  tokens: Int32Array;
  outputCounts: Int32Array;
  /** Random 32-bit word for this draw. */
  random: number;
}

/** A captured step: replaying it reproduces `output` for new rows. */
export interface CapturedGraph {
  readonly output: Tensor;
}

export interface AttentionParams {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** Attend only to the last `slidingWindow` positions (current included), or null for all. */
  slidingWindow: number | null;
}

/**
 * An RMSNorm handed to the products that read its output (rmsNorm(x, weight, eps) per row), so
 * that a backend can fold it into their kernels instead of running it first.
 */
export interface RowNorm {
  weight: Tensor;
  eps: number;
}

/** What a product x · wᵀ may fold in. */
export interface LinearOptions {
  /** Added to every output row. */
  bias?: Tensor;
  /** The product is of rmsNorm(x) with this norm, not of x. */
  norm?: RowNorm;
  /** Added to the result: the residual stream that a block's last product writes back into. */
  residual?: Tensor;
}

/** What gateUp may fold in: the biases of its two products, and the norm of its input. */
export interface GateUpOptions {
  gateBias?: Tensor;
  upBias?: Tensor;
  norm?: RowNorm;
}

export interface Backend {
  /** Most rows one step may have, where the backend has a limit (its activation buffers). */
  readonly maxStepRows?: number;
  readonly name: string;
  /** Takes a weight from checkpoint bytes; the backend chooses its storage format. */
  weight(name: string, dtype: DType, shape: readonly number[], bytes: Uint8Array): Tensor;
  /**
   * Takes a linear layer's weight stored below 16 bits (src/quant/quantized-weight.ts). The
   * result is usable wherever linear, linearMany and gateUp take a weight.
   */
  quantizedWeight(name: string, w: QuantizedWeight): Tensor;
  /** A weight of normal random values (bf16-rounded), made where the weights live. */
  randomWeight(shape: readonly number[], dist: { mean: number; std: number; seed: number }): Tensor;
  /**
   * A quantized weight of random codes whose values have the given mean and std (one scale and
   * offset for the tensor), made where the weights live: for benchmarks of quantized models.
   */
  randomQuantizedWeight(
    shape: readonly [number, number],
    scheme: QuantScheme,
    groupSize: number,
    dist: { mean: number; std: number; seed: number },
  ): Tensor;
  createKvCache(spec: KvCacheSpec): KvStorage;
  /**
   * Optional: throws a clear error, before any weight is loaded, when weights of `weightBytes`
   * (16 bits per parameter, or a quantized weight's stored size) with a KV cache of
   * `contextTokens` do not fit in `fraction` of the device's memory.
   */
  checkCapacity?(weightBytes: number, contextTokens: number, fraction: number): void;
  /** Frees every activation of the previous step: called by the executor before each step. */
  resetActivations(): void;
  /** Makes a step's row metadata available to the operations below. */
  prepareStep(rows: StepRows): Step;
  /**
   * prepareStep for a step whose token ids are argmaxRows of `from` (the logits of the step
   * enqueued just before, nothing run between them; rows.tokens are placeholders), chosen on the
   * device without waiting for them; `ids` waits for them. The host can then enqueue step n + 1
   * before it reads step n's token, and the device never waits for the host between them. A
   * backend may pick the ids' rows of `embedTable` in the same pass: embed(embedTable, step)
   * then returns them without a pass of its own.
   */
  prepareFedStep(rows: StepRows, from: Tensor, embedTable?: Tensor): { step: Step; ids: () => Int32Array };

  /** Rows of `table` picked by each row's token id: [M, hidden]. */
  embed(table: Tensor, step: Step): Tensor;
  /** RMSNorm over each contiguous group of weight.cols elements (a whole row, or one head). */
  rmsNorm(x: Tensor, weight: Tensor, eps: number): Tensor;
  /** x · wᵀ (+ bias, + residual; of rmsNorm(x) with o.norm): [M, K] × [N, K]ᵀ → [M, N]. */
  linear(x: Tensor, w: Tensor, o?: LinearOptions): Tensor;
  /**
   * Several products of the same x (q, k, v; of rmsNorm(x) with `norm`): one pass where the
   * backend can fuse them.
   */
  linearMany(
    x: Tensor,
    ws: readonly Tensor[],
    biases: readonly (Tensor | undefined)[],
    norm?: RowNorm,
  ): Tensor[];
  /**
   * silu(x · gateᵀ + gateBias) * (x · upᵀ + upBias), x first normed with o.norm: the MLP's
   * input side.
   */
  gateUp(x: Tensor, gate: Tensor, up: Tensor, o?: GateUpOptions): Tensor;
  /**
   * Causal attention of each query row over its sequence's keys/values: [M, heads * headDim].
   * First rotates each head of q and k by its row's position (rope) and writes k and v into each
   * row's cache slot of `layer`, so a backend can do all of it in one pass.
   */
  attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    kv: KvStorage,
    layer: number,
    rope: RopeConfig,
    step: Step,
    p: AttentionParams,
  ): Tensor;
  /** [a | b]: rows of a followed by the same rows of b, side by side. */
  concatCols(a: Tensor, b: Tensor): Tensor;
  /** The step's output rows of x, in order. */
  gatherOutputRows(x: Tensor, step: Step): Tensor;
  /** Rows [start, start + count) of x. */
  sliceRows(x: Tensor, start: number, count: number): Tensor;
  /** Index of the largest entry of each row (ties → lowest), copied to the host. */
  argmaxRows(x: Tensor): Int32Array;
  /**
   * Optional: draws one token per row on the device (penalties, temperature, top-k, top-p,
   * min-p), so only the ids cross to the host. Same semantics as the host Sampler.
   */
  sampleRows?(logits: Tensor, rows: readonly DeviceDraw[]): Int32Array;
  /** Copies a tensor to the host as float32, row-major; the caller owns the returned array. */
  read(x: Tensor): Float32Array;
  /**
   * Optional: records the operations `body` issues as a replayable graph (a GPU backend's CUDA
   * graph). Replaying re-runs them on the current step's rows, which prepareStep has placed at
   * the same device addresses as during capture.
   */
  captureGraph?(body: () => Tensor): CapturedGraph;
  replayGraph?(graph: CapturedGraph): Tensor;
}
