/**
 * Prometheus metrics (GET /metrics) through prom-client, in a registry of the server's own so
 * that several servers can live in one process. Latencies are observed where the server hands
 * tokens to clients; queue, batch and KV-cache figures are read from each model's scheduler at
 * scrape time.
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { ModelRegistry, ServedModel } from "./model-registry.js";

/** Seconds over which tachyon_generated_tokens_per_second averages. */
const rateWindowSeconds = 10;

export class ServerMetrics {
  readonly registry = new Registry();
  readonly timeToFirstToken: Histogram<"model">;
  readonly interTokenLatency: Histogram<"model">;
  readonly requests: Counter<"model" | "endpoint" | "finish_reason">;
  readonly promptTokens: Counter<"model">;
  readonly generatedTokens: Counter<"model">;
  readonly errors: Counter<"status">;
  /** Per model, generated-token counts sampled once a second over the rate window. */
  private readonly tokenSamples = new Map<string, number[]>();
  private readonly sampler: NodeJS.Timeout;

  constructor(models: ModelRegistry) {
    const registers = [this.registry];
    this.timeToFirstToken = new Histogram({
      name: "tachyon_time_to_first_token_seconds",
      help: "Time from a request's arrival to its first generated token",
      labelNames: ["model"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.interTokenLatency = new Histogram({
      name: "tachyon_inter_token_latency_seconds",
      help: "Time between consecutive tokens of one choice",
      labelNames: ["model"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    this.requests = new Counter({
      name: "tachyon_requests_total",
      help: "Completion requests served, by how their choices ended (error: refused or failed)",
      labelNames: ["model", "endpoint", "finish_reason"],
      registers,
    });
    this.promptTokens = new Counter({
      name: "tachyon_prompt_tokens_total",
      help: "Prompt tokens of served requests",
      labelNames: ["model"],
      registers,
    });
    this.generatedTokens = new Counter({
      name: "tachyon_generated_tokens_total",
      help: "Tokens generated and sent",
      labelNames: ["model"],
      registers,
    });

    this.errors = new Counter({
      name: "tachyon_request_errors_total",
      help: "Requests answered with an error, by HTTP status",
      labelNames: ["status"],
      registers,
    });

    // Figures read from the schedulers when scraped.
    const perModel = (name: string, help: string, value: (m: ServedModel) => number): void => {
      new Gauge({
        name,
        help,
        labelNames: ["model"],
        registers,
        collect() {
          for (const m of models.list()) this.set({ model: m.name }, value(m));
        },
      });
    };
    const stats = (m: ServedModel) => m.scheduler.stats();
    perModel("tachyon_queue_depth", "Requests waiting to start", (m) => stats(m).waiting);
    perModel("tachyon_running_requests", "Sequences being generated (in the batch)", (m) => stats(m).running);
    perModel(
      "tachyon_generated_tokens_per_second",
      `Generated tokens per second over the last ${rateWindowSeconds} s`,
      (m) => this.tokenRate(m.name),
    );
    perModel(
      "tachyon_kv_cache_usage_ratio",
      "Share of KV-cache blocks in use",
      (m) => stats(m).kvBlocksUsed / stats(m).kvBlocks,
    );
    perModel("tachyon_kv_cache_blocks_used", "KV-cache blocks in use", (m) => stats(m).kvBlocksUsed);
    perModel("tachyon_kv_cache_blocks_total", "KV-cache blocks", (m) => stats(m).kvBlocks);
    perModel(
      "tachyon_prefix_cache_blocks",
      "KV-cache blocks holding a shareable prefix",
      (m) => stats(m).kvBlocksCached,
    );
    perModel(
      "tachyon_prefix_cache_hit_tokens",
      "Prompt tokens served from the prefix cache, since start",
      (m) => stats(m).cachedTokens,
    );
    perModel(
      "tachyon_computed_tokens",
      "Tokens run through the model (prompt and decode rows), since start",
      (m) => stats(m).computedTokens,
    );
    perModel(
      "tachyon_preemptions",
      "Sequences preempted for KV blocks (recomputed later), since start",
      (m) => stats(m).preemptions,
    );
    perModel(
      "tachyon_speculation_acceptance_ratio",
      "Share of the tokens proposed by speculating requests that the model accepted, since start",
      (m) => stats(m).acceptedTokens / (stats(m).proposedTokens || 1),
    );
    // Counts the schedulers keep, reported as counters by what they grew since the last scrape.
    const perModelCounter = (name: string, help: string, value: (m: ServedModel) => number): void => {
      const reported = new Map<string, number>();
      new Counter({
        name,
        help,
        labelNames: ["model"],
        registers,
        collect() {
          for (const m of models.list()) {
            const now = value(m);
            this.inc({ model: m.name }, now - (reported.get(m.name) ?? 0));
            reported.set(m.name, now);
          }
        },
      });
    };
    perModelCounter(
      "tachyon_speculation_proposed_tokens_total",
      "Tokens proposed by speculating requests (n-gram, MTP or draft model)",
      (m) => stats(m).proposedTokens,
    );
    perModelCounter(
      "tachyon_speculation_accepted_tokens_total",
      "Proposed tokens the model accepted",
      (m) => stats(m).acceptedTokens,
    );

    this.sampler = setInterval(() => {
      for (const m of models.list()) {
        const samples = this.tokenSamples.get(m.name) ?? [];
        samples.push(m.scheduler.stats().generatedTokens);
        if (samples.length > rateWindowSeconds + 1) samples.shift();
        this.tokenSamples.set(m.name, samples);
      }
    }, 1000).unref();
  }

  /** Generated tokens per second over the samples of the last window. */
  private tokenRate(model: string): number {
    const samples = this.tokenSamples.get(model) ?? [];
    const span = samples.length - 1;
    return span > 0 ? (samples[span] - samples[0]) / span : 0;
  }

  close(): void {
    clearInterval(this.sampler);
  }
}
