/**
 * Checkpoint tensors → backend weights, by Hugging Face names, with every shape checked against
 * config.json before anything is used. Tensors are read one at a time from disk, so peak host
 * memory is one tensor, not the checkpoint. Linear weights stored quantized (config.json
 * quantization_config) are converted to the engine layout and handed to Backend.quantizedWeight.
 */
import type { Backend, Tensor } from "../backends/backend.js";
import type { QuantScheme } from "../quant/quantized-weight.js";
import { TachyonError } from "../errors.js";
import { checkpointFormat } from "../quant/checkpoint-format.js";
import type { QuantFormat } from "../quant/formats/format.js";
import type { Checkpoint } from "./checkpoint.js";
import type { ModelConfig } from "./config.js";
import type { MtpWeights } from "./mtp.js";
import type { LayerWeights, ModelWeights } from "./transformer.js";

export interface LoadProgress {
  loadedBytes: number;
  totalBytes: number;
  tensor: string;
}

/** The tensors of one decoder layer under `prefix` (e.g. "model.layers.3."), with their shapes. */
function layerTensors(cfg: ModelConfig, prefix: string, shapes: Map<string, number[]>): void {
  const H = cfg.hiddenSize;
  const qWidth = cfg.numHeads * cfg.headDim;
  const kvWidth = cfg.numKvHeads * cfg.headDim;
  const I = cfg.intermediateSize;
  const p = prefix;
  shapes.set(p + "input_layernorm.weight", [H]);
  shapes.set(p + "self_attn.q_proj.weight", [qWidth, H]);
  shapes.set(p + "self_attn.k_proj.weight", [kvWidth, H]);
  shapes.set(p + "self_attn.v_proj.weight", [kvWidth, H]);
  shapes.set(p + "self_attn.o_proj.weight", [H, qWidth]);
  if (cfg.qkvBias) {
    shapes.set(p + "self_attn.q_proj.bias", [qWidth]);
    shapes.set(p + "self_attn.k_proj.bias", [kvWidth]);
    shapes.set(p + "self_attn.v_proj.bias", [kvWidth]);
  }
  if (cfg.oBias) shapes.set(p + "self_attn.o_proj.bias", [H]);
  if (cfg.qkNorm) {
    shapes.set(p + "self_attn.q_norm.weight", [cfg.headDim]);
    shapes.set(p + "self_attn.k_norm.weight", [cfg.headDim]);
  }
  shapes.set(p + "post_attention_layernorm.weight", [H]);
  shapes.set(p + "mlp.gate_proj.weight", [I, H]);
  shapes.set(p + "mlp.up_proj.weight", [I, H]);
  shapes.set(p + "mlp.down_proj.weight", [H, I]);
  if (cfg.mlpBias) {
    shapes.set(p + "mlp.gate_proj.bias", [I]);
    shapes.set(p + "mlp.up_proj.bias", [I]);
    shapes.set(p + "mlp.down_proj.bias", [H]);
  }
}

/**
 * Every tensor the model needs, with its expected shape, in load order. Multi-token-prediction
 * modules (config num_nextn_predict_layers) are stored as `mtp.{k}.*`; see src/model/mtp.ts.
 */
export function expectedTensors(cfg: ModelConfig, hasLmHead: boolean): Map<string, number[]> {
  const H = cfg.hiddenSize;
  const shapes = new Map<string, number[]>();
  shapes.set("model.embed_tokens.weight", [cfg.vocabSize, H]);
  for (let l = 0; l < cfg.numLayers; l++) layerTensors(cfg, `model.layers.${l}.`, shapes);
  shapes.set("model.norm.weight", [H]);
  if (hasLmHead) shapes.set("lm_head.weight", [cfg.vocabSize, H]);
  for (let k = 0; k < cfg.numMtpModules; k++) {
    const p = `mtp.${k}.`;
    shapes.set(p + "hidden_norm.weight", [H]);
    shapes.set(p + "embed_norm.weight", [H]);
    shapes.set(p + "proj.weight", [H, 2 * H]);
    layerTensors(cfg, p + "layer.", shapes);
    shapes.set(p + "final_norm.weight", [H]);
  }
  return shapes;
}

/** Whether the output head is the embedding matrix (config says so, or says nothing and lm_head is absent). */
export function usesTiedEmbeddings(cfg: ModelConfig, ckpt: Checkpoint, dir: string): boolean {
  const quantizedHead = cfg.quantization && checkpointFormat(cfg.quantization).isQuantized(ckpt, "lm_head");
  const hasLmHead = ckpt.has("lm_head.weight") || quantizedHead === true;
  if (cfg.tieWordEmbeddings === true) return true;
  if (!hasLmHead && cfg.tieWordEmbeddings === false) {
    throw new TachyonError(
      `${dir}: config.json says tie_word_embeddings=false but the checkpoint has no lm_head.weight; ` +
        `the checkpoint is incomplete or the config belongs to another model`,
      "checkpoint",
    );
  }
  return !hasLmHead;
}

/** A linear layer's weight: the 2-D tensors other than the embedding table (which is looked up, not multiplied). */
export function isLinearWeight(name: string, shape: readonly number[]): boolean {
  return shape.length === 2 && name !== "model.embed_tokens.weight";
}

/** How one expected tensor is stored: plain, or as the quantized linear `base` in `format`. */
interface StoredTensor {
  name: string;
  shape: number[];
  bytes: number;
  quantized: { format: QuantFormat; base: string } | null;
}

/**
 * Where each tensor the model needs is stored, with every header (names, dtypes, shapes) checked
 * against config.json, so a bad checkpoint fails before anything is loaded.
 */
export function storedTensors(cfg: ModelConfig, ckpt: Checkpoint, dir: string): StoredTensor[] {
  const tied = usesTiedEmbeddings(cfg, ckpt, dir);
  const format = cfg.quantization ? checkpointFormat(cfg.quantization) : null;
  const stored: StoredTensor[] = [];
  for (const [name, shape] of expectedTensors(cfg, !tied)) {
    const linear = isLinearWeight(name, shape);
    const base = name.replace(/\.weight$/, "");
    if (format && linear && format.isQuantized(ckpt, base)) {
      format.check(ckpt, base, shape[0], shape[1]);
      const names = format.tensorNames(base).filter((n) => ckpt.has(n));
      const bytes = names.reduce((sum, n) => sum + ckpt.info(n).byteLength, 0);
      stored.push({ name, shape, bytes, quantized: { format, base } });
      continue;
    }
    if (!ckpt.has(name)) {
      const quantizedNames =
        format && linear ? ` or the ${format.label} tensors ${format.tensorNames(base).join(", ")}` : "";
      throw new TachyonError(
        `${dir}: tensor ${name}${quantizedNames} is missing from the checkpoint (${cfg.architecture} needs it)`,
        "checkpoint",
      );
    }
    const info = ckpt.info(name);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new TachyonError(
        `${info.file}: tensor ${name} has shape [${info.shape.join(", ")}] but config.json implies [${shape.join(", ")}]; ` +
          `the config and the weights do not belong together`,
        "checkpoint",
      );
    }
    if (format && !["F32", "F16", "BF16"].includes(info.dtype)) {
      throw new TachyonError(
        `${info.file}: tensor ${name} is ${info.dtype}, but in a ${format.label} checkpoint a weight without ` +
          `its quantization tensors must be F32, F16 or BF16; the checkpoint is incomplete: re-download or re-quantize it`,
        "checkpoint",
      );
    }
    stored.push({ name, shape, bytes: info.byteLength, quantized: null });
  }
  return stored;
}

export function loadWeights(
  backend: Backend,
  cfg: ModelConfig,
  ckpt: Checkpoint,
  dir: string,
  onProgress?: (p: LoadProgress) => void,
): ModelWeights {
  const tied = usesTiedEmbeddings(cfg, ckpt, dir);
  const stored = storedTensors(cfg, ckpt, dir);
  const totalBytes = stored.reduce((sum, t) => sum + t.bytes, 0);
  let loadedBytes = 0;
  const tensors = new Map<string, Tensor>();
  for (const { name, shape, bytes, quantized } of stored) {
    if (quantized) {
      const w = quantized.format.read(ckpt, quantized.base, shape[0], shape[1]);
      tensors.set(name, backend.quantizedWeight(name, w));
    } else {
      const info = ckpt.info(name);
      tensors.set(name, backend.weight(name, info.dtype, info.shape, ckpt.read(name)));
    }
    loadedBytes += bytes;
    onProgress?.({ loadedBytes, totalBytes, tensor: name });
  }
  return assembleWeights(cfg, tensors, tied);
}

/**
 * Random weights of the model's shapes made directly by the backend (on the GPU for a GPU
 * backend), for benchmarks of sizes no checkpoint is shipped for. Normal values with std
 * 1/sqrt(fan-in), norm weights near 1: activations stay bounded through any depth.
 */
export function randomWeights(
  backend: Backend,
  cfg: ModelConfig,
  seed: number,
  quant?: RandomQuant,
): ModelWeights {
  const tied = cfg.tieWordEmbeddings === true;
  const tensors = new Map<string, Tensor>();
  let i = 0;
  for (const [name, shape] of expectedTensors(cfg, !tied)) {
    const isNorm = name.endsWith("norm.weight");
    const dist = {
      mean: isNorm ? 1 : 0,
      std: isNorm ? 0.1 : 1 / Math.sqrt(shape.at(-1)!),
      seed: seed * 1000 + i++,
    };
    const linear = shape.length === 2 && name !== "model.embed_tokens.weight";
    tensors.set(
      name,
      quant && linear
        ? backend.randomQuantizedWeight([shape[0], shape[1]], quant.scheme, quant.groupSize || shape[1], dist)
        : backend.randomWeight(shape, dist),
    );
  }
  return assembleWeights(cfg, tensors, tied);
}

/** Random weights below 16 bits: every linear layer's weight (not the embedding table). */
export interface RandomQuant {
  scheme: QuantScheme;
  /** Weights per scale along a row; 0 for one scale per row. */
  groupSize: number;
}

/** Named tensors → the structure the forward pass walks. */
function assembleWeights(cfg: ModelConfig, tensors: Map<string, Tensor>, tied: boolean): ModelWeights {
  const get = (name: string): Tensor => tensors.get(name)!;
  const layer = (p: string): LayerWeights => ({
    inputNorm: get(p + "input_layernorm.weight"),
    q: get(p + "self_attn.q_proj.weight"),
    k: get(p + "self_attn.k_proj.weight"),
    v: get(p + "self_attn.v_proj.weight"),
    o: get(p + "self_attn.o_proj.weight"),
    qBias: tensors.get(p + "self_attn.q_proj.bias"),
    kBias: tensors.get(p + "self_attn.k_proj.bias"),
    vBias: tensors.get(p + "self_attn.v_proj.bias"),
    oBias: tensors.get(p + "self_attn.o_proj.bias"),
    qNorm: tensors.get(p + "self_attn.q_norm.weight"),
    kNorm: tensors.get(p + "self_attn.k_norm.weight"),
    postNorm: get(p + "post_attention_layernorm.weight"),
    gate: get(p + "mlp.gate_proj.weight"),
    up: get(p + "mlp.up_proj.weight"),
    down: get(p + "mlp.down_proj.weight"),
    gateBias: tensors.get(p + "mlp.gate_proj.bias"),
    upBias: tensors.get(p + "mlp.up_proj.bias"),
    downBias: tensors.get(p + "mlp.down_proj.bias"),
  });
  const mtp: MtpWeights[] = [];
  for (let k = 0; k < cfg.numMtpModules; k++) {
    const p = `mtp.${k}.`;
    mtp.push({
      hiddenNorm: get(p + "hidden_norm.weight"),
      embedNorm: get(p + "embed_norm.weight"),
      proj: get(p + "proj.weight"),
      layer: layer(p + "layer."),
      finalNorm: get(p + "final_norm.weight"),
    });
  }
  const embed = get("model.embed_tokens.weight");
  return {
    embed,
    layers: Array.from({ length: cfg.numLayers }, (_, l) => layer(`model.layers.${l}.`)),
    norm: get("model.norm.weight"),
    lmHead: tied ? embed : get("lm_head.weight"),
    mtp,
  };
}
