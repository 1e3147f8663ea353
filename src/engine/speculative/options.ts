/** A request's speculation settings, checked, and the proposer they describe. */
import { TachyonError } from "../../errors.js";
import type { Tokenizer } from "../../tokenizer/tokenizer.js";
import type { ModelExecutor } from "../executor.js";
import type { SequenceKv } from "../kv-cache.js";
import { SpeculationLength } from "./adaptive-length.js";
import type { Speculation } from "./decoder.js";
import { assertSameTokenizer, DraftModelProposer, type DraftModel } from "./draft-model.js";
import { MtpProposer } from "./mtp.js";
import { NgramProposer } from "./ngram.js";
import type { Proposer } from "./proposer.js";

export type SpecMethod = "mtp" | "draft" | "ngram";
export const specMethods: readonly SpecMethod[] = ["mtp", "draft", "ngram"];

export interface SpeculationOptions {
  /** Where proposals come from: the model's MTP modules, a draft model, or n-gram lookup. */
  method: SpecMethod | "custom";
  /** Most tokens proposed per step (default 4, at most the MTP module count for "mtp"). */
  maxTokens?: number;
  /** Choose the number per step from the acceptance seen so far (default true). */
  adaptive?: boolean;
  /** For "draft": the draft model (same tokenizer as the target). */
  draft?: DraftModel;
  /** For "custom": a proposer for this one request (closed when it ends). */
  proposer?: Proposer;
}

/** Verification steps stay within the GPU's small-step kernels and graphs (16 rows). */
const maxSpecTokens = 15;
const defaultSpecTokens = 4;

export function createSpeculation(
  options: SpeculationOptions,
  executor: ModelExecutor,
  tokenizer: Tokenizer,
  seq: SequenceKv,
): Speculation {
  const { method, maxTokens } = options;
  if (
    maxTokens !== undefined &&
    !(Number.isInteger(maxTokens) && maxTokens >= 1 && maxTokens <= maxSpecTokens)
  ) {
    throw new TachyonError(
      `the speculation length (--spec-k, speculation.maxTokens) must be an integer in [1, ${maxSpecTokens}], got ${maxTokens}`,
      "argument",
    );
  }
  const k = maxTokens ?? defaultSpecTokens;
  const proposer = ((): Proposer => {
    switch (method) {
      case "mtp":
        return new MtpProposer(executor, seq);
      case "ngram":
        return new NgramProposer(k);
      case "draft":
        if (!options.draft)
          throw new TachyonError(
            "speculation with a draft model needs the draft model (--draft-model DIR)",
            "argument",
          );
        assertSameTokenizer(tokenizer, options.draft.tokenizer);
        return new DraftModelProposer(options.draft.executor, k);
      case "custom":
        if (!options.proposer) throw new TachyonError("custom speculation needs a proposer", "argument");
        return options.proposer;
      default:
        throw new TachyonError(
          `unknown speculation method "${String(method)}"; use ${specMethods.join(", ")}`,
          "argument",
        );
    }
  })();
  return {
    proposer,
    length: new SpeculationLength(Math.min(k, proposer.maxTokens), options.adaptive ?? true),
  };
}

/**
 * The prefix-cache family of a sequence speculating this way. Cached blocks hold the MTP modules'
 * cache layers only where a sequence ran them, so MTP sequences share blocks among themselves.
 */
export function prefixFamily(options: SpeculationOptions | undefined): string {
  return options?.method === "mtp" ? "mtp" : "";
}
