/** `tachyon info`: what a model folder holds and what it needs, without loading the weights. */
import { parseArgs } from "node:util";
import { inspectModel } from "../engine/loaded-model.js";
import { modelDir, modelFlags } from "./options.js";

const gib = (bytes: number): string => `${(bytes / 2 ** 30).toFixed(bytes < 2 ** 30 ? 3 : 2)} GiB`;

export async function infoCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { model: modelFlags.model }, strict: true });
  const dir = modelDir(values);
  const { config: c, info } = inspectModel(dir);
  const kvPerToken = 2 * c.numLayers * c.numKvHeads * c.headDim;
  const rows: [string, string][] = [
    ["model", dir],
    ["architecture", c.architecture],
    ["parameters", `${(info.parameters / 1e6).toFixed(2)} M`],
    ["checkpoint dtype", info.dtypes.join(", ")],
    ["checkpoint size", gib(info.checkpointBytes)],
    ["layers / hidden / ffn", `${c.numLayers} / ${c.hiddenSize} / ${c.intermediateSize}`],
    ["heads (q / kv) × dim", `${c.numHeads} / ${c.numKvHeads} × ${c.headDim}`],
    ["vocabulary", String(c.vocabSize)],
    ["context", `${c.maxPositions} positions, rope ${c.rope.type} θ=${c.rope.theta}`],
    [
      "memory (cpu, f32)",
      `${gib(info.parameters * 4)} weights + ${gib(kvPerToken * 4 * 1024)} KV per 1k tokens`,
    ],
    [
      "memory (gpu, bf16)",
      `${gib(info.parameters * 2)} weights + ${gib(kvPerToken * 2 * 1024)} KV per 1k tokens`,
    ],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) process.stdout.write(`${k.padEnd(width)}  ${v}\n`);
  return 0;
}
