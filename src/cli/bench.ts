/**
 * `tachyon bench`: batch-1 decode speed of a random-weight model of a named shape. Reports
 * tok/s, ms/token and the weight bytes streamed per second; writes one JSON result.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { TachyonError } from "../errors.js";
import { loadModel } from "../engine/loaded-model.js";
import { Rng } from "../engine/rng.js";
import { namedShapes, writeRandomCheckpoint } from "../model/random-checkpoint.js";
import { loadOptions } from "./options.js";

export interface BenchResult {
  shape: string;
  weights: string;
  device: string;
  gpu: string | null;
  cpu: string;
  date: string;
  batch: number;
  prompt_tokens: number;
  gen_tokens: number;
  decode_tok_s: number;
  ms_per_token: number;
  achieved_gbps: number;
  copy_gbps: number | null;
  ttft_ms: number;
  spec: null;
}

export async function benchCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      shape: { type: "string", default: "cpu-20m" },
      device: { type: "string", default: "auto" },
      "prompt-tokens": { type: "string", default: "128" },
      "gen-tokens": { type: "string", default: "256" },
      out: { type: "string" },
    },
    strict: true,
  });
  const shape = namedShapes[values.shape];
  if (!shape) {
    throw new TachyonError(
      `unknown shape "${values.shape}"; known: ${Object.keys(namedShapes).join(", ")}`,
      "argument",
    );
  }
  const promptTokens = Number(values["prompt-tokens"]);
  const genTokens = Number(values["gen-tokens"]);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tachyon-bench-"));
  try {
    writeRandomCheckpoint(
      dir,
      { ...shape, maxPositions: promptTokens + genTokens },
      { dtype: "BF16", seed: 7 },
    );
    fs.writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify(byteTokenizer(shape.vocabSize)));
    const model = await loadModel(dir, loadOptions(values));
    const rng = new Rng(11);
    const prompt = Array.from({ length: promptTokens }, () => rng.nextU32() % shape.vocabSize);
    const run = () => model.complete(prompt, { maxTokens: genTokens, temperature: 0, ignoreEos: true });
    await model.complete(prompt.slice(0, 8), { maxTokens: 4, temperature: 0, ignoreEos: true }); // warm-up
    const r = await run();
    // Batch-1 decode streams every weight once per token (the backend's own storage: f32 on CPU).
    const bytesPerToken = model.info.parameters * (model.device === "cpu" ? 4 : 2);
    const result: BenchResult = {
      shape: values.shape,
      weights: "bf16",
      device: model.device,
      gpu: null,
      cpu: `${os.cpus()[0]?.model ?? "unknown"} (${os.cpus().length} cores)`,
      date: new Date().toISOString().slice(0, 10),
      batch: 1,
      prompt_tokens: promptTokens,
      gen_tokens: r.completionTokens,
      decode_tok_s: r.decodeTokensPerSecond,
      ms_per_token: 1000 / r.decodeTokensPerSecond,
      achieved_gbps: (bytesPerToken * r.decodeTokensPerSecond) / 1e9,
      copy_gbps: null,
      ttft_ms: r.timeToFirstTokenMs,
      spec: null,
    };
    const line = JSON.stringify(result, null, 2);
    process.stdout.write(line + "\n");
    if (values.out) fs.writeFileSync(values.out, line + "\n");
    return 0;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A minimal byte-level tokenizer.json so random models can be loaded without a real vocabulary. */
function byteTokenizer(vocabSize: number): object {
  const vocab: Record<string, number> = {};
  for (let i = 0; i < vocabSize; i++) vocab[`t${i}`] = i;
  return {
    version: "1.0",
    added_tokens: [],
    normalizer: null,
    pre_tokenizer: { type: "WhitespaceSplit" },
    post_processor: null,
    decoder: null,
    model: { type: "WordLevel", vocab, unk_token: "t0" },
  };
}
