/** Flags shared by the commands that load a model and generate. */
import fs from "node:fs";
import { TachyonError } from "../errors.js";
import { loadModel, type Device, type LoadedModel, type LoadOptions } from "../engine/loaded-model.js";
import type { GenerateOptions, SpeculationOptions } from "../engine/generate.js";
import { specMethods, type SpecMethod } from "../engine/speculative/options.js";
import { defaultDraftModelDir, defaultModelDir } from "./default-model.js";
import { ProgressBar } from "./progress.js";

export const modelFlags = {
  model: { type: "string" },
  device: { type: "string", default: "auto" },
  "max-context": { type: "string" },
  "gpu-memory-fraction": { type: "string" },
} as const;

export const samplingFlags = {
  "max-tokens": { type: "string", default: "128" },
  temperature: { type: "string", default: "0.7" },
  "top-k": { type: "string" },
  "top-p": { type: "string" },
  "min-p": { type: "string" },
  "repetition-penalty": { type: "string" },
  "presence-penalty": { type: "string" },
  "frequency-penalty": { type: "string" },
  seed: { type: "string" },
  stop: { type: "string", multiple: true },
  logprobs: { type: "string" },
} as const;

export const speculationFlags = {
  spec: { type: "string" },
  "spec-k": { type: "string" },
  "spec-fixed": { type: "boolean", default: false },
  "draft-model": { type: "string" },
} as const;

function number(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n))
    throw new TachyonError(`--${flag} needs a number, got "${v}"`, "argument");
  return n;
}

function fraction(v: string | undefined): number | undefined {
  const f = number("gpu-memory-fraction", v);
  if (f !== undefined && !(f > 0 && f <= 1)) {
    throw new TachyonError(`--gpu-memory-fraction must be in (0, 1], got ${v}`, "argument");
  }
  return f;
}

export function modelDir(values: { model?: string }): string {
  const dir = values.model ?? defaultModelDir;
  if (!fs.existsSync(dir)) {
    throw new TachyonError(
      values.model
        ? `model folder ${dir} does not exist`
        : `no --model given and the embedded model is missing at ${dir}`,
      "argument",
    );
  }
  return dir;
}

export function loadOptions(values: {
  device?: string;
  "max-context"?: string;
  "gpu-memory-fraction"?: string;
}): LoadOptions {
  const device = values.device ?? "auto";
  if (!["auto", "cpu", "cuda"].includes(device)) {
    throw new TachyonError(`--device must be auto, cpu or cuda, got "${device}"`, "argument");
  }
  const bar = new ProgressBar("loading");
  return {
    device: device as Device,
    maxContext: number("max-context", values["max-context"]),
    gpuMemoryFraction: fraction(values["gpu-memory-fraction"]),
    onProgress: (p) => {
      bar.update(p.loadedBytes, p.totalBytes, p.tensor);
      if (p.loadedBytes >= p.totalBytes) bar.done();
    },
  };
}

export function generateOptions(v: Record<string, string | string[] | boolean | undefined>): GenerateOptions {
  const s = (k: string): string | undefined => v[k] as string | undefined;
  const opts: GenerateOptions = {
    maxTokens: number("max-tokens", s("max-tokens")),
    temperature: number("temperature", s("temperature")),
    topK: number("top-k", s("top-k")),
    topP: number("top-p", s("top-p")),
    minP: number("min-p", s("min-p")),
    repetitionPenalty: number("repetition-penalty", s("repetition-penalty")),
    presencePenalty: number("presence-penalty", s("presence-penalty")),
    frequencyPenalty: number("frequency-penalty", s("frequency-penalty")),
    seed: number("seed", s("seed")),
    stop: v.stop as string[] | undefined,
    logprobs: number("logprobs", s("logprobs")),
  };
  // Leave unset fields out so the engine's defaults apply.
  return Object.fromEntries(Object.entries(opts).filter(([, x]) => x !== undefined)) as GenerateOptions;
}

/**
 * The speculation the flags ask for (undefined for none), loading the draft model when there is
 * one: --draft-model, or the embedded draft model next to the embedded default model.
 */
export async function speculationOptions(
  values: {
    spec?: string;
    "spec-k"?: string;
    "spec-fixed"?: boolean;
    "draft-model"?: string;
    device?: string;
    "max-context"?: string;
    "gpu-memory-fraction"?: string;
  },
  target: LoadedModel,
): Promise<SpeculationOptions | undefined> {
  const draftDir = values["draft-model"];
  const method = values.spec ?? (draftDir !== undefined ? "draft" : "none");
  if (method === "none") return undefined;
  if (!specMethods.includes(method as SpecMethod)) {
    throw new TachyonError(`--spec must be ${specMethods.join(", ")} or none, got "${method}"`, "argument");
  }
  if (draftDir !== undefined && method !== "draft") {
    throw new TachyonError(`--draft-model is for --spec draft, not --spec ${method}`, "argument");
  }
  const options: SpeculationOptions = {
    method: method as SpecMethod,
    maxTokens: number("spec-k", values["spec-k"]),
    adaptive: !values["spec-fixed"],
  };
  if (method === "draft") {
    const dir = draftDir ?? (target.dir === defaultModelDir ? defaultDraftModelDir : undefined);
    if (dir === undefined) throw new TachyonError("--spec draft needs --draft-model DIR", "argument");
    options.draft = await loadModel(modelDir({ model: dir }), {
      ...loadOptions(values),
      device: target.device as Device,
    });
  }
  return options;
}
