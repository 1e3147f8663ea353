/**
 * Rotary position embeddings: the per-pair inverse frequencies (with the rope-scaling variants
 * checkpoints declare) and their application in the "rotate half" layout Hugging Face uses:
 * element i pairs with element i + headDim/2.
 */
import { TachyonError } from "../errors.js";

export interface RopeConfig {
  type: "default" | "linear" | "llama3";
  theta: number;
  /** Float32 inverse frequency of each of the headDim/2 rotation pairs, scaling already applied. */
  invFreq: Float32Array;
}

type Json = Record<string, unknown>;

function num(obj: Json, key: string, fallback?: number): number {
  const v = obj[key] ?? fallback;
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new TachyonError(`rope scaling: "${key}" must be a number, got ${JSON.stringify(v)}`, "config");
  }
  return v;
}

/**
 * Reads rope settings from a config.json object. Transformers 5 writes `rope_parameters`
 * (theta inside it); older checkpoints write `rope_theta` with an optional `rope_scaling`.
 */
export function parseRope(raw: Json, headDim: number, file: string): RopeConfig {
  const params = (raw.rope_parameters ?? raw.rope_scaling ?? {}) as Json;
  if (typeof params !== "object" || params === null) {
    throw new TachyonError(`${file}: rope_scaling must be an object`, "config");
  }
  const theta = num({ ...raw, ...params }, "rope_theta", 10000);
  const type = String(params.rope_type ?? params.type ?? "default");
  const invFreq = new Float32Array(headDim / 2);
  for (let i = 0; i < invFreq.length; i++) invFreq[i] = 1 / Math.pow(theta, (2 * i) / headDim);

  switch (type) {
    case "default":
      return { type, theta, invFreq };
    case "linear": {
      const factor = num(params, "factor");
      for (let i = 0; i < invFreq.length; i++) invFreq[i] /= factor;
      return { type, theta, invFreq };
    }
    case "llama3": {
      applyLlama3Scaling(invFreq, {
        factor: num(params, "factor"),
        lowFreqFactor: num(params, "low_freq_factor"),
        highFreqFactor: num(params, "high_freq_factor"),
        originalContext: num(params, "original_max_position_embeddings"),
      });
      return { type, theta, invFreq };
    }
    default:
      throw new TachyonError(
        `${file}: rope type "${type}" is not supported (supported: default, linear, llama3)`,
        "config",
      );
  }
}

/**
 * Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, and the band between
 * interpolated smoothly, so the model keeps its local resolution while reaching further.
 */
function applyLlama3Scaling(
  invFreq: Float32Array,
  s: { factor: number; lowFreqFactor: number; highFreqFactor: number; originalContext: number },
): void {
  const lowFreqWavelen = s.originalContext / s.lowFreqFactor;
  const highFreqWavelen = s.originalContext / s.highFreqFactor;
  for (let i = 0; i < invFreq.length; i++) {
    const f = invFreq[i];
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highFreqWavelen) continue;
    if (wavelen > lowFreqWavelen) {
      invFreq[i] = f / s.factor;
    } else {
      const smooth = (s.originalContext / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
      invFreq[i] = (1 - smooth) * (f / s.factor) + smooth * f;
    }
  }
}

/**
 * Fills cos/sin (length headDim/2 each) for one position. The angle is rounded to float32
 * as the reference implementation computes it, which keeps long positions bit-compatible.
 */
export function ropeAngles(rope: RopeConfig, position: number, cos: Float32Array, sin: Float32Array): void {
  const inv = rope.invFreq;
  for (let i = 0; i < inv.length; i++) {
    const angle = Math.fround(inv[i] * position);
    cos[i] = Math.cos(angle);
    sin[i] = Math.sin(angle);
  }
}
