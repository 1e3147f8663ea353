/**
 * Incremental detokenization for streaming. Decoding token by token breaks multi-byte UTF-8
 * characters split across tokens and loses word-boundary spaces that decoders strip at the start
 * of a text. So each step decodes a short window that starts a few tokens back, emits only the
 * text past what that window's prefix already produced, and holds back output that ends in an
 * incomplete character (U+FFFD) until the next token completes it.
 */
import type { Tokenizer } from "./tokenizer.js";

export class StreamDecoder {
  private readonly ids: number[];
  private prefixOffset: number;
  private readOffset: number;

  /** `context`: the tokens before the streamed ones (e.g. the prompt's tail), never emitted. */
  constructor(
    private readonly tokenizer: Tokenizer,
    context: readonly number[] = [],
    private readonly skipSpecialTokens = true,
  ) {
    this.ids = context.slice(-6);
    this.prefixOffset = Math.max(0, this.ids.length - 5);
    this.readOffset = this.ids.length;
  }

  /** Adds a token; returns the text it completes (possibly empty). */
  push(id: number): string {
    this.ids.push(id);
    const prefix = this.decode(this.prefixOffset, this.readOffset);
    const full = this.decode(this.prefixOffset, this.ids.length);
    if (full.length <= prefix.length || full.endsWith("\uFFFD")) return "";
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return full.slice(prefix.length);
  }

  /** Text still held back at the end of the stream (an incomplete character decodes as U+FFFD). */
  flush(): string {
    const prefix = this.decode(this.prefixOffset, this.readOffset);
    const full = this.decode(this.prefixOffset, this.ids.length);
    this.prefixOffset = this.readOffset = this.ids.length;
    return full.length > prefix.length ? full.slice(prefix.length) : "";
  }

  private decode(from: number, to: number): string {
    return this.tokenizer.decode(this.ids.slice(from, to), this.skipSpecialTokens);
  }
}
