/**
 * Multi-token prediction (MTP) modules, DeepSeek-V3 / MiMo style. Module k (depth k = 1, 2, …)
 * sees, at position i, the previous depth's hidden state h_{k-1}[i] (h_0 = the main model's last
 * layer output before the final norm) and the embedding of token t[i+k], and predicts t[i+k+1]:
 *
 *   x   = proj_k( [hidden_norm_k(h_{k-1}[i]) ; embed_norm_k(E[t[i+k]])] )   hidden first
 *   h_k = DecoderLayer_k(x)            causal attention at rotary position i, own KV-cache layer
 *   logits_k[i] = lm_head(final_norm_k(h_k[i]))                           shared output head
 *
 * Checkpoint names: mtp.{k-1}.{hidden_norm,embed_norm,proj,final_norm}.weight and
 * mtp.{k-1}.layer.* (the usual decoder-layer names). Transformers ignores them.
 */
import type { Backend, KvStorage, Step, Tensor } from "../backends/backend.js";
import type { ModelConfig } from "./config.js";
import { decoderLayers, type LayerWeights, type ModelWeights } from "./transformer.js";

export interface MtpWeights {
  hiddenNorm: Tensor;
  embedNorm: Tensor;
  proj: Tensor;
  layer: LayerWeights;
  finalNorm: Tensor;
}

/**
 * Hidden states of MTP module `depth` (1-based) for the step's M rows: prevHidden is h_{depth-1}
 * of those rows and the step's tokens are t[i+depth]. The module's attention uses KV-cache layer
 * numLayers + depth - 1, at the same positions and slots as the main model.
 */
export function mtpHidden(
  b: Backend,
  w: ModelWeights,
  cfg: ModelConfig,
  kv: KvStorage,
  depth: number,
  prevHidden: Tensor,
  step: Step,
): Tensor {
  const m = w.mtp[depth - 1];
  const h = b.rmsNorm(prevHidden, m.hiddenNorm, cfg.rmsNormEps);
  const e = b.rmsNorm(b.embed(w.embed, step), m.embedNorm, cfg.rmsNormEps);
  const x = b.linear(b.concatCols(h, e), m.proj);
  return decoderLayers(b, [m.layer], cfg.numLayers + depth - 1, cfg, kv, x, step);
}

/** Logits of MTP module `depth` from its hidden states: [rows, vocab]. */
export function mtpLogits(
  b: Backend,
  w: ModelWeights,
  cfg: ModelConfig,
  depth: number,
  hidden: Tensor,
): Tensor {
  return b.linear(hidden, w.lmHead, { norm: { weight: w.mtp[depth - 1].finalNorm, eps: cfg.rmsNormEps } });
}
