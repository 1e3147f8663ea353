/**
 * The decoder-only transformer shared by Llama, Mistral, Qwen2 and Qwen3, written once against
 * the Backend operations. Architecture differences are switches in ModelConfig (biases, q/k
 * norm, sliding window, rope variant), not separate code paths. Backends that fuse kernels or
 * capture graphs lower this same sequence of operations.
 */
import type { AttentionBatch, Backend, KvStorage, Tensor } from "../backends/backend.js";
import type { ModelConfig } from "./config.js";

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
}

/** One forward step over M token rows (any mix of sequences, prefill or decode). */
export interface ForwardBatch {
  tokens: Int32Array;
  attention: AttentionBatch;
  /** Rows whose logits are wanted (usually each sequence's last row). */
  logitRows: Int32Array;
}

/** Runs the step and returns logits [logitRows.length, vocab]. */
export function forward(
  b: Backend,
  w: ModelWeights,
  cfg: ModelConfig,
  kv: KvStorage,
  batch: ForwardBatch,
): Tensor {
  let x = b.embed(w.embed, batch.tokens);
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    const lw = w.layers[layer];
    x = b.add(x, attention(b, lw, cfg, kv, layer, b.rmsNorm(x, lw.inputNorm, cfg.rmsNormEps), batch));
    x = b.add(x, mlp(b, lw, b.rmsNorm(x, lw.postNorm, cfg.rmsNormEps)));
  }
  const last = b.gatherRows(x, batch.logitRows);
  return b.linear(b.rmsNorm(last, w.norm, cfg.rmsNormEps), w.lmHead);
}

function attention(
  b: Backend,
  lw: LayerWeights,
  cfg: ModelConfig,
  kv: KvStorage,
  layer: number,
  h: Tensor,
  batch: ForwardBatch,
): Tensor {
  const { positions, slots } = batch.attention;
  let q = b.linear(h, lw.q, lw.qBias);
  let k = b.linear(h, lw.k, lw.kBias);
  const v = b.linear(h, lw.v, lw.vBias);
  if (lw.qNorm && lw.kNorm) {
    q = b.rmsNorm(q, lw.qNorm, cfg.rmsNormEps);
    k = b.rmsNorm(k, lw.kNorm, cfg.rmsNormEps);
  }
  q = b.rope(q, cfg.rope, cfg.headDim, positions);
  k = b.rope(k, cfg.rope, cfg.headDim, positions);
  b.writeKv(kv, layer, k, v, slots);
  const out = b.attention(q, kv, layer, batch.attention, {
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
