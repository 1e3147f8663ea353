/**
 * The CPU backend: float32 everywhere, plain TypeScript. It is the reference every other backend
 * is checked against, and the default where no GPU exists. Weights of any 16-bit or 8-bit float
 * dtype are widened to float32 at load time, trading memory for a simple, fast inner loop.
 */
import type {
  AttentionParams,
  Backend,
  GateUpOptions,
  KvCacheSpec,
  KvStorage,
  LinearOptions,
  RowNorm,
  Step,
  StepRows,
  Tensor,
} from "../backend.js";
import { float32ToBf16Bits, toFloat32, type DType } from "../../model/dtype.js";
import { Rng } from "../../engine/rng.js";
import { dequantize } from "../../quant/dequantize.js";
import type { QuantizedWeight, QuantScheme } from "../../quant/quantized-weight.js";
import { randomQuantPlan } from "../../quant/random-codes.js";
import { ropeAngles, type RopeConfig } from "../../model/rope.js";
import { dot, matmulTransposed, rmsNorm, ropeRow, softmax } from "./kernels.js";

export class CpuTensor implements Tensor {
  constructor(
    readonly rows: number,
    readonly cols: number,
    readonly data: Float32Array = new Float32Array(rows * cols),
  ) {}
}

class CpuKvStorage implements KvStorage {
  /** Per layer: [numBlocks * blockSize slots, numKvHeads, headDim]. */
  readonly keys: Float32Array[];
  readonly values: Float32Array[];
  readonly bytes: number;
  constructor(readonly spec: KvCacheSpec) {
    const perLayer = spec.numBlocks * spec.blockSize * spec.numKvHeads * spec.headDim;
    this.keys = Array.from({ length: spec.numLayers }, () => new Float32Array(perLayer));
    this.values = Array.from({ length: spec.numLayers }, () => new Float32Array(perLayer));
    this.bytes = 2 * spec.numLayers * perLayer * 4;
  }
}

function bf16Round(x: number): number {
  const bits = new Uint32Array([float32ToBf16Bits(x) << 16]);
  return new Float32Array(bits.buffer)[0];
}

function t(x: Tensor): CpuTensor {
  return x as CpuTensor;
}

export class CpuBackend implements Backend {
  readonly name = "cpu";
  private scores = new Float64Array(1024);
  private cos = new Float32Array(0);
  private sin = new Float32Array(0);

  weight(_name: string, dtype: DType, shape: readonly number[], bytes: Uint8Array): Tensor {
    const rows = shape.length === 2 ? shape[0] : 1;
    const cols = shape.length === 2 ? shape[1] : shape[0];
    return new CpuTensor(rows, cols, toFloat32(bytes, dtype));
  }

  quantizedWeight(_name: string, w: QuantizedWeight): Tensor {
    return new CpuTensor(w.rows, w.cols, dequantize(w));
  }

  randomQuantizedWeight(
    shape: readonly [number, number],
    scheme: QuantScheme,
    groupSize: number,
    dist: { mean: number; std: number; seed: number },
  ): Tensor {
    const plan = randomQuantPlan(scheme, shape, groupSize, dist);
    const rng = new Rng(dist.seed);
    const words = Uint32Array.from({ length: plan.bytes / 4 }, () => rng.nextU32() & plan.mask);
    return this.quantizedWeight("random", {
      ...plan,
      codes: new Uint8Array(words.buffer),
      scales: new Float32Array(plan.groups).fill(plan.scale),
      offsets: plan.offset === null ? null : new Float32Array(plan.groups).fill(plan.offset),
    });
  }

  randomWeight(shape: readonly number[], dist: { mean: number; std: number; seed: number }): Tensor {
    const rows = shape.length === 2 ? shape[0] : 1;
    const cols = shape.length === 2 ? shape[1] : shape[0];
    const rng = new Rng(dist.seed);
    const data = new Float32Array(rows * cols);
    for (let i = 0; i < data.length; i++) {
      const r = Math.sqrt(-2 * Math.log(1 - rng.nextFloat()));
      // Rounded through bf16 like the GPU's random weights, so both hold the same kind of values.
      data[i] = bf16Round(dist.mean + dist.std * r * Math.cos(2 * Math.PI * rng.nextFloat()));
    }
    return new CpuTensor(rows, cols, data);
  }

  createKvCache(spec: KvCacheSpec): KvStorage {
    return new CpuKvStorage(spec);
  }

  resetActivations(): void {
    // Activations are garbage-collected typed arrays.
  }

  prepareStep(rows: StepRows): Step {
    return { rows };
  }

  /** The ids are chosen at once; embed reads them from the step's tokens as for any step. */
  prepareFedStep(rows: StepRows, from: Tensor): { step: Step; ids: () => Int32Array } {
    const ids = this.argmaxRows(from);
    if (ids.length !== rows.tokens.length) {
      throw new RangeError(
        `prepareFedStep: ${ids.length} rows of logits for a step of ${rows.tokens.length} tokens`,
      );
    }
    rows.tokens.set(ids);
    return { step: { rows }, ids: () => ids };
  }

  embed(table: Tensor, step: Step): Tensor {
    const tokens = step.rows.tokens;
    const tab = t(table);
    const out = new CpuTensor(tokens.length, tab.cols);
    for (let m = 0; m < tokens.length; m++) {
      const id = tokens[m];
      if (id < 0 || id >= tab.rows)
        throw new RangeError(`token id ${id} outside the vocabulary (0..${tab.rows - 1})`);
      out.data.set(tab.data.subarray(id * tab.cols, (id + 1) * tab.cols), m * tab.cols);
    }
    return out;
  }

  rmsNorm(x: Tensor, weight: Tensor, eps: number): Tensor {
    const out = new CpuTensor(x.rows, x.cols);
    rmsNorm(t(x).data, t(weight).data, eps, out.data);
    return out;
  }

  linear(x: Tensor, w: Tensor, o: LinearOptions = {}): Tensor {
    const xn = this.normed(x, o.norm);
    const out = new CpuTensor(x.rows, w.rows);
    matmulTransposed(t(xn).data, t(w).data, out.data, x.rows, x.cols, w.rows, o.bias && t(o.bias).data);
    if (o.residual) {
      const r = t(o.residual).data;
      for (let i = 0; i < r.length; i++) out.data[i] += r[i];
    }
    return out;
  }

  linearMany(
    x: Tensor,
    ws: readonly Tensor[],
    biases: readonly (Tensor | undefined)[],
    norm?: RowNorm,
  ): Tensor[] {
    const xn = this.normed(x, norm);
    return ws.map((w, i) => this.linear(xn, w, { bias: biases[i] }));
  }

  gateUp(x: Tensor, gate: Tensor, up: Tensor, o: GateUpOptions = {}): Tensor {
    const xn = this.normed(x, o.norm);
    const g = t(this.linear(xn, gate, { bias: o.gateBias })).data;
    const u = t(this.linear(xn, up, { bias: o.upBias })).data;
    const out = new CpuTensor(x.rows, gate.rows);
    for (let i = 0; i < g.length; i++) out.data[i] = (g[i] / (1 + Math.exp(-g[i]))) * u[i];
    return out;
  }

  private normed(x: Tensor, norm: RowNorm | undefined): Tensor {
    return norm ? this.rmsNorm(x, norm.weight, norm.eps) : x;
  }

  attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    kv: KvStorage,
    layer: number,
    rope: RopeConfig,
    step: Step,
    p: AttentionParams,
  ): Tensor {
    this.writeKv(kv, layer, this.rope(k, rope, p.headDim, step), v, step);
    return this.attend(this.rope(q, rope, p.headDim, step), kv, layer, step, p);
  }

  private rope(x: Tensor, rope: RopeConfig, headDim: number, step: Step): Tensor {
    const positions = step.rows.positions;
    const out = new CpuTensor(x.rows, x.cols, t(x).data.slice());
    if (this.cos.length !== headDim / 2) {
      this.cos = new Float32Array(headDim / 2);
      this.sin = new Float32Array(headDim / 2);
    }
    for (let m = 0; m < x.rows; m++) {
      ropeAngles(rope, positions[m], this.cos, this.sin);
      ropeRow(out.data, m * x.cols, x.cols / headDim, headDim, this.cos, this.sin);
    }
    return out;
  }

  private writeKv(kv: KvStorage, layer: number, k: Tensor, v: Tensor, step: Step): void {
    const slots = step.rows.slots;
    const store = kv as CpuKvStorage;
    const width = k.cols; // numKvHeads * headDim
    for (let m = 0; m < k.rows; m++) {
      store.keys[layer].set(t(k).data.subarray(m * width, (m + 1) * width), slots[m] * width);
      store.values[layer].set(t(v).data.subarray(m * width, (m + 1) * width), slots[m] * width);
    }
  }

  /** Causal attention of each (rotated) query row over the cached keys and values. */
  private attend(q: Tensor, kv: KvStorage, layer: number, step: Step, p: AttentionParams): Tensor {
    const batch = step.rows;
    const store = kv as CpuKvStorage;
    const { blockSize } = store.spec;
    const keys = store.keys[layer];
    const values = store.values[layer];
    const qd = t(q).data;
    const out = new CpuTensor(q.rows, q.cols);
    const od = out.data;
    const group = p.numHeads / p.numKvHeads;
    const kvWidth = p.numKvHeads * p.headDim;
    const scale = 1 / Math.sqrt(p.headDim);
    for (let m = 0; m < q.rows; m++) {
      const pos = batch.positions[m];
      const table = batch.blockTables[m];
      const first = p.slidingWindow === null ? 0 : Math.max(0, pos - p.slidingWindow + 1);
      const n = pos - first + 1;
      if (this.scores.length < n) this.scores = new Float64Array(2 * n);
      const s = this.scores;
      for (let h = 0; h < p.numHeads; h++) {
        const qo = m * q.cols + h * p.headDim;
        const headOffset = Math.floor(h / group) * p.headDim;
        for (let j = first; j <= pos; j++) {
          const slot = table[Math.floor(j / blockSize)] * blockSize + (j % blockSize);
          s[j - first] = dot(qd, qo, keys, slot * kvWidth + headOffset, p.headDim) * scale;
        }
        softmax(s, n);
        for (let j = first; j <= pos; j++) {
          const slot = table[Math.floor(j / blockSize)] * blockSize + (j % blockSize);
          const vo = slot * kvWidth + headOffset;
          const w = s[j - first];
          for (let d = 0; d < p.headDim; d++) od[qo + d] += w * values[vo + d];
        }
      }
    }
    return out;
  }

  concatCols(a: Tensor, b: Tensor): Tensor {
    const out = new CpuTensor(a.rows, a.cols + b.cols);
    for (let r = 0; r < a.rows; r++) {
      out.data.set(t(a).data.subarray(r * a.cols, (r + 1) * a.cols), r * out.cols);
      out.data.set(t(b).data.subarray(r * b.cols, (r + 1) * b.cols), r * out.cols + a.cols);
    }
    return out;
  }

  sliceRows(x: Tensor, start: number, count: number): Tensor {
    return new CpuTensor(count, x.cols, t(x).data.subarray(start * x.cols, (start + count) * x.cols));
  }

  gatherOutputRows(x: Tensor, step: Step): Tensor {
    const rows = step.rows.outputRows;
    const out = new CpuTensor(rows.length, x.cols);
    for (let i = 0; i < rows.length; i++) {
      out.data.set(t(x).data.subarray(rows[i] * x.cols, (rows[i] + 1) * x.cols), i * x.cols);
    }
    return out;
  }

  argmaxRows(x: Tensor): Int32Array {
    const d = t(x).data;
    return Int32Array.from({ length: x.rows }, (_, r) => {
      let best = 0;
      for (let c = 1; c < x.cols; c++) if (d[r * x.cols + c] > d[r * x.cols + best]) best = c;
      return best;
    });
  }

  read(x: Tensor): Float32Array {
    return t(x).data;
  }
}
