/**
 * `tachyon bench --spec oracle`: speculation speed with the accepted length fixed. Random weights
 * accept nothing real, so the target's own greedy continuation is recorded first and then
 * proposed L tokens at a time: every proposal is accepted and each verification step yields L + 1
 * tokens. The step's cost relative to a one-token step is what decides real speed-ups.
 */
import { ModelExecutor } from "../engine/executor.js";
import { Sampler, validateSamplingParams } from "../engine/sampling.js";
import { SpeculationLength } from "../engine/speculative/adaptive-length.js";
import { SpeculativeDecoder } from "../engine/speculative/decoder.js";
import { OracleProposer } from "../engine/speculative/oracle.js";
import type { Proposer } from "../engine/speculative/proposer.js";

/** Per accepted length L (parallel arrays), against plain decoding of the same prompt. */
export interface SpecBenchResult {
  method: "oracle";
  accepted_length: number[];
  /** Measured; L + 1 unless verification disagreed with plain decoding (then see greedy_equal). */
  tokens_per_step: number[];
  decode_tok_s: number[];
  verify_step_ms: number[];
  /** verify_step_ms / one_token_step_ms. */
  verify_step_relative: number[];
  /** decode_tok_s / plain_decode_tok_s. */
  speedup: number[];
  /** Whether the speculative output equals plain greedy decoding's. */
  greedy_equal: boolean[];
  plain_decode_tok_s: number;
  one_token_step_ms: number;
}

export function benchSpeculation(
  executor: ModelExecutor,
  prompt: readonly number[],
  genTokens: number,
  lengths: readonly number[],
): SpecBenchResult {
  const plain = decode(executor, prompt, genTokens, null);
  const reference = [...prompt, ...plain.tokens];
  const stepMs = plain.decodeMs / plain.steps;
  const plainTokS = ((genTokens - 1) * 1000) / plain.decodeMs;
  const result: SpecBenchResult = {
    method: "oracle",
    accepted_length: [...lengths],
    tokens_per_step: [],
    decode_tok_s: [],
    verify_step_ms: [],
    verify_step_relative: [],
    speedup: [],
    greedy_equal: [],
    plain_decode_tok_s: plainTokS,
    one_token_step_ms: stepMs,
  };
  for (const L of lengths) {
    decode(executor, prompt, 4 * (L + 1), new OracleProposer(reference, L)); // warm-up: captures the graphs
    const run = decode(executor, prompt, genTokens, new OracleProposer(reference, L));
    const tokS = ((genTokens - 1) * 1000) / run.decodeMs;
    result.tokens_per_step.push((genTokens - 1) / run.steps);
    result.decode_tok_s.push(tokS);
    result.verify_step_ms.push(run.decodeMs / run.steps);
    result.verify_step_relative.push(run.decodeMs / run.steps / stepMs);
    result.speedup.push(tokS / plainTokS);
    result.greedy_equal.push(run.tokens.every((t, i) => t === plain.tokens[i]));
  }
  return result;
}

/**
 * Greedy decoding of `count` tokens after `prompt` in a fresh sequence, with proposals from
 * `proposer` (always all of them) or none; times the steps after the first token.
 */
function decode(
  executor: ModelExecutor,
  prompt: readonly number[],
  count: number,
  proposer: Proposer | null,
): { tokens: number[]; decodeMs: number; steps: number } {
  const seq = executor.newSequence();
  const sampler = new Sampler(validateSamplingParams({ temperature: 0 }), executor.config.vocabSize);
  const speculation = proposer && { proposer, length: new SpeculationLength(proposer.maxTokens, false) };
  const decoder = new SpeculativeDecoder(executor, seq, sampler, "argmax", prompt, speculation);
  const end = prompt.length + count;
  try {
    for (let chunk = 512; chunk < prompt.length; chunk += 512) decoder.fill(chunk);
    decoder.step(count);
    const t0 = performance.now();
    let steps = 0;
    for (; decoder.tokens.length < end; steps++) decoder.step(end - decoder.tokens.length);
    return { tokens: decoder.tokens.slice(prompt.length), decodeMs: performance.now() - t0, steps };
  } finally {
    decoder.close();
    seq.free();
  }
}
