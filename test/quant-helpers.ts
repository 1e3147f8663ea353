/** Shared pieces of the quantization tests: fresh random data, logits of a model folder, temp folders. */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { CpuBackend } from "../src/backends/cpu/cpu-backend.js";
import { ModelExecutor } from "../src/engine/executor.js";
import { Checkpoint } from "../src/model/checkpoint.js";
import { loadConfig } from "../src/model/config.js";
import type { QuantizedWeight } from "../src/quant/quantized-weight.js";
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from "../src/model/safetensors.js";
import { loadWeights } from "../src/model/weights.js";
import { seededRandom } from "./random.js";

/** A seed that differs per run (printed by failing assertions), so the data is fresh each time. */
export function freshSeed(): number {
  return (Date.now() ^ (process.pid << 10)) % 2147483647;
}

/** Normal values with the given std from `seed`. */
export function normals(seed: number, n: number, std = 1): Float32Array {
  const rnd = seededRandom(seed);
  return Float32Array.from(
    { length: n },
    () => std * Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd()),
  );
}

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `tachyon-${prefix}-`));
}

/** Logits of every position of `tokens` from the model folder `dir`, on the CPU backend. */
export function folderLogits(dir: string, tokens: readonly number[]): Float32Array {
  const cfg = loadConfig(dir);
  const ckpt = Checkpoint.open(dir);
  const backend = new CpuBackend();
  try {
    const weights = loadWeights(backend, cfg, ckpt, dir);
    return new ModelExecutor(backend, cfg, weights, { maxTokens: 1024, contextLength: 1024 }).score(tokens)
      .logits;
  } finally {
    ckpt.close();
  }
}

/** ‖a − b‖ / ‖b‖. */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < a.length; i++) {
    diff += (a[i] - b[i]) ** 2;
    norm += b[i] ** 2;
  }
  return Math.sqrt(diff / norm);
}

/** Copies model folder `src` to a fresh temp folder and returns its path. */
export function copyModel(src: string): string {
  const dir = tempDir("model");
  fs.cpSync(src, dir, { recursive: true });
  return dir;
}

/** Rewrites `dir/model.safetensors` with `edit` applied to its tensors (name → tensor). */
export function editTensors(dir: string, edit: (tensors: Map<string, TensorToWrite>) => void): void {
  const file = path.join(dir, "model.safetensors");
  const st = SafetensorsFile.open(file);
  const tensors = new Map<string, TensorToWrite>();
  for (const [name, info] of st.tensors)
    tensors.set(name, { dtype: info.dtype, shape: info.shape, data: st.read(name) });
  st.close();
  edit(tensors);
  writeSafetensors(file, Object.fromEntries(tensors));
}

/** Applies `edit` to `dir/config.json`. */
export function editConfig(dir: string, edit: (c: Record<string, unknown>) => void): void {
  const file = path.join(dir, "config.json");
  const c = JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, unknown>;
  edit(c);
  fs.writeFileSync(file, JSON.stringify(c));
}

/** Every quantized weight a folder's loading hands to the backend, by name. */
export function loadedQuantized(dir: string): Map<string, QuantizedWeight> {
  const got = new Map<string, QuantizedWeight>();
  const backend = new (class extends CpuBackend {
    override quantizedWeight(name: string, w: QuantizedWeight) {
      got.set(name, w);
      return super.quantizedWeight(name, w);
    }
  })();
  const ckpt = Checkpoint.open(dir);
  try {
    loadWeights(backend, loadConfig(dir), ckpt, dir);
  } finally {
    ckpt.close();
  }
  return got;
}
