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
  let x = b.embed(w.embed, step);
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    x = decoderLayer(b, w.layers[layer], cfg, kv, layer, x, step);
  }
  return x;
}

/** Logits [outputRows, vocab] of the step's output rows of the final hidden states. */
export function outputLogits(
  b: Backend,
  w: ModelWeights,
  cfg: ModelConfig,
  hidden: Tensor,
  step: Step,
): Tensor {
  return b.linear(b.rmsNorm(b.gatherOutputRows(hidden, step), w.norm, cfg.rmsNormEps), w.lmHead);
}

/** Pre-norm attention block then pre-norm MLP block, each added to the residual stream. */
export function decoderLayer(
  b: Backend,
  lw: LayerWeights,
  cfg: ModelConfig,
  kv: KvStorage,
  kvLayer: number,
  x: Tensor,
  step: Step,
): Tensor {
  const h = b.add(x, attention(b, lw, cfg, kv, kvLayer, b.rmsNorm(x, lw.inputNorm, cfg.rmsNormEps), step));
  return b.add(h, mlp(b, lw, b.rmsNorm(h, lw.postNorm, cfg.rmsNormEps)));
}

function attention(
  b: Backend,
  lw: LayerWeights,
  cfg: ModelConfig,
  kv: KvStorage,
  kvLayer: number,
  h: Tensor,
  step: Step,
): Tensor {
  let q = b.linear(h, lw.q, lw.qBias);
  let k = b.linear(h, lw.k, lw.kBias);
  const v = b.linear(h, lw.v, lw.vBias);
  if (lw.qNorm && lw.kNorm) {
    q = b.rmsNorm(q, lw.qNorm, cfg.rmsNormEps);
    k = b.rmsNorm(k, lw.kNorm, cfg.rmsNormEps);
  }
  q = b.rope(q, cfg.rope, cfg.headDim, step);
  k = b.rope(k, cfg.rope, cfg.headDim, step);
  b.writeKv(kv, kvLayer, k, v, step);
  const out = b.attention(q, kv, kvLayer, step, {
    numHeads: cfg.numHeads,
    numKvHeads: cfg.numKvHeads,
    headDim: cfg.headDim,
    slidingWindow: cfg.slidingWindow,
  });
  return b.linear(out, lw.o, lw.oBias);
}

function mlp(b: Backend, lw: LayerWeights, h: Tensor): Tensor {
  const gate = b.linear(h, lw.gate, lw.gateBias);
  const up = b.linear(h, lw.up, lw.upBias);
  return b.linear(b.siluMul(gate, up), lw.down, lw.downBias);
}
