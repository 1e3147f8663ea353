/**
 * Speculative sampling leaves the output distributed as the target's own sampling: over many
 * seeded draws, a chi-square test compares the tokens a verification step produces with the
 * target's distribution after the request's processing (penalties, temperature, top-k), for
 * proposals drawn from a deliberately different q and for point-mass proposals. The same test
 * rejects the proposals' own distribution, so it has the power to catch a wrong rule. Point-mass
 * proposals, verified by drawing the target's own token, leave a seed's tokens as they were.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { loadModel } from "../src/index.js";
import { SpeculationLength } from "../src/engine/speculative/adaptive-length.js";
import { SpeculativeDecoder } from "../src/engine/speculative/decoder.js";
import type { Proposal } from "../src/engine/speculative/proposer.js";
import { Sampler, validateSamplingParams } from "../src/engine/sampling.js";
import { generationSettings, samplingMode } from "../src/engine/sequence-output.js";
import { fixturesDir, repoRoot } from "./paths.js";
import { seededRandom } from "./random.js";

const model = await loadModel(path.join(fixturesDir, "models", "qwen3"), { device: "cpu" });
const executor = model.executor;
const V = model.config.vocabSize;
const prompt = model.tokenizer.encode("def add(a, b):\n    return");
const params = validateSamplingParams({
  temperature: 0.8,
  topK: 6,
  repetitionPenalty: 1.3,
  presencePenalty: 0.5,
});
const trials = 4000;

/** The target's sampling distribution after `history` (prompt + output `output`). */
function targetDistribution(output: readonly number[]): Float64Array {
  const tokens = [...prompt, ...output];
  const { logits } = executor.score(tokens);
  const sampler = new Sampler(params, V);
  sampler.setPrompt(prompt);
  for (const t of output) sampler.accept(t);
  const p = new Float64Array(V);
  sampler.distribution(logits.subarray((tokens.length - 1) * V), p);
  return p;
}

/**
 * Pearson's chi-square statistic of `counts` against probabilities `p` (bins expecting fewer
 * than 5 merged), the critical value at significance 0.001 (Wilson–Hilferty), and how many
 * draws hit tokens of probability 0.
 */
function chiSquare(
  counts: Map<number, number>,
  p: Float64Array,
): { stat: number; critical: number; impossible: number } {
  const n = [...counts.values()].reduce((a, b) => a + b, 0);
  let stat = 0;
  let bins = 0;
  let restObserved = 0;
  let restExpected = 0;
  let impossible = 0;
  for (let t = 0; t < p.length; t++) {
    const observed = counts.get(t) ?? 0;
    const expected = n * p[t];
    if (expected === 0) {
      impossible += observed;
    } else if (expected < 5) {
      restObserved += observed;
      restExpected += expected;
    } else {
      stat += (observed - expected) ** 2 / expected;
      bins++;
    }
  }
  if (restExpected > 0) {
    stat += (restObserved - restExpected) ** 2 / restExpected;
    bins++;
  }
  const df = bins - 1;
  const z = 3.09;
  const critical = df * (1 - 2 / (9 * df) + z * Math.sqrt(2 / (9 * df))) ** 3;
  return { stat, critical, impossible };
}

function assertFollows(counts: Map<number, number>, p: Float64Array, what: string): void {
  const { stat, critical, impossible } = chiSquare(counts, p);
  assert.equal(impossible, 0, `${what}: drew tokens of probability 0`);
  assert.ok(stat < critical, `${what}: chi-square ${stat.toFixed(1)} ≥ ${critical.toFixed(1)}`);
}

function draw(q: Float64Array, u: number): number {
  let cum = 0;
  for (let t = 0; t < q.length; t++) if (u < (cum += q[t])) return t;
  return q.findLastIndex((x) => x > 0);
}

/** Runs `trials` verification steps from the same state; returns the tokens each produced. */
function sampleSteps(proposer: { maxTokens: number; propose(): Proposal }): number[][] {
  const seq = executor.newSequence();
  const out: number[][] = [];
  try {
    executor.step([{ seq, tokens: prompt.slice(0, -1) }]);
    const base = seq.length;
    for (let trial = 0; trial < trials; trial++) {
      const sampler = new Sampler({ ...params, seed: trial }, V);
      sampler.setPrompt(prompt);
      const decoder = new SpeculativeDecoder(executor, seq, sampler, "host", prompt, {
        proposer,
        length: new SpeculationLength(proposer.maxTokens, false),
      });
      out.push(decoder.step(proposer.maxTokens + 1).tokens);
      seq.truncate(base);
    }
  } finally {
    seq.free();
  }
  return out;
}

function tally(values: number[]): Map<number, number> {
  const counts = new Map<number, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return counts;
}

function mostCommon(values: number[]): number {
  return [...tally(values).entries()].sort((a, b) => b[1] - a[1])[0][0];
}

test("proposals from a different distribution q: accepted, resampled and next tokens follow the target", () => {
  const p0 = targetDistribution([]);
  // q puts half its mass on the target's second choice, the rest on its first and on tokens the
  // target never draws; the second proposal's q is built the same way after q's favourite.
  const skewed = (p: Float64Array) => {
    const ranked = Array.from(p.keys()).sort((a, b) => p[b] - p[a]);
    const q = new Float64Array(V);
    q[ranked[1]] = 0.5;
    q[ranked[0]] = 0.2;
    for (const t of ranked.slice(-3)) q[t] = 0.1;
    return q;
  };
  const q0 = skewed(p0);
  const q1 = skewed(targetDistribution([q0.indexOf(0.5)]));
  const random = seededRandom(5);
  const proposals: number[] = [];
  const steps = sampleSteps({
    maxTokens: 2,
    propose: () => {
      const tokens = [draw(q0, random()), draw(q1, random())];
      proposals.push(tokens[0]);
      return { tokens, probs: [q0, q1] };
    },
  });

  assertFollows(tally(steps.map((s) => s[0])), p0, "first token");
  const wrongRule = chiSquare(tally(proposals), p0);
  assert.ok(wrongRule.stat > wrongRule.critical && wrongRule.impossible > 0, "the test must reject q itself");
  assert.ok(steps.some((s) => s.length === 1) && steps.some((s) => s.length === 3), "all paths taken");

  // The token after an accepted first proposal x follows the target's distribution after x.
  const x = mostCommon(steps.filter((s) => s.length > 1).map((s) => s[0]));
  const seconds = steps.filter((s) => s.length > 1 && s[0] === x).map((s) => s[1]);
  assert.ok(seconds.length > 500);
  assertFollows(tally(seconds), targetDistribution([x]), "second token");
});

test("point-mass proposals (n-gram, greedy drafts): accepted with probability p(x), bonus from p", () => {
  const p0 = targetDistribution([]);
  const x = Array.from(p0.keys()).sort((a, b) => p0[b] - p0[a])[1];
  const steps = sampleSteps({ maxTokens: 1, propose: () => ({ tokens: [x] }) });
  assertFollows(tally(steps.map((s) => s[0])), p0, "first token");
  const bonus = steps.filter((s) => s.length === 2).map((s) => s[1]);
  assertFollows(tally(bonus), targetDistribution([x]), "bonus token");
});

test("point-mass proposals leave seeded sampling's tokens exactly as without speculation", async () => {
  const tiny = await loadModel(path.join(repoRoot, "models", "tachyon-code-tiny"), { device: "cpu" });
  const ids = tiny.tokenizer.encode("x = [1, 2, 3]\ny = [1, 2, 3]\nz = [1, 2, 3]\n");
  let accepted = 0;
  for (const seed of [1, 2, 3]) {
    const opts = { temperature: 0.7, seed, maxTokens: 24, ignoreEos: true };
    const plain = await tiny.complete(ids, opts);
    for (const method of ["ngram", "mtp"] as const) {
      const spec = await tiny.complete(ids, { ...opts, speculation: { method } });
      assert.deepEqual(spec.tokens, plain.tokens, `seed ${seed}, ${method}`);
      accepted += spec.speculation!.acceptedTokens;
    }
  }
  assert.ok(accepted > 0, "some proposals must be accepted for the test to mean anything");
});

test("a sampled sequence that speculates chooses on the host, even where the backend could draw", () => {
  const settings = generationSettings(executor, prompt, { temperature: 0.8, seed: 1 });
  const drawing = { ...executor.backend, sampleRows: () => new Int32Array(0) };
  assert.equal(samplingMode(settings, drawing, false), "device");
  assert.equal(samplingMode(settings, drawing, true), "host");
  const greedy = generationSettings(executor, prompt, { temperature: 0 });
  assert.equal(samplingMode(greedy, drawing, true), "argmax", "greedy verifies by argmax on the device");
});
