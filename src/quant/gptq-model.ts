/**
 * GPTQ over a whole model, block by block (a decoder layer, the LM head, an MTP module), on the
 * CPU backend with the real forward pass. Each block is calibrated on the hidden states that the
 * already-quantized blocks before it produce, so later blocks learn to absorb earlier blocks'
 * errors; within a block, every linear sees the inputs of the block still in 16 bits (as the
 * GPTQ paper does). After a block is quantized its weights are replaced by their dequantized
 * values and the calibration windows are run through it again.
 *
 * Cost (single-threaded JavaScript): two forward passes of each block over the calibration
 * tokens, one Hessian per distinct input (T · K² / 2 for T tokens, K inputs) and per linear one
 * Cholesky inversion (~K³) plus the GPTQ sweep (~N · K²).
 */
import type { Step, Tensor } from "../backends/backend.js";
import { CpuBackend, CpuTensor } from "../backends/cpu/cpu-backend.js";
import type { Checkpoint } from "../model/checkpoint.js";
import type { ModelConfig } from "../model/config.js";
import { mtpHidden } from "../model/mtp.js";
import { decoderLayers, outputLogits, type ModelWeights } from "../model/transformer.js";
import { loadWeights } from "../model/weights.js";
import { dequantize } from "./dequantize.js";
import { inverseHessianFactor, quantizeGptq } from "./gptq.js";
import type { Hessian } from "./hessian.js";
import { InputRecorder } from "./input-recorder.js";
import type { IntScheme } from "./int-grid.js";
import type { QuantizedWeight } from "./quantized-weight.js";

export interface GptqTarget {
  scheme: IntScheme;
  groupSize: number;
  /** Rows × cols, for progress. */
  size: number;
}

export interface GptqModelOptions {
  /** Token windows of calibration text, each at most the model's context. */
  windows: readonly (readonly number[])[];
  dampening: number;
  onProgress?: (doneWeights: number, totalWeights: number, tensor: string) => void;
  /** Called between linears: yields to the event loop and throws if the run was interrupted. */
  checkpointTick: () => Promise<void>;
}

/** GPTQ weights of every linear named in `targets` ("lm_head.weight" may name a tied head). */
export async function gptqModel(
  cfg: ModelConfig,
  ckpt: Checkpoint,
  dir: string,
  targets: ReadonlyMap<string, GptqTarget>,
  opts: GptqModelOptions,
): Promise<Map<string, QuantizedWeight>> {
  const recorder = new InputRecorder(new CpuBackend());
  const b = recorder.backend;
  let weights: ModelWeights = loadWeights(b, cfg, ckpt, dir);
  if (targets.has("lm_head.weight") && weights.lmHead === weights.embed) {
    // The head is quantized on its own; the embedding table it was tied to stays as is.
    const embed = weights.embed as CpuTensor;
    const head = new CpuTensor(embed.rows, embed.cols, embed.data.slice());
    weights = { ...weights, lmHead: recorder.name(head, "lm_head.weight") };
  }
  const byName = recorder.tensors();
  const longest = Math.max(...opts.windows.map((w) => w.length));
  const kv = b.createKvCache({
    numLayers: cfg.numLayers + cfg.numMtpModules,
    numBlocks: 1,
    blockSize: longest,
    numKvHeads: cfg.numKvHeads,
    headDim: cfg.headDim,
  });
  const stepOf = (tokens: readonly number[]): Step => {
    const rows = Int32Array.from({ length: tokens.length }, (_, i) => i);
    return b.prepareStep({
      tokens: Int32Array.from(tokens),
      positions: rows,
      slots: rows,
      blockTables: new Array<Int32Array>(tokens.length).fill(Int32Array.of(0)),
      outputRows: rows,
    });
  };

  const results = new Map<string, QuantizedWeight>();
  const total = [...targets.values()].reduce((s, t) => s + t.size, 0);
  let done = 0;
  /** Records the block's inputs with `run`, quantizes its targets, and returns `run` again with them quantized. */
  const block = async (prefix: string, run: () => Tensor[]): Promise<Tensor[]> => {
    const names = [...targets.keys()].filter((n) => n.startsWith(prefix));
    if (names.length === 0) return run();
    const hessians = recorder.watch(names, run);
    const factors = new Map<Hessian, Float64Array>();
    for (const name of names) {
      const t = byName.get(name) as CpuTensor;
      const h = hessians.get(name)!;
      let u = factors.get(h);
      if (!u) factors.set(h, (u = inverseHessianFactor(name, h.matrix(), t.cols, opts.dampening)));
      const { scheme, groupSize, size } = targets.get(name)!;
      const w = quantizeGptq(name, t.data, t.rows, t.cols, u, scheme, groupSize);
      results.set(name, w);
      t.data.set(dequantize(w));
      done += size;
      opts.onProgress?.(done, total, name);
      await opts.checkpointTick();
    }
    return run();
  };

  const steps = opts.windows.map(stepOf);
  let hidden = steps.map((s) => b.embed(weights.embed, s));
  for (let l = 0; l < cfg.numLayers; l++) {
    const layer = weights.layers[l];
    hidden = await block(`model.layers.${l}.`, () =>
      hidden.map((x, i) => decoderLayers(b, [layer], l, cfg, kv, x, steps[i])),
    );
  }
  await block("lm_head.", () => hidden.map((x, i) => outputLogits(b, weights, cfg, x, steps[i])));
  // MTP depth d reads the previous depth's states and the tokens shifted by d.
  let windows = opts.windows;
  for (let d = 1; d <= cfg.numMtpModules; d++) {
    const kept = windows.map((w) => w.length - 1 > 0);
    const prev = hidden.filter((_, i) => kept[i]).map((h) => b.sliceRows(h, 0, h.rows - 1));
    windows = windows.filter((_, i) => kept[i]).map((w) => w.slice(1));
    const shifted = windows.map(stepOf);
    hidden = await block(`mtp.${d - 1}.`, () =>
      prev.map((h, i) => mtpHidden(b, weights, cfg, kv, d, h, shifted[i])),
    );
  }
  return results;
}
