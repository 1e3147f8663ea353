/** `tachyon info`: what a model folder holds and what it needs, without loading the weights. */
import { parseArgs } from "node:util";
import { inspectModel } from "../engine/loaded-model.js";
import { Checkpoint } from "../model/checkpoint.js";
import { loadConfig } from "../model/config.js";
import { isLinearWeight, storedTensors } from "../model/weights.js";
import { describeQuantization } from "../quant/quant-config.js";
import { modelDir, modelFlags } from "./options.js";

/** Bytes in the largest binary unit that keeps the number at least 1. */
function size(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (bytes >= 1024 && i < units.length - 1) {
    bytes /= 1024;
    i++;
  }
  return `${bytes.toFixed(i === 0 ? 0 : 2)} ${units[i]}`;
}

export async function infoCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { model: modelFlags.model }, strict: true });
  const dir = modelDir(values);
  const { config: c, info } = inspectModel(dir);
  const kvPerToken = 2 * c.numLayers * c.numKvHeads * c.headDim;
  const stored = storedWeights(dir);
  const rows: [string, string][] = [
    ["model", dir],
    ["architecture", c.architecture],
    [
      "parameters",
      `${(info.parameters / 1e6).toFixed(2)} M` +
        (c.numMtpModules > 0 ? ` (with ${c.numMtpModules} multi-token-prediction modules)` : ""),
    ],
    ["checkpoint dtype", info.dtypes.join(", ")],
    ...(c.quantization
      ? [
          [
            "quantization",
            `${describeQuantization(c.quantization)}; ${stored.quantized} of ${stored.linears} linear weights`,
          ] as [string, string],
        ]
      : []),
    ["checkpoint size", size(info.checkpointBytes)],
    ["layers / hidden / ffn", `${c.numLayers} / ${c.hiddenSize} / ${c.intermediateSize}`],
    ["heads (q / kv) × dim", `${c.numHeads} / ${c.numKvHeads} × ${c.headDim}`],
    ["vocabulary", String(c.vocabSize)],
    ["context", `${c.maxPositions} positions, rope ${c.rope.type} θ=${c.rope.theta}`],
    [
      "memory (cpu, f32)",
      `${size(info.parameters * 4)} weights + ${size(kvPerToken * 4 * 1024)} KV per 1k tokens`,
    ],
    [
      c.quantization ? "memory (gpu)" : "memory (gpu, bf16)",
      // The CUDA backend keeps the KV cache in float32.
      `${size(info.weightBytes)} weights + ${size(kvPerToken * 4 * 1024)} KV per 1k tokens`,
    ],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) process.stdout.write(`${k.padEnd(width)}  ${v}\n`);
  return 0;
}

/** How many of the model's linear weights are quantized. */
function storedWeights(dir: string): { quantized: number; linears: number } {
  const ckpt = Checkpoint.open(dir);
  try {
    const stored = storedTensors(loadConfig(dir), ckpt, dir);
    return {
      quantized: stored.filter((t) => t.quantized).length,
      linears: stored.filter((t) => isLinearWeight(t.name, t.shape)).length,
    };
  } finally {
    ckpt.close();
  }
}
