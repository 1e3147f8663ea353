/**
 * The decoder-only transformer shared by Llama, Mistral, Qwen2 and Qwen3, written once against
 * the Backend operations. Architecture differences are switches in ModelConfig (biases, q/k
 * norm, sliding window, rope variant), not separate code paths. Backends that fuse kernels or
 * capture graphs lower this same sequence of operations.
 */
import type { Backend, KvStorage, Step, Tensor } from "../backends/backend.js";
import type { ModelConfig } from "./config.js";
import type { MtpWeights } from "./mtp.js";

export interface LayerWeights {
  inputNorm: Tensor;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  o: Tensor;
  qBias?: Tensor;
  kBias?: Tensor;
  vBias?: Tensor;
  oBias?: Tensor;
  qNorm?: Tensor;
  kNorm?: Tensor;
  postNorm: Tensor;
  gate: Tensor;
  up: Tensor;
  down: Tensor;
  gateBias?: Tensor;
  upBias?: Tensor;
  downBias?: Tensor;
}

export interface ModelWeights {
  embed: Tensor;
  layers: LayerWeights[];
  norm: Tensor;
  lmHead: Tensor;
  /** Multi-token-prediction modules, depth 1 first (empty for most models). */
  mtp: MtpWeights[];
}

/**
 * The last decoder layer's output for every row, before the final norm: [M, hidden]. The
 * multi-token-prediction modules start from these states.
 */
export function forwardHidden(
  b: Backend,
  w: ModelWeights,
  cfg: ModelConfig,
  kv: KvStorage,
  step: Step,
): Tensor {
  return decoderLayers(b, w.layers, 0, cfg, kv, b.embed(w.embed, step), step);
}

/**
 * Logits [outputRows, vocab] of the step's output rows of the final hidden states. A step whose
 * every row is an output, in order (a decode step, a verify step keeping all logits), reads the
 * hidden states themselves: no gather (on the GPU one kernel fewer, 2.4 µs of an 8B decode step).
 * A captured graph replays only steps with as many outputs as rows, which the executor makes in
 * increasing order, so the same rows.
 */
export function outputLogits(
  b: Backend,
  w: ModelWeights,
  cfg: ModelConfig,
  hidden: Tensor,
  step: Step,
): Tensor {
  const rows = step.rows.outputRows;
  const all = rows.length === hidden.rows && rows.every((r, i) => r === i);
  return b.linear(all ? hidden : b.gatherOutputRows(hidden, step), w.lmHead, {
    norm: { weight: w.norm, eps: cfg.rmsNormEps },
  });
}

/**
 * Pre-norm decoder layers: x += attention(norm(x)); x += mlp(norm(x)). Each norm is handed to
 * the products that read it and each residual add to the product that ends its block, so a
 * backend can fold both into those products' kernels (the CUDA backend does for one-row decode
 * steps: no norm kernel runs between the products). Layer i uses KV-cache layer firstKvLayer + i.
 */
export function decoderLayers(
  b: Backend,
  layers: readonly LayerWeights[],
  firstKvLayer: number,
  cfg: ModelConfig,
  kv: KvStorage,
  x: Tensor,
  step: Step,
): Tensor {
  layers.forEach((lw, i) => {
    x = attention(b, lw, cfg, kv, firstKvLayer + i, x, step);
    x = mlp(b, lw, cfg, x);
  });
  return x;
}

/** x + o(attention(q, k, v of norm(x))). */
function attention(
  b: Backend,
  lw: LayerWeights,
  cfg: ModelConfig,
  kv: KvStorage,
  kvLayer: number,
  x: Tensor,
  step: Step,
): Tensor {
  const norm = { weight: lw.inputNorm, eps: cfg.rmsNormEps };
  const qkv = b.linearMany(x, [lw.q, lw.k, lw.v], [lw.qBias, lw.kBias, lw.vBias], norm);
  let [q, k] = qkv;
  const v = qkv[2];
  if (lw.qNorm && lw.kNorm) {
    q = b.rmsNorm(q, lw.qNorm, cfg.rmsNormEps);
    k = b.rmsNorm(k, lw.kNorm, cfg.rmsNormEps);
  }
  const out = b.attention(q, k, v, kv, kvLayer, cfg.rope, step, {
    numHeads: cfg.numHeads,
    numKvHeads: cfg.numKvHeads,
    headDim: cfg.headDim,
    slidingWindow: cfg.slidingWindow,
  });
  return b.linear(out, lw.o, { bias: lw.oBias, residual: x });
}

/** x + down(gateUp(norm(x))). */
function mlp(b: Backend, lw: LayerWeights, cfg: ModelConfig, x: Tensor): Tensor {
  const norm = { weight: lw.postNorm, eps: cfg.rmsNormEps };
  const act = b.gateUp(x, lw.gate, lw.up, { gateBias: lw.gateBias, upBias: lw.upBias, norm });
  return b.linear(act, lw.down, { bias: lw.downBias, residual: x });
}
