/**
 * The JSON OpenAI's API answers with, for chat (`chat.completion`, `chat.completion.chunk`) and
 * text completions (`text_completion`): whole responses, streamed chunks and their logprobs.
 */
import type { FinishReason, GeneratedToken } from "../engine/generate.js";
import type { Tokenizer } from "../tokenizer/tokenizer.js";
import type { CompletionKind } from "./completion-request.js";

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** tachyon's extension, only when the request asked for speculation: what its choices proposed and kept. */
  speculation?: { proposed_tokens: number; accepted_tokens: number };
}

/** One choice's tokens with their logprobs, as a response reports them. */
export interface TokenLogprobs {
  token: string;
  logprob: number;
  top: { token: string; logprob: number }[];
  /** Characters of the choice's text before this token (completions report it). */
  offset: number;
}

/** Builds the logprobs of one choice token by token (streamed or collected). */
export class ChoiceLogprobs {
  private offset = 0;
  constructor(private readonly tokenizer: Tokenizer) {}

  /** The entries a chunk adds (none for held-back text at the end). */
  add(chunk: GeneratedToken): TokenLogprobs[] {
    const entries: TokenLogprobs[] = [];
    if (chunk.token !== null && chunk.logprob !== undefined) {
      entries.push({
        token: this.tokenizer.decode([chunk.token]),
        logprob: chunk.logprob,
        top: (chunk.topLogprobs ?? []).map((t) => ({ token: t.text, logprob: t.logprob })),
        offset: this.offset,
      });
    }
    this.offset += chunk.text.length;
    return entries;
  }
}

const utf8 = (s: string): number[] => [...Buffer.from(s, "utf8")];

function chatLogprobs(entries: TokenLogprobs[]): object {
  return {
    content: entries.map((e) => ({
      token: e.token,
      logprob: e.logprob,
      bytes: utf8(e.token),
      top_logprobs: e.top.map((t) => ({ token: t.token, logprob: t.logprob, bytes: utf8(t.token) })),
    })),
    refusal: null,
  };
}

function textLogprobs(entries: TokenLogprobs[]): object {
  return {
    tokens: entries.map((e) => e.token),
    token_logprobs: entries.map((e) => e.logprob),
    top_logprobs: entries.map((e) => Object.fromEntries(e.top.map((t) => [t.token, t.logprob]))),
    text_offset: entries.map((e) => e.offset),
  };
}

/** Writes one kind's responses; `id`, `created` and `model` are the same on every chunk of a response. */
export class ResponseFormat {
  constructor(
    private readonly kind: CompletionKind,
    private readonly id: string,
    private readonly created: number,
    private readonly model: string,
    /** Whether the request asked for logprobs (null is reported otherwise). */
    private readonly withLogprobs: boolean,
  ) {}

  private header(object: string): object {
    return { id: this.id, object, created: this.created, model: this.model };
  }

  private logprobs(entries: TokenLogprobs[]): object | null {
    if (!this.withLogprobs) return null;
    return this.kind === "chat" ? chatLogprobs(entries) : textLogprobs(entries);
  }

  /** The whole response of a non-streamed request. */
  response(
    choices: { text: string; logprobs: TokenLogprobs[]; finishReason: FinishReason }[],
    usage: Usage,
  ): object {
    return {
      ...this.header(this.kind === "chat" ? "chat.completion" : "text_completion"),
      choices: choices.map((c, index) =>
        this.kind === "chat"
          ? {
              index,
              message: { role: "assistant", content: c.text, refusal: null },
              logprobs: this.logprobs(c.logprobs),
              finish_reason: c.finishReason,
            }
          : { index, text: c.text, logprobs: this.logprobs(c.logprobs), finish_reason: c.finishReason },
      ),
      usage,
    };
  }

  /**
   * A streamed chunk for one choice: new text (the chat's first chunk also names the role), or
   * with a finish reason its last. `usage` is null on every chunk when the client asked for usage.
   */
  chunk(
    index: number,
    delta: { text: string; logprobs: TokenLogprobs[]; first?: boolean; finishReason?: FinishReason },
    usage: Usage | null | undefined,
  ): object {
    const finish_reason = delta.finishReason ?? null;
    const logprobs = delta.logprobs.length > 0 ? this.logprobs(delta.logprobs) : null;
    const choice =
      this.kind === "chat"
        ? {
            index,
            delta: delta.finishReason
              ? {}
              : delta.first
                ? { role: "assistant", content: delta.text }
                : { content: delta.text },
            logprobs,
            finish_reason,
          }
        : { index, text: delta.text, logprobs, finish_reason };
    return { ...this.header(this.chunkObject()), choices: [choice], ...(usage !== undefined && { usage }) };
  }

  /** The last chunk when the client asked for usage: no choices, the request's token counts. */
  usageChunk(usage: Usage): object {
    return { ...this.header(this.chunkObject()), choices: [], usage };
  }

  private chunkObject(): string {
    return this.kind === "chat" ? "chat.completion.chunk" : "text_completion";
  }
}
