/**
 * Errors a user can act on. Every failure that comes from bad input (a file, a flag, a request)
 * is a TachyonError whose message says what is wrong, where, and what to do about it. The CLI
 * prints only the message for these; anything else is a bug and gets a stack trace.
 */
export class TachyonError extends Error {
  override readonly name = "TachyonError";
  constructor(
    message: string,
    /** Stable machine-readable category, e.g. "checkpoint", "config", "tokenizer", "argument". */
    readonly code: string = "input",
  ) {
    super(message);
  }
}
