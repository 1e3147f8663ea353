/** Starts the real server in this process on an ephemeral loopback port, for the server tests. */
import path from "node:path";
import OpenAI from "openai";
import { loadModel } from "../src/index.js";
import type { SchedulerOptions } from "../src/engine/scheduler.js";
import { ModelRegistry } from "../src/server/model-registry.js";
import { createServer, type TachyonServer } from "../src/server/server.js";
import { repoRoot } from "./paths.js";

export const tinyDir = path.join(repoRoot, "models", "tachyon-code-tiny");
export const draftDir = path.join(repoRoot, "models", "tachyon-code-draft");

export interface TestServer {
  url: string;
  server: TachyonServer;
  models: ModelRegistry;
  client(apiKey?: string): OpenAI;
  /** GET /health's per-model figures. */
  health(): Promise<{ id: string; waiting: number; running: number; kv_blocks_used: number }[]>;
  /** The value of a metric line (name with labels) in GET /metrics. */
  metric(line: string): Promise<number>;
  close(): Promise<void>;
}

export async function startTestServer(
  options: {
    /** Models to serve, each with an optional draft model for speculation method "draft". */
    models?: { name: string; dir: string; draft?: string }[];
    apiKeys?: string[];
    bodyLimit?: number;
    scheduler?: SchedulerOptions;
  } = {},
): Promise<TestServer> {
  const specs = options.models ?? [{ name: "tiny", dir: tinyDir }];
  const load = (dir: string) => loadModel(dir, { device: "cpu", kvCacheTokens: 8192 });
  const loaded = await Promise.all(
    specs.map(async ({ name, dir, draft }) => ({
      name,
      model: await load(dir),
      draft: draft === undefined ? undefined : await load(draft),
    })),
  );
  const models = new ModelRegistry(loaded, options.scheduler);
  const server = createServer({ models, apiKeys: options.apiKeys, bodyLimit: options.bodyLimit });
  const url = await server.app.listen({ host: "127.0.0.1", port: 0 });
  return {
    url,
    server,
    models,
    client: (apiKey = "none") => new OpenAI({ baseURL: `${url}/v1`, apiKey, maxRetries: 0 }),
    health: async () => ((await (await fetch(`${url}/health`)).json()) as { models: [] }).models,
    metric: async (line) => {
      const text = await (await fetch(`${url}/metrics`)).text();
      const found = text.split("\n").find((l) => l.startsWith(line + " "));
      if (found === undefined) throw new Error(`no metric ${line} in:\n${text}`);
      return Number(found.slice(line.length + 1));
    },
    close: () => server.shutdown(0),
  };
}

/** Polls until `check` passes (the scheduler frees blocks at its next step, not at once). */
export async function eventually(check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error("condition not reached in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}
