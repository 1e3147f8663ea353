/**
 * Quality measurements the engine makes itself: perplexity on text, and how often the model's
 * multi-token-prediction modules guess what greedy decoding then produces (their acceptance
 * rate under self-speculation).
 */
import type { LoadedModel } from "./loaded-model.js";

/** Index of the largest entry of row `row` of a [rows * vocab] array (ties → lowest id). */
function argmaxRow(logits: Float32Array, row: number, vocab: number): number {
  let best = 0;
  let bestValue = -Infinity;
  for (let v = 0; v < vocab; v++) {
    const x = logits[row * vocab + v];
    if (x > bestValue) {
      bestValue = x;
      best = v;
    }
  }
  return best;
}

/** −log p(target) under the softmax of row `row`. */
function nll(logits: Float32Array, row: number, vocab: number, target: number): number {
  let max = -Infinity;
  for (let v = 0; v < vocab; v++) max = Math.max(max, logits[row * vocab + v]);
  let sum = 0;
  for (let v = 0; v < vocab; v++) sum += Math.exp(logits[row * vocab + v] - max);
  return max + Math.log(sum) - logits[row * vocab + target];
}

export interface PerplexityResult {
  perplexity: number;
  /** Tokens predicted (each window's first token has no prediction). */
  predictedTokens: number;
}

/** exp(mean next-token NLL) of `ids`, scored in non-overlapping windows of `window` tokens. */
export function perplexity(model: LoadedModel, ids: readonly number[], window = 512): PerplexityResult {
  const vocab = model.config.vocabSize;
  let total = 0;
  let count = 0;
  for (let start = 0; start + 1 < ids.length; start += window) {
    const chunk = ids.slice(start, start + window);
    const { logits } = model.executor.score(chunk);
    for (let i = 0; i + 1 < chunk.length; i++) total += nll(logits, i, vocab, chunk[i + 1]);
    count += chunk.length - 1;
  }
  return { perplexity: Math.exp(total / count), predictedTokens: count };
}

export interface MtpAcceptance {
  depths: number;
  /** Decoding steps measured (positions where every depth had a token to guess). */
  steps: number;
  /** Per depth k: P(proposal k is right | proposals 1..k-1 were right). */
  conditional: number[];
  /** Per depth k: P(proposals 1..k are all right). */
  cumulative: number[];
  /** Mean tokens per main-model step with all depths proposed: 1 + accepted proposals. */
  meanAcceptedLength: number;
}

/**
 * Greedy-decodes `genTokens` after each prompt, then replays the sequence teacher-forced through
 * the MTP modules. Teacher forcing is exact here: depth k's input token is the one depth k-1
 * proposed whenever that proposal was accepted, and later depths only count while all earlier
 * ones were accepted.
 */
export async function mtpAcceptance(
  model: LoadedModel,
  prompts: readonly (readonly number[])[],
  genTokens: number,
): Promise<MtpAcceptance> {
  const D = model.config.numMtpModules;
  const vocab = model.config.vocabSize;
  const hits = new Array<number>(D).fill(0); // steps where depths 1..k were all right
  let steps = 0;
  let accepted = 0;
  for (const prompt of prompts) {
    const gen = await model.complete(prompt, { temperature: 0, maxTokens: genTokens, ignoreEos: true });
    const seq = [...prompt, ...gen.tokens];
    const { mtpLogits } = model.executor.score(seq, D);
    // At position i the main model has just produced seq[i+1]; depth k proposes seq[i+1+k].
    for (let i = prompt.length - 1; i + 1 + D < seq.length; i++) {
      steps++;
      let chain = 0;
      while (chain < D && argmaxRow(mtpLogits[chain], i, vocab) === seq[i + 2 + chain]) chain++;
      for (let k = 0; k < chain; k++) hits[k]++;
      accepted += chain;
    }
  }
  const cumulative = hits.map((h) => h / steps);
  const conditional = hits.map((h, k) => (k === 0 ? h / steps : hits[k - 1] > 0 ? h / hits[k - 1] : 0));
  return { depths: D, steps, conditional, cumulative, meanAcceptedLength: 1 + accepted / steps };
}
