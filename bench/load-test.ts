/**
 * Load test of `tachyon serve` over loopback with the official openai client: many concurrent
 * streaming completions, each checked to arrive whole (a finish reason and the usage chunk), then
 * the server's KV blocks checked to be all returned. Reports time to first token, inter-token
 * latency, per-stream and aggregate tokens per second.
 *
 *   node dist/bench/load-test.js [--url http://HOST:PORT | -- SERVE_ARGS...] [options]
 *
 * Without --url it starts `tachyon serve --port 0 SERVE_ARGS` itself and stops it at the end.
 * `--sweep 1,8,32,64` runs one level per concurrency (each `--rounds` requests per stream).
 * `--spec ngram|mtp|draft` (and `--spec-k N`) makes every request speculate; the report then
 * adds the tokens proposed and accepted, from each response's usage.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import OpenAI from "openai";
import type { CompletionUsage } from "openai/resources/completions";

export interface LoadOptions {
  /** The server's root, e.g. http://127.0.0.1:8000. */
  url: string;
  apiKey?: string;
  model: string;
  concurrency: number;
  requests: number;
  maxTokens: number;
  /** Text prompts used in turn; ignored when promptTokens is set. */
  prompts?: string[];
  /** Prompts of this many random token ids (below 8192), distinct per request: no prefix sharing. */
  promptTokens?: number;
  /** Generate exactly maxTokens (vLLM's ignore_eos), so every stream does the same work. */
  ignoreEos?: boolean;
  /** Every request speculates this way (tachyon's `speculation` request field). */
  speculation?: { method: string; k?: number };
}

export interface Percentiles {
  p50: number;
  p90: number;
  p99: number;
  mean: number;
}

export interface LoadReport {
  concurrency: number;
  requests: number;
  completed: number;
  failed: number;
  /** Streams that ended without a finish reason or without the usage chunk. */
  incomplete: number;
  /** With speculation: tokens proposed and accepted over the completed requests. */
  speculation: { proposed_tokens: number; accepted_tokens: number; acceptance_ratio: number } | null;
  errors: string[];
  wall_s: number;
  completion_tokens: number;
  aggregate_tok_s: number;
  /** Each stream's completion tokens over its time from request to last chunk. */
  per_stream_tok_s: Percentiles;
  /** Request → first chunk with text. */
  ttft_ms: Percentiles;
  /**
   * Gaps between chunks with text. A chunk carries one token's text, except where the server
   * holds text back (an incomplete UTF-8 character, a possible stop string): random-weight models
   * emit many partial byte sequences, so there the gaps span several tokens.
   */
  itl_ms: Percentiles;
}

export const defaultPrompts = [
  "def fibonacci(n):\n",
  "import os\nimport sys\n\n",
  "class Stack:\n    def __init__(self):\n",
  "def read_json(path):\n    with open(path) as f:\n",
  "# Sort a list of numbers in place\n",
  "for i in range(10):\n",
  "def is_prime(n: int) -> bool:\n",
  "from dataclasses import dataclass\n\n@dataclass\nclass Point:\n",
];

/** A completion's usage, with tachyon's speculation counts when the request speculated. */
type SpeculationUsage = CompletionUsage & {
  speculation?: { proposed_tokens: number; accepted_tokens: number };
};

function percentiles(values: number[]): Percentiles {
  if (values.length === 0) return { p50: 0, p90: 0, p99: 0, mean: 0 };
  const s = [...values].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), mean: s.reduce((a, b) => a + b, 0) / s.length };
}

/** Runs `requests` streaming completions, `concurrency` at a time. */
export async function runLoad(o: LoadOptions): Promise<LoadReport> {
  const client = new OpenAI({
    baseURL: `${o.url}/v1`,
    apiKey: o.apiKey ?? "none",
    maxRetries: 0,
    timeout: 600_000,
  });
  const prompts = o.prompts ?? defaultPrompts;
  let seed = 1;
  const randomIds = (n: number) =>
    Array.from({ length: n }, () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % 8192);
  const ttft: number[] = [];
  const itl: number[] = [];
  const perStream: number[] = [];
  const errors: string[] = [];
  let completed = 0;
  let incomplete = 0;
  let tokens = 0;
  let proposed = 0;
  let accepted = 0;

  const one = async (i: number): Promise<void> => {
    const start = performance.now();
    const params = {
      model: o.model,
      prompt: o.promptTokens ? randomIds(o.promptTokens) : prompts[i % prompts.length],
      max_tokens: o.maxTokens,
      temperature: 0,
      stream: true as const,
      stream_options: { include_usage: true },
      ...(o.ignoreEos && { ignore_eos: true }),
      ...(o.speculation && { speculation: o.speculation }),
    };
    const stream = await client.completions.create(params);
    const arrivals: number[] = [];
    let finished = false;
    let usage: SpeculationUsage | null = null;
    let last = start;
    for await (const chunk of stream) {
      last = performance.now();
      const choice = chunk.choices[0];
      if (choice?.text) arrivals.push(last);
      if (choice?.finish_reason) finished = true;
      usage = (chunk.usage as SpeculationUsage | null | undefined) ?? usage;
    }
    if (!finished || !usage?.completion_tokens || (o.speculation && !usage.speculation)) {
      incomplete++;
      return;
    }
    completed++;
    tokens += usage.completion_tokens;
    proposed += usage.speculation?.proposed_tokens ?? 0;
    accepted += usage.speculation?.accepted_tokens ?? 0;
    if (arrivals.length > 0) ttft.push(arrivals[0] - start);
    for (let k = 1; k < arrivals.length; k++) itl.push(arrivals[k] - arrivals[k - 1]);
    perStream.push((usage.completion_tokens * 1000) / (last - start));
  };

  let next = 0;
  const worker = async () => {
    while (next < o.requests) {
      const i = next++;
      try {
        await one(i);
      } catch (e) {
        errors.push((e as Error).message);
      }
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(o.concurrency, o.requests) }, worker));
  const wall = (performance.now() - t0) / 1000;
  return {
    concurrency: o.concurrency,
    requests: o.requests,
    completed,
    failed: errors.length,
    incomplete,
    speculation: o.speculation
      ? { proposed_tokens: proposed, accepted_tokens: accepted, acceptance_ratio: accepted / (proposed || 1) }
      : null,
    errors: errors.slice(0, 10),
    wall_s: wall,
    completion_tokens: tokens,
    aggregate_tok_s: tokens / wall,
    per_stream_tok_s: percentiles(perStream),
    ttft_ms: percentiles(ttft),
    itl_ms: percentiles(itl),
  };
}

/** KV blocks each model still holds, from GET /health (0 everywhere once every request is done). */
export async function kvBlocksInUse(url: string): Promise<Record<string, number>> {
  const health = (await (await fetch(`${url}/health`)).json()) as {
    models: { id: string; kv_blocks_used: number }[];
  };
  return Object.fromEntries(health.models.map((m) => [m.id, m.kv_blocks_used]));
}

/** Starts `tachyon serve --port 0 ...args` and resolves with its address once it listens. */
export function startServe(args: string[], echo = false): Promise<{ url: string; child: ChildProcess }> {
  const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../src/cli/main.js");
  const child = spawn(process.execPath, [cli, "serve", "--port", "0", ...args], {
    stdio: ["ignore", "inherit", "pipe"],
  });
  return new Promise((resolve, reject) => {
    let log = "";
    child.stderr!.on("data", (d: Buffer) => {
      log += d.toString();
      if (echo) process.stderr.write(d);
      const m = / on (http:\/\/\S+) /.exec(log);
      if (m) resolve({ url: m[1], child });
    });
    child.on("exit", (code) => reject(new Error(`tachyon serve exited (${code}) before listening:\n${log}`)));
  });
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    options: {
      url: { type: "string" },
      "api-key": { type: "string" },
      model: { type: "string" },
      concurrency: { type: "string", default: "64" },
      requests: { type: "string", default: "1000" },
      "max-tokens": { type: "string", default: "8" },
      "prompt-tokens": { type: "string" },
      "ignore-eos": { type: "boolean", default: false },
      sweep: { type: "string" },
      rounds: { type: "string", default: "2" },
      spec: { type: "string" },
      "spec-k": { type: "string" },
      out: { type: "string" },
    },
    allowPositionals: true,
  });
  const server = values.url ? null : await startServe(positionals, true);
  const url = values.url ?? server!.url;
  try {
    const model =
      values.model ??
      (
        (await (
          await fetch(`${url}/v1/models`, { headers: { authorization: `Bearer ${values["api-key"]}` } })
        ).json()) as {
          data: { id: string }[];
        }
      ).data[0].id;
    const base = {
      url,
      apiKey: values["api-key"],
      model,
      maxTokens: Number(values["max-tokens"]),
      promptTokens: values["prompt-tokens"] ? Number(values["prompt-tokens"]) : undefined,
      ignoreEos: values["ignore-eos"],
      speculation: values.spec
        ? { method: values.spec, ...(values["spec-k"] && { k: Number(values["spec-k"]) }) }
        : undefined,
    };
    const levels = values.sweep
      ? values.sweep
          .split(",")
          .map((c) => ({ concurrency: Number(c), requests: Number(c) * Number(values.rounds) }))
      : [{ concurrency: Number(values.concurrency), requests: Number(values.requests) }];
    const reports: LoadReport[] = [];
    for (const level of levels) {
      const r = await runLoad({ ...base, ...level });
      reports.push(r);
      process.stderr.write(
        `concurrency ${r.concurrency}: ${r.completed}/${r.requests} complete, ${r.failed} failed, ${r.incomplete} incomplete in ${r.wall_s.toFixed(1)} s; ` +
          `${r.aggregate_tok_s.toFixed(1)} tok/s aggregate, ${r.per_stream_tok_s.p50.toFixed(1)} tok/s per stream (p50); ` +
          `TTFT p50 ${r.ttft_ms.p50.toFixed(0)} ms p99 ${r.ttft_ms.p99.toFixed(0)} ms; ITL p50 ${r.itl_ms.p50.toFixed(1)} ms p99 ${r.itl_ms.p99.toFixed(1)} ms` +
          (r.speculation
            ? `; ${values.spec} acceptance ${(100 * r.speculation.acceptance_ratio).toFixed(1)}% of ${r.speculation.proposed_tokens} proposed`
            : "") +
          "\n",
      );
    }
    const kv = await kvBlocksInUse(url);
    const result = {
      date: new Date().toISOString().slice(0, 10),
      machine: `${os.cpus()[0]?.model ?? "unknown CPU"}, ${os.cpus().length} cores, Node ${process.version}`,
      command: `node dist/bench/load-test.js ${process.argv.slice(2).join(" ")}`,
      model,
      max_tokens: base.maxTokens,
      kv_blocks_in_use_after: kv,
      levels: reports,
    };
    const json = JSON.stringify(result, null, 2);
    process.stdout.write(json + "\n");
    if (values.out) fs.writeFileSync(values.out, json + "\n");
    const lost = reports.reduce((n, r) => n + r.failed + r.incomplete, 0);
    if (lost > 0 || Object.values(kv).some((b) => b > 0)) process.exitCode = 1;
  } finally {
    server?.child.kill("SIGTERM");
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
