/**
 * The bodies of POST /v1/chat/completions and /v1/completions, checked and turned into one
 * request shape the handler serves: what to prompt with, how many choices, how to stream, and the
 * engine's options. Everything here is about the request alone; checks that need the model (the
 * vocabulary, the context length) happen once the model is known.
 */
import type { GenerateOptions, SpeculationOptions } from "../engine/generate.js";
import { specMethods, type SpecMethod } from "../engine/speculative/options.js";
import type { ChatMessage } from "../tokenizer/chat-template.js";
import { ApiError, invalidField } from "./api-error.js";
import {
  asBody,
  optionalBoolean,
  optionalNumber,
  optionalStrings,
  requiredString,
  wrongType,
  type Body,
} from "./request-fields.js";

export type CompletionKind = "chat" | "text";

export interface CompletionRequest {
  kind: CompletionKind;
  model: string;
  /** A chat, or prompts (text or token ids), each completed `n` times. */
  input: { messages: ChatMessage[] } | { prompts: (string | number[])[] };
  n: number;
  stream: boolean;
  includeUsage: boolean;
  /** Top alternatives per token when logprobs are asked for (0 = the token's own only). */
  logprobs: number | undefined;
  /** The engine's options, without the abort signal (the handler adds it). */
  options: GenerateOptions;
}

/** Limits on what one request may ask for. */
const maxChoices = 16;
const maxStopStrings = 16;
const maxTopLogprobs = 20;

/** OpenAI's completions endpoint generates 16 tokens unless told otherwise; chat runs to the context's end. */
const textDefaultMaxTokens = 16;

export function parseCompletionRequest(kind: CompletionKind, raw: unknown): CompletionRequest {
  const body = asBody(raw);
  const model = requiredString(body, "model");
  rejectUnsupported(body, kind);
  const stream = optionalBoolean(body, "stream") ?? false;
  const streamOptions = body.stream_options ?? null;
  if (streamOptions !== null && !stream) {
    throw invalidField("stream_options", "'stream_options' is only allowed when 'stream' is true.");
  }
  const includeUsage =
    streamOptions === null
      ? false
      : (optionalBoolean(asBody(streamOptions, "stream_options"), "include_usage") ?? false);
  const input = kind === "chat" ? { messages: parseMessages(body) } : { prompts: parsePrompts(body) };
  const maxTokens =
    kind === "chat"
      ? (optionalNumber(body, "max_completion_tokens", { min: 1, integer: true }) ??
        optionalNumber(body, "max_tokens", { min: 1, integer: true }))
      : (optionalNumber(body, "max_tokens", { min: 1, integer: true }) ?? textDefaultMaxTokens);
  const options: GenerateOptions = {
    maxTokens,
    temperature: optionalNumber(body, "temperature", { min: 0, max: 2 }),
    topP: optionalNumber(body, "top_p", { min: 0, max: 1, minExclusive: true }),
    topK: optionalNumber(body, "top_k", { min: -1, integer: true }),
    minP: optionalNumber(body, "min_p", { min: 0, max: 1 }),
    presencePenalty: optionalNumber(body, "presence_penalty", { min: -2, max: 2 }),
    frequencyPenalty: optionalNumber(body, "frequency_penalty", { min: -2, max: 2 }),
    repetitionPenalty: optionalNumber(body, "repetition_penalty", { min: 0, max: 10, minExclusive: true }),
    seed: optionalNumber(body, "seed", { integer: true }),
    stop: optionalStrings(body, "stop", maxStopStrings),
    ignoreEos: optionalBoolean(body, "ignore_eos"),
    logprobs:
      kind === "chat"
        ? chatLogprobs(body)
        : optionalNumber(body, "logprobs", { min: 0, max: maxTopLogprobs, integer: true }),
    speculation: parseSpeculation(body),
  };
  return {
    kind,
    model,
    input,
    n: optionalNumber(body, "n", { min: 1, max: maxChoices, integer: true }) ?? 1,
    stream,
    includeUsage,
    logprobs: options.logprobs,
    // Leave unset fields out so the engine's defaults apply.
    options: Object.fromEntries(
      Object.entries(options).filter(([, v]) => v !== undefined),
    ) as GenerateOptions,
  };
}

/** Chat: `logprobs: true` turns them on; `top_logprobs` asks for alternatives. */
function chatLogprobs(body: Body): number | undefined {
  const on = optionalBoolean(body, "logprobs") ?? false;
  const top = optionalNumber(body, "top_logprobs", { min: 0, max: maxTopLogprobs, integer: true });
  if (top !== undefined && !on)
    throw invalidField("top_logprobs", "'top_logprobs' needs 'logprobs' set to true.");
  return on ? (top ?? 0) : undefined;
}

function parseMessages(body: Body): ChatMessage[] {
  const v = body.messages;
  if (v === undefined || v === null)
    throw invalidField("messages", "Missing required parameter: 'messages'.", "missing_required_parameter");
  if (!Array.isArray(v)) throw wrongType("messages", "an array of messages", v);
  if (v.length === 0) throw invalidField("messages", "'messages' must hold at least one message.");
  return v.map((m, i) => {
    const param = `messages[${i}]`;
    const msg = asBody(m, param);
    const role = requiredString(msg, "role");
    if (!["system", "developer", "user", "assistant", "tool"].includes(role)) {
      throw invalidField(
        `${param}.role`,
        `Invalid '${param}.role': expected system, developer, user, assistant or tool, got ${JSON.stringify(role)}.`,
      );
    }
    // The models' chat templates know "system"; OpenAI's "developer" is the same instruction slot.
    return {
      role: role === "developer" ? "system" : role,
      content: messageText(msg.content, `${param}.content`),
    };
  });
}

/** A message's content: a string, or text parts (other part types need abilities this server lacks). */
function messageText(content: unknown, param: string): string {
  if (content === undefined || content === null) return "";
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) throw wrongType(param, "a string or an array of content parts", content);
  return content
    .map((part, i) => {
      const p = asBody(part, `${param}[${i}]`);
      if (p.type !== "text" || typeof p.text !== "string") {
        throw invalidField(
          `${param}[${i}]`,
          `Invalid '${param}[${i}]': only text parts ({"type": "text", "text": "..."}) are supported.`,
        );
      }
      return p.text;
    })
    .join("");
}

/** A completion prompt: a string, token ids, or a list of either (one completion per entry). */
function parsePrompts(body: Body): (string | number[])[] {
  const v = body.prompt;
  if (v === undefined || v === null)
    throw invalidField("prompt", "Missing required parameter: 'prompt'.", "missing_required_parameter");
  const isIds = (x: unknown): x is number[] =>
    Array.isArray(x) && x.length > 0 && x.every((t) => Number.isSafeInteger(t));
  if (typeof v === "string" || isIds(v)) return [v];
  if (Array.isArray(v) && v.length > 0 && v.every((p) => typeof p === "string" || isIds(p))) return v;
  throw wrongType(
    "prompt",
    "a string, an array of strings, an array of token ids or an array of such arrays",
    v,
  );
}

function parseSpeculation(body: Body): SpeculationOptions | undefined {
  const v = body.speculation;
  if (v === undefined || v === null) return undefined;
  const s = asBody(v, "speculation");
  const method = requiredString(s, "method");
  if (!(specMethods as readonly string[]).includes(method)) {
    throw invalidField(
      "speculation.method",
      `Invalid 'speculation.method': expected one of ${specMethods.join(", ")}, got ${JSON.stringify(method)}.`,
    );
  }
  const k = optionalNumber(s, "k", { min: 1, max: 15, integer: true }) ?? 4;
  return { method: method as SpecMethod, maxTokens: k };
}

/** Known OpenAI fields this server cannot honour: refusing them beats silently answering something else. */
function rejectUnsupported(body: Body, kind: CompletionKind): void {
  const refuse = (param: string, what: string) => {
    throw new ApiError(
      400,
      `'${param}' is not supported by this server (${what}).`,
      "invalid_request_error",
      param,
      "unsupported_parameter",
    );
  };
  const nonEmpty = (v: unknown) =>
    v !== undefined &&
    v !== null &&
    !(Array.isArray(v) && v.length === 0) &&
    !(typeof v === "object" && Object.keys(v).length === 0);
  if (nonEmpty(body.tools) || nonEmpty(body.functions))
    refuse(nonEmpty(body.tools) ? "tools" : "functions", "no tool calling");
  if (nonEmpty(body.logit_bias)) refuse("logit_bias", "no logit biases");
  const format = body.response_format as { type?: unknown } | null | undefined;
  if (format && format.type !== "text") refuse("response_format", "text output only");
  if (kind === "text") {
    if (body.echo === true) refuse("echo", "the prompt is not echoed");
    if (nonEmpty(body.suffix)) refuse("suffix", "no insertion");
    if (typeof body.best_of === "number" && body.best_of > 1) refuse("best_of", "use n");
  }
}
