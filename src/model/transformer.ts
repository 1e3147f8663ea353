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

/**
 * Pre-norm decoder layers: x += attention(norm(x)); x += mlp(norm(x)). Each residual add is
 * fused with the norm that follows it (the next block's input), so the residual stream is read
 * once per block. Layer i uses KV-cache layer firstKvLayer + i.
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
  const eps = cfg.rmsNormEps;
  let h = b.rmsNorm(x, layers[0].inputNorm, eps);
  layers.forEach((lw, i) => {
    [x, h] = b.addRmsNorm(x, attention(b, lw, cfg, kv, firstKvLayer + i, h, step), lw.postNorm, eps);
    const next = layers[i + 1];
    const delta = mlp(b, lw, h);
    if (next) [x, h] = b.addRmsNorm(x, delta, next.inputNorm, eps);
    else x = b.add(x, delta);
  });
  return x;
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
  const qkv = b.linearMany(h, [lw.q, lw.k, lw.v], [lw.qBias, lw.kBias, lw.vBias]);
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
  return b.linear(out, lw.o, lw.oBias);
}

function mlp(b: Backend, lw: LayerWeights, h: Tensor): Tensor {
  return b.linear(b.gateUp(h, lw.gate, lw.up, lw.gateBias, lw.upBias), lw.down, lw.downBias);
}
