/**
 * Serves one chat or text completion request: tokenizes it, checks it against the model, submits
 * its choices to the model's scheduler and answers with one JSON response or a stream of
 * server-sent events ending in `data: [DONE]`. A client that goes away aborts its generations, which
 * frees their KV blocks at the scheduler's next step.
 */
import { randomUUID } from "node:crypto";
import type { ServerResponse } from "node:http";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { GeneratedToken, GenerationResult, SpeculationOptions } from "../engine/generate.js";
import { invalidField, toApiError } from "./api-error.js";
import { parseCompletionRequest, type CompletionKind, type CompletionRequest } from "./completion-request.js";
import { ChoiceLogprobs, ResponseFormat, type TokenLogprobs, type Usage } from "./completion-response.js";
import type { ServerMetrics } from "./metrics.js";
import type { ModelRegistry, ServedModel } from "./model-registry.js";

type TokenStream = AsyncGenerator<GeneratedToken, GenerationResult>;

export async function serveCompletion(
  kind: CompletionKind,
  request: FastifyRequest,
  reply: FastifyReply,
  models: ModelRegistry,
  metrics: ServerMetrics,
): Promise<void> {
  const arrival = performance.now();
  const req = parseCompletionRequest(kind, request.body);
  const served = models.get(req.model);
  const prompts = promptIds(req, served);
  const speculation = servedSpeculation(req, served);

  // Aborted when the client disconnects before the response is complete.
  const abort = new AbortController();
  reply.raw.on("close", () => {
    if (!reply.raw.writableFinished) abort.abort();
  });
  const streams: TokenStream[] = [];
  try {
    for (const ids of prompts) {
      streams.push(
        ...served.scheduler.submit(ids, { ...req.options, speculation, signal: abort.signal }, req.n),
      );
    }
  } catch (e) {
    abort.abort(); // choices of earlier prompts were already queued
    throw e;
  }
  const endpoint = kind === "chat" ? "chat" : "completions";
  const format = new ResponseFormat(
    kind,
    `${kind === "chat" ? "chatcmpl" : "cmpl"}-${randomUUID()}`,
    Math.floor(Date.now() / 1000),
    served.name,
    req.logprobs !== undefined,
  );
  const timing = new TokenTiming(metrics, served.name, arrival);
  const promptTokens = prompts.reduce((n, p) => n + p.length, 0);
  metrics.promptTokens.inc({ model: served.name }, promptTokens);
  const usage = (results: GenerationResult[]): Usage => {
    const sum = (count: (r: GenerationResult) => number) => results.reduce((n, r) => n + count(r), 0);
    const completion = sum((r) => r.completionTokens);
    return {
      prompt_tokens: promptTokens,
      completion_tokens: completion,
      total_tokens: promptTokens + completion,
      ...(req.options.speculation && {
        speculation: {
          proposed_tokens: sum((r) => r.speculation!.proposedTokens),
          accepted_tokens: sum((r) => r.speculation!.acceptedTokens),
        },
      }),
    };
  };
  const count = (reason: string) =>
    metrics.requests.inc({ model: served.name, endpoint, finish_reason: reason });

  if (!req.stream) {
    const choices = await Promise.all(
      streams.map(async (stream) => {
        const entries: TokenLogprobs[] = [];
        const result = await readChoice(stream, served, timing, (_chunk, added) => entries.push(...added));
        return { result, entries };
      }),
    ).catch((e: unknown) => {
      abort.abort();
      throw e;
    });
    const results = choices.map((c) => c.result);
    count(results[0].finishReason);
    await reply.send(
      format.response(
        choices.map((c) => ({
          text: c.result.text,
          logprobs: c.entries,
          finishReason: c.result.finishReason,
        })),
        usage(results),
      ),
    );
    return;
  }

  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    connection: "keep-alive",
  });
  const send = (data: object | string) => {
    if (!res.destroyed && !res.writableEnded)
      res.write(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`);
  };
  // With include_usage every chunk carries "usage": null and a last chunk carries the counts.
  const chunkUsage = req.includeUsage ? null : undefined;
  try {
    const results = await Promise.all(
      streams.map(async (stream, index) => {
        if (kind === "chat") send(format.chunk(index, { text: "", logprobs: [], first: true }, chunkUsage));
        const result = await readChoice(stream, served, timing, (chunk, logprobs) => {
          // Tokens whose text is held back (a possible stop string) send nothing unless they carry logprobs.
          if (chunk.text !== "" || logprobs.length > 0)
            send(format.chunk(index, { text: chunk.text, logprobs }, chunkUsage));
        });
        send(format.chunk(index, { text: "", logprobs: [], finishReason: result.finishReason }, chunkUsage));
        return result;
      }),
    );
    count(results[0].finishReason);
    if (req.includeUsage) send(format.usageChunk(usage(results)));
  } catch (e) {
    // Headers are gone: the failure travels as an error event, the way OpenAI streams report one.
    abort.abort();
    count("error");
    send(toApiError(e).body());
  }
  send("[DONE]");
  endStream(res);
}

/** Reads one choice to its end, timing its tokens; `onChunk` sees each chunk with the logprobs it adds. */
async function readChoice(
  stream: TokenStream,
  served: ServedModel,
  timing: TokenTiming,
  onChunk: (chunk: GeneratedToken, logprobs: TokenLogprobs[]) => void,
): Promise<GenerationResult> {
  const logprobs = new ChoiceLogprobs(served.model.tokenizer);
  const observe = timing.forChoice();
  for (;;) {
    const r = await stream.next();
    if (r.done) return r.value;
    observe(r.value);
    onChunk(r.value, logprobs.add(r.value));
  }
}

function endStream(res: ServerResponse): void {
  if (!res.destroyed && !res.writableEnded) res.end();
}

/** Each prompt as token ids, checked against the model's vocabulary and context. */
function promptIds(req: CompletionRequest, served: ServedModel): number[][] {
  const { tokenizer, executor, config } = served.model;
  const param = "messages" in req.input ? "messages" : "prompt";
  const prompts =
    "messages" in req.input
      ? [tokenizer.encodeChat(req.input.messages)]
      : req.input.prompts.map((p) => (typeof p === "string" ? tokenizer.encode(p) : p));
  const context = executor.contextLength;
  for (const ids of prompts) {
    const bad = ids.find((t) => t < 0 || t >= config.vocabSize);
    if (bad !== undefined) {
      throw invalidField(
        param,
        `token id ${bad} is outside the model's vocabulary [0, ${config.vocabSize}).`,
      );
    }
    if (ids.length === 0) throw invalidField(param, "the prompt is empty: give at least one token.");
    const maxTokens = req.options.maxTokens ?? 1;
    if (ids.length + maxTokens > context) {
      throw invalidField(
        param,
        `This model's maximum context length is ${context} tokens. However, you requested ` +
          `${ids.length + maxTokens} tokens (${ids.length} in the ${param}, ${maxTokens} for the completion). ` +
          `Please reduce the length of the ${param} or the completion.`,
        "context_length_exceeded",
      );
    }
  }
  return prompts;
}

/**
 * The request's speculation as the served model does it (with its draft model for "draft");
 * speculation it cannot do is refused up front, naming the field.
 */
function servedSpeculation(req: CompletionRequest, served: ServedModel): SpeculationOptions | undefined {
  const speculation = req.options.speculation;
  const method = speculation?.method;
  const refuse = (why: string) =>
    invalidField(
      "speculation.method",
      `'${method}' speculation is not available for '${served.name}': ${why}.`,
    );
  if (method === "mtp" && served.model.config.numMtpModules === 0)
    throw refuse(`the model has no MTP modules; use ngram${served.draft ? " or draft" : ""}`);
  if (method === "draft") {
    if (!served.draft) throw refuse("the server has no draft model for it (tachyon serve --draft-model DIR)");
    return { ...speculation!, draft: served.draft };
  }
  return speculation;
}

/** Observes the time to a request's first token and the gaps between each choice's tokens. */
class TokenTiming {
  private firstSeen = false;
  constructor(
    private readonly metrics: ServerMetrics,
    private readonly model: string,
    private readonly arrival: number,
  ) {}

  /** A tracker for one choice's chunks. */
  forChoice(): (chunk: GeneratedToken) => void {
    let last = 0;
    const labels = { model: this.model };
    return (chunk) => {
      if (chunk.token === null) return;
      const now = performance.now();
      this.metrics.generatedTokens.inc(labels);
      if (!this.firstSeen) {
        this.firstSeen = true;
        this.metrics.timeToFirstToken.observe(labels, (now - this.arrival) / 1000);
      }
      if (last > 0) this.metrics.interTokenLatency.observe(labels, (now - last) / 1000);
      last = now;
    };
  }
}
