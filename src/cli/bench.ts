/**
 * `tachyon bench`: batch-1 decode speed of a random-weight model of a named shape, built in the
 * backend's memory (no download, never zero weights). On a GPU it also measures the device's copy
 * bandwidth in the same run, so achieved bandwidth is reported against what this GPU can do now.
 */
import fs from "node:fs";
import os from "node:os";
import { parseArgs } from "node:util";
import { TachyonError } from "../errors.js";
import { createBackend, type Device } from "../backends/select.js";
import { CudaBackend } from "../backends/cuda/cuda-backend.js";
import { ModelExecutor } from "../engine/executor.js";
import { GreedyPipeline } from "../engine/greedy-pipeline.js";
import type { SequenceKv } from "../engine/kv-cache.js";
import { Rng } from "../engine/rng.js";
import { parseConfig } from "../model/config.js";
import { configJson, namedShapes } from "../model/random-checkpoint.js";
import { expectedTensors, randomWeights, type RandomQuant } from "../model/weights.js";
import { schemeBits, type QuantScheme } from "../quant/quantized-weight.js";
import type { ModelConfig } from "../model/config.js";
import type { ModelWeights } from "../model/transformer.js";
import { profilingBackend, type OpProfile } from "../backends/cuda/profile.js";
import { summarise, type Timeline, type TimelineRow } from "../backends/cuda/timeline.js";
import { benchSpeculation, type SpecBenchResult } from "./bench-spec.js";

export interface BenchResult {
  shape: string;
  weights: string;
  device: string;
  gpu: string | null;
  date: string;
  batch: number;
  prompt_tokens: number;
  gen_tokens: number;
  decode_tok_s: number;
  ms_per_token: number;
  /** Bytes a decode step must read (weights + mean KV cache), per token. */
  bytes_per_token: number;
  achieved_gbps: number;
  copy_gbps: number | null;
  /** achieved_gbps / copy_gbps. */
  bandwidth_fraction: number | null;
  ttft_ms: number | null;
  ttft_prompt_tokens: number | null;
  /** Time of one step of M rows of one sequence, all rows' logits kept (a verify step), by M. */
  verify_step_ms: Record<string, number> | null;
  /** Tokens already in the sequence that each verify step extends. */
  verify_context: number | null;
  /** With --spec oracle: speed at fixed accepted lengths (bench-spec.ts). */
  spec: SpecBenchResult | null;
  /** With TACHYON_TIMELINE=1: each kernel's cost inside the decode graph (timeline.ts). */
  timeline: TimelineResult | null;
  /** With TACHYON_TIMELINE=1 and --verify-rows: the same inside each verify step's graph, by M. */
  verify_timeline: Record<string, TimelineResult> | null;
}

interface TimelineResult {
  runs: number;
  run_us: number;
  period_us: number | null;
  between_us: number | null;
  last_us: number | null;
  kernels: TimelineRow[];
}

type TimelineSummary = ReturnType<typeof summarise>;

export async function benchCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      shape: { type: "string", default: "llama-3.2-1b" },
      device: { type: "string", default: "auto" },
      "prompt-tokens": { type: "string", default: "128" },
      "gen-tokens": { type: "string", default: "256" },
      "ttft-tokens": { type: "string", default: "1024" },
      out: { type: "string" },
      profile: { type: "boolean", default: false },
      weights: { type: "string", default: "bf16" },
      "verify-rows": { type: "string", default: "" },
      "verify-context": { type: "string", default: "128" },
      spec: { type: "string", default: "none" },
      "spec-accepted": { type: "string", default: "1,2,3,4" },
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
  const ttftTokens = Number(values["ttft-tokens"]);
  const verifyRows = values["verify-rows"] ? values["verify-rows"].split(",").map(Number) : [];
  const verifyContext = Number(values["verify-context"]);
  if (!Number.isInteger(verifyContext) || verifyContext < 0)
    throw new TachyonError(
      `--verify-context ${values["verify-context"]}: the tokens each verify step extends must be a whole number, 0 or more`,
      "argument",
    );
  const specLengths = acceptedLengths(values.spec, values["spec-accepted"]);
  const context =
    Math.max(promptTokens + genTokens, ttftTokens, verifyContext + Math.max(0, ...verifyRows)) + 16;
  const cfg = parseConfig(configJson({ ...shape, maxPositions: context }));
  const { backend, note } = createBackend(values.device as Device, cfg);
  const gpu = backend instanceof CudaBackend ? backend : null;
  process.stderr.write(`bench ${values.shape} on ${note}\n`);

  const quant = parseWeights(values.weights);
  const copyBps = gpu ? gpu.copyBandwidth() : null;
  const weights = randomWeights(backend, cfg, 7, quant ?? undefined);
  const executor = new ModelExecutor(backend, cfg, weights, {
    maxTokens: 2 * context,
    contextLength: context,
  });
  const rng = new Rng(11);
  const randomIds = (n: number) => Array.from({ length: n }, () => rng.nextU32() % cfg.vocabSize);

  // Warm-up: compiles nothing new, but captures the decode graph and touches every buffer.
  decode(executor, randomIds(16), 8);

  const { decodeMs } = decode(executor, randomIds(promptTokens), genTokens);
  const tokS = ((genTokens - 1) * 1000) / decodeMs;
  const timeline = gpu?.timeline ? decodeTimeline(gpu.timeline, executor, randomIds(promptTokens), 64) : null;

  const verifySteps = verifyRows.map((m) => ({
    m,
    ...verifyStep(executor, randomIds, verifyContext, m, gpu?.timeline ?? null),
  }));
  const verifyMs = verifyRows.length ? Object.fromEntries(verifySteps.map((v) => [String(v.m), v.ms])) : null;
  const verifyTimelines = verifySteps.filter((v) => v.timeline !== null);

  let ttftMs: number | null = null;
  if (ttftTokens > 0) {
    // The median of three fresh prompts: the first use of a prompt-sized shape also pays one-time
    // costs (the GEMM library's algorithm choice, scratch buffers).
    const runs = [0, 1, 2].map(() => decode(executor, randomIds(ttftTokens), 1).firstTokenMs);
    ttftMs = runs.sort((a, b) => a - b)[1];
  }

  const meanContext = promptTokens + genTokens / 2;
  const kvBytes = (cfg.numLayers * 2 * cfg.numKvHeads * cfg.headDim * 4 * meanContext) | 0;
  const bytesPerToken = weightBytes(cfg, gpu ? 2 : 4, quant) + kvBytes;
  const achieved = (bytesPerToken * tokS) / 1e9;
  const result: BenchResult = {
    shape: values.shape,
    weights: quant ? values.weights : gpu ? "bf16" : "f32",
    device: backend.name,
    gpu: gpu ? gpu.deviceName : null,
    date: new Date().toISOString().slice(0, 10),
    batch: 1,
    prompt_tokens: promptTokens,
    gen_tokens: genTokens,
    decode_tok_s: tokS,
    ms_per_token: 1000 / tokS,
    bytes_per_token: bytesPerToken,
    achieved_gbps: achieved,
    copy_gbps: copyBps === null ? null : copyBps / 1e9,
    bandwidth_fraction: copyBps === null ? null : (achieved * 1e9) / copyBps,
    ttft_ms: ttftMs,
    ttft_prompt_tokens: ttftTokens > 0 ? ttftTokens : null,
    verify_step_ms: verifyMs,
    verify_context: verifyMs ? verifyContext : null,
    spec: specLengths && benchSpeculation(executor, randomIds(promptTokens), genTokens, specLengths),
    timeline: timeline && timelineResult(timeline),
    verify_timeline: verifyTimelines.length
      ? Object.fromEntries(verifyTimelines.map((v) => [String(v.m), timelineResult(v.timeline!)]))
      : null,
  };
  const line = JSON.stringify(result, null, 2);
  process.stdout.write(line + "\n");
  process.stderr.write(
    `${values.shape} ${result.weights} on ${result.gpu ?? os.cpus()[0]?.model}: ${tokS.toFixed(1)} tok/s ` +
      `(${result.ms_per_token.toFixed(2)} ms/token), ${achieved.toFixed(0)} GB/s` +
      (copyBps
        ? ` = ${((100 * achieved * 1e9) / copyBps).toFixed(1)}% of ${(copyBps / 1e9).toFixed(0)} GB/s copy`
        : "") +
      (ttftMs !== null ? `; first token after ${ttftTokens} prompt tokens: ${ttftMs.toFixed(1)} ms` : "") +
      (verifyMs
        ? `; step of M rows (M: ms): ${Object.entries(verifyMs)
            .map(([m, ms]) => `${m}: ${ms.toFixed(2)}`)
            .join(", ")}`
        : "") +
      "\n",
  );
  if (result.spec) printSpec(result.spec);
  if (timeline) printTimeline("the decode graph", timeline);
  for (const v of verifyTimelines) printTimeline(`a verify step's graph of ${v.m} rows`, v.timeline!);
  if (values.out) fs.writeFileSync(values.out, line + "\n");
  if (values.profile && gpu) profileSteps(gpu, cfg, weights, randomIds(512));
  return 0;
}

/** `--weights`: bf16 (the default), or SCHEME[-gGROUP] such as fp8, int8, int4-g128, int2-g32. */
function parseWeights(spec: string): RandomQuant | null {
  if (spec === "bf16") return null;
  const m = /^(fp8|int8|int4|int2)(?:-g(\d+))?$/.exec(spec);
  if (!m || (m[1] === "fp8" && m[2])) {
    throw new TachyonError(
      `--weights ${spec}: expected bf16, fp8, int8[-gN], int4-gN or int2-gN (N = 32, 64 or 128)`,
      "argument",
    );
  }
  const groupSize = m[2] ? Number(m[2]) : m[1] === "int4" || m[1] === "int2" ? 128 : 0;
  return { scheme: m[1] as QuantScheme, groupSize };
}

/**
 * Bytes of weights a one-row decode step reads: linear layers at their quantized size (codes,
 * plus a 4-byte scale entry per group or fp8 block), the rest at `elemBytes`. An embedding table
 * is read one row a token, unless it is also the output head (tied). Until session 17 of
 * docs/BENCHMARKS.md the whole table was counted, as gpt-fast's "parameters × bytes" does: 1.05 GB
 * too many for an 8B step, which overstated every fraction of bandwidth.
 */
export function weightBytes(cfg: ModelConfig, elemBytes: number, quant: RandomQuant | null): number {
  const tied = cfg.tieWordEmbeddings === true;
  let bytes = 0;
  for (const [name, dims] of expectedTensors(cfg, !tied)) {
    const n = dims.reduce((a, b) => a * b, 1);
    if (name === "model.embed_tokens.weight") {
      bytes += (tied ? n : dims[1]) * elemBytes;
      continue;
    }
    if (!quant || dims.length !== 2) {
      bytes += n * elemBytes;
      continue;
    }
    const [rows, cols] = dims;
    const groups =
      quant.scheme === "fp8"
        ? Math.ceil(rows / 128) * Math.ceil(cols / 128)
        : rows * (cols / (quant.groupSize || cols));
    bytes += (n * schemeBits[quant.scheme]) / 8 + 4 * groups;
  }
  return bytes;
}

/** The accepted lengths --spec oracle measures, or null without speculation. */
function acceptedLengths(method: string | undefined, list: string | undefined): number[] | null {
  if (method === "none") return null;
  if (method !== "oracle") {
    throw new TachyonError(`bench --spec must be oracle or none, got "${method}"`, "argument");
  }
  const lengths = (list ?? "").split(",").map(Number);
  if (!lengths.every((L) => Number.isInteger(L) && L >= 1 && L <= 15)) {
    throw new TachyonError(
      `--spec-accepted needs integers in [1, 15] separated by commas, got "${list}"`,
      "argument",
    );
  }
  return lengths;
}

function printSpec(s: SpecBenchResult): void {
  process.stderr.write(
    `speculation (oracle proposals, all accepted): 1-token step ${s.one_token_step_ms.toFixed(2)} ms, ` +
      `${s.plain_decode_tok_s.toFixed(1)} tok/s plain\n`,
  );
  s.accepted_length.forEach((L, i) => {
    process.stderr.write(
      `  L=${L}: ${s.tokens_per_step[i].toFixed(2)} tokens/step, ${s.decode_tok_s[i].toFixed(1)} tok/s ` +
        `(${s.speedup[i].toFixed(2)}x), verify step ${s.verify_step_ms[i].toFixed(2)} ms = ` +
        `${s.verify_step_relative[i].toFixed(2)}x a 1-token step` +
        (s.greedy_equal[i] ? "" : ", output differs from plain greedy decoding") +
        "\n",
    );
  });
}

/**
 * Prints where the GPU time goes, per operation: for a 512-token prefill step, then for one
 * decode step after it. Operations run one by one (no graph), each between two events.
 */
function profileSteps(gpu: CudaBackend, cfg: ModelConfig, weights: ModelWeights, prompt: number[]): void {
  const { backend, report } = profilingBackend(gpu);
  const executor = new ModelExecutor(backend, cfg, weights, {
    maxTokens: prompt.length + 32,
    contextLength: prompt.length + 16,
  });
  const seq = executor.newSequence();
  executor.stepGreedy([{ seq, tokens: prompt }]);
  printProfile(`one ${prompt.length}-token prefill step`, report());
  let decode: OpProfile[] = [];
  for (let i = 0; i < 3; i++) {
    executor.stepGreedy([{ seq, tokens: [1] }]);
    decode = report(); // the last of three, warm
  }
  printProfile(`one decode step at context ${prompt.length}`, decode);
  seq.free();
}

function printProfile(what: string, rows: OpProfile[]): void {
  const total = rows.reduce((t, r) => t + r.ms, 0);
  process.stderr.write(`${what}, operations run one by one (no graph):\n`);
  for (const r of rows) {
    process.stderr.write(
      `  ${r.op.padEnd(18)} ${String(r.calls).padStart(4)} calls ${(r.ms * 1000).toFixed(0).padStart(7)} us ${((100 * r.ms) / total).toFixed(1).padStart(5)}%\n`,
    );
  }
  process.stderr.write(`  ${"total".padEnd(18)} ${(total * 1000).toFixed(0).padStart(18)} us\n`);
}

/** The kernel timeline of `steps` decode steps after a prefill of `prompt`, run as decode() runs them. */
function decodeTimeline(
  timeline: Timeline,
  executor: ModelExecutor,
  prompt: number[],
  steps: number,
): TimelineSummary {
  decode(executor, prompt, steps, () => timeline.start());
  return summarise(timeline.stop());
}

function timelineResult(t: TimelineSummary): TimelineResult {
  return {
    runs: t.runs,
    run_us: t.runUs,
    period_us: t.periodUs,
    between_us: t.betweenUs,
    last_us: t.lastUs,
    kernels: t.rows,
  };
}

function printTimeline(
  graph: string,
  { rows, runUs, runs, periodUs, betweenUs, lastUs }: TimelineSummary,
): void {
  process.stderr.write(
    `inside ${graph} (${runs} steps, from each kernel passing its wait to the next one passing its own):\n` +
      `  ${"kernel".padEnd(34)} per step  mean us  us/step  share  first block waited us\n`,
  );
  for (const r of rows) {
    process.stderr.write(
      `  ${r.kernel.padEnd(34)} ${r.perRun.toFixed(0).padStart(8)} ${r.meanUs.toFixed(2).padStart(8)} ` +
        `${r.runUs.toFixed(1).padStart(8)} ${((100 * r.runUs) / runUs).toFixed(1).padStart(5)}% ${r.waitedUs.toFixed(2).padStart(8)}\n`,
    );
  }
  process.stderr.write(
    `  ${"total (the last kernel untimed)".padEnd(34)} ${runUs.toFixed(1).padStart(26)}\n`,
  );
  if (periodUs !== null && betweenUs !== null && lastUs !== null)
    process.stderr.write(
      `  a step every ${periodUs.toFixed(1)} us; from its last kernel's pass to the next step's first ` +
        `${betweenUs.toFixed(1)} us: that kernel ${lastUs.toFixed(1)}, then work outside the graph and the launch\n`,
    );
}

/**
 * Mean time of a step that appends `rows` tokens to a sequence of `context` tokens and keeps
 * every row's logits (the shape of a speculative verify step), rolled back after each step; with
 * a timeline, also its kernels' costs over 10 more steps, recorded after the timed ones.
 */
function verifyStep(
  executor: ModelExecutor,
  randomIds: (n: number) => number[],
  context: number,
  rows: number,
  timeline: Timeline | null,
): { ms: number; timeline: TimelineSummary | null } {
  const seq = executor.newSequence();
  try {
    prefill(executor, seq, randomIds(context));
    const tokens = randomIds(rows);
    const step = () => {
      executor.stepGreedy([{ seq, tokens, allLogits: true }]);
      seq.length -= rows;
    };
    for (let i = 0; i < 3; i++) step(); // captures the graph
    const t0 = performance.now();
    for (let i = 0; i < 50; i++) step();
    const ms = (performance.now() - t0) / 50;
    if (!timeline) return { ms, timeline: null };
    timeline.start();
    for (let i = 0; i < 10; i++) step();
    return { ms, timeline: summarise(timeline.stop()) };
  } finally {
    seq.free();
  }
}

/**
 * Greedy decoding of one fresh sequence: prefill `prompt` (in chunks the backend accepts), then
 * `count - 1` single-token steps, pipelined as `tachyon run` decodes (GreedyPipeline). Returns the
 * time to the first token and of the rest; `afterPrefill` runs between the two, in neither.
 */
function decode(
  executor: ModelExecutor,
  prompt: number[],
  count: number,
  afterPrefill?: () => void,
): { firstTokenMs: number; decodeMs: number } {
  const seq = executor.newSequence();
  try {
    const t0 = performance.now();
    const token = prefill(executor, seq, prompt);
    const firstTokenMs = performance.now() - t0;
    afterPrefill?.();
    const t1 = performance.now();
    if (count > 1) {
      const pipeline = new GreedyPipeline(executor, seq, token);
      for (let i = 1; i < count; i++) pipeline.next(i < count - 1);
    }
    return { firstTokenMs, decodeMs: performance.now() - t1 };
  } finally {
    seq.free();
  }
}

/** Feeds `prompt` to `seq` in chunks the backend accepts; returns the greedy next token. */
function prefill(executor: ModelExecutor, seq: SequenceKv, prompt: number[]): number {
  let token = 0;
  for (let i = 0; i < prompt.length; i += 512)
    [token] = executor.stepGreedy([{ seq, tokens: prompt.slice(i, i + 512) }]);
  return token;
}
