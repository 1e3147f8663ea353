/**
 * The OpenAI-compatible HTTP server on Fastify: routes, API keys, error bodies, metrics and a
 * graceful shutdown. Generation itself happens in each model's scheduler; this layer only turns
 * HTTP into requests for it and its output back into OpenAI's shapes.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from "fastify";
import { ApiError, toApiError } from "./api-error.js";
import { serveCompletion } from "./completion-handler.js";
import type { CompletionKind } from "./completion-request.js";
import { ServerMetrics } from "./metrics.js";
import type { ModelRegistry } from "./model-registry.js";

export interface ServerOptions {
  models: ModelRegistry;
  /** When given, /v1 requests need `Authorization: Bearer KEY` with one of them. */
  apiKeys?: string[];
  /** Largest request body accepted, in bytes (default 4 MiB). */
  bodyLimit?: number;
}

export interface TachyonServer {
  app: FastifyInstance;
  metrics: ServerMetrics;
  /**
   * Stops accepting requests and lets those in flight finish; after `timeoutMs` the generations
   * still running are ended (finish reason "abort", streams closed cleanly). Resolves once closed.
   */
  shutdown(timeoutMs: number): Promise<void>;
}

const sha256 = (s: string): Buffer => createHash("sha256").update(s).digest();

export function createServer(options: ServerOptions): TachyonServer {
  const { models } = options;
  const app = Fastify({ bodyLimit: options.bodyLimit ?? 4 * 1024 * 1024, logger: false });
  const metrics = new ServerMetrics(models);
  const inflight = new Set<Promise<unknown>>();
  let closing: Promise<void> | null = null;

  const keys = (options.apiKeys ?? []).map(sha256);
  if (keys.length > 0) {
    app.addHook("onRequest", async (request) => {
      if (!request.url.startsWith("/v1/")) return; // health checks and scrapes stay open
      const header = request.headers.authorization;
      const given = /^Bearer\s+(\S+)\s*$/i.exec(header ?? "")?.[1];
      if (given === undefined) {
        throw new ApiError(
          401,
          "You didn't provide an API key: send it as 'Authorization: Bearer KEY'.",
          "invalid_request_error",
          null,
          "invalid_api_key",
        );
      }
      const digest = sha256(given);
      if (!keys.some((k) => timingSafeEqual(k, digest))) {
        throw new ApiError(
          401,
          "Incorrect API key provided.",
          "invalid_request_error",
          null,
          "invalid_api_key",
        );
      }
    });
  }

  app.setErrorHandler((err, _request, reply) => {
    const e = toApiError(err);
    metrics.errors.inc({ status: String(e.status) });
    void reply.code(e.status).headers(e.headers).send(e.body());
  });
  app.setNotFoundHandler((request, reply) => {
    const e = new ApiError(
      404,
      `Unknown route ${request.method} ${request.url}; this server serves POST /v1/chat/completions, ` +
        "POST /v1/completions, GET /v1/models, GET /health and GET /metrics.",
      "invalid_request_error",
      null,
      "unknown_url",
    );
    void reply.code(404).send(e.body());
  });

  app.get("/health", async () => ({
    status: "ok",
    models: models.list().map((m) => {
      const s = m.scheduler.stats();
      return {
        id: m.name,
        device: m.model.device,
        waiting: s.waiting,
        running: s.running,
        kv_blocks_used: s.kvBlocksUsed,
        kv_blocks_total: s.kvBlocks,
      };
    }),
  }));
  app.get("/metrics", async (_request, reply) =>
    reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()),
  );
  const modelCard = (m: ReturnType<ModelRegistry["list"]>[number]) => ({
    id: m.name,
    object: "model",
    created: m.created,
    owned_by: "tachyon",
  });
  app.get("/v1/models", async () => ({ object: "list", data: models.list().map(modelCard) }));
  app.get<{ Params: { id: string } }>("/v1/models/:id", async (request) =>
    modelCard(models.get(request.params.id)),
  );

  const completion = (kind: CompletionKind) => (request: FastifyRequest, reply: FastifyReply) => {
    const work = serveCompletion(kind, request, reply, models, metrics);
    inflight.add(work);
    return work.finally(() => inflight.delete(work));
  };
  app.post("/v1/chat/completions", completion("chat"));
  app.post("/v1/completions", completion("text"));

  const shutdown = async (timeoutMs: number): Promise<void> => {
    models.close(); // new requests get 503 from here on
    const closed = app.close(); // stops accepting connections; requests on open ones get 503
    const deadline = setTimeout(() => models.abortAll(), timeoutMs);
    while (inflight.size > 0) await Promise.allSettled([...inflight]);
    clearTimeout(deadline);
    app.server.closeAllConnections(); // idle keep-alive connections would hold the close open
    await closed;
    metrics.close();
  };
  return {
    app,
    metrics,
    shutdown: (timeoutMs) => (closing ??= shutdown(timeoutMs)),
  };
}
