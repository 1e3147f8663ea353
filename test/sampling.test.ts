import { test } from "node:test";
import assert from "node:assert/strict";
import { TachyonError } from "../src/errors.js";
import { Rng } from "../src/engine/rng.js";
import {
  Sampler,
  argmax,
  defaultSamplingParams,
  logSoftmaxAt,
  topLogprobs,
  validateSamplingParams,
  type SamplingParams,
} from "../src/engine/sampling.js";

// Random inputs come from a fresh seed each run (set SAMPLING_TEST_SEED to replay a failure).
function freshSeed(): number {
  const env = process.env.SAMPLING_TEST_SEED;
  return env ? Number(env) : Math.floor(Math.random() * 2 ** 32);
}

/** A test whose random inputs come from a logged seed: a failure prints how to reproduce it. */
function seededTest(name: string, fn: (rand: Rng, seed: number) => void): void {
  test(name, () => {
    const seed = freshSeed();
    try {
      fn(new Rng(seed), seed);
    } catch (err) {
      console.error(`"${name}" failed; reproduce with SAMPLING_TEST_SEED=${seed}`);
      throw err;
    }
  });
}

function params(p: Partial<SamplingParams>): SamplingParams {
  return { ...defaultSamplingParams, ...p };
}

function randInt(rand: Rng, n: number): number {
  return Math.floor(rand.nextFloat() * n);
}

/** Random logits; optionally quantised (many exact ties) and with some masked (-Infinity) tokens. */
function randomLogits(rand: Rng, V: number, ties: boolean, maskFraction: number): Float32Array {
  const logits = new Float32Array(V);
  const scale = 10 ** (3 * rand.nextFloat() - 2); // from nearly flat (0.01) to peaked (10)
  for (let i = 0; i < V; i++) {
    const x = (rand.nextFloat() * 2 - 1) * scale;
    logits[i] = ties ? Math.round(x * 2) / 2 : x;
    if (rand.nextFloat() < maskFraction) logits[i] = -Infinity;
  }
  // Keep at least one token drawable.
  logits[randInt(rand, V)] = ties ? 1 : rand.nextFloat();
  return logits;
}

// ---- independent references (plain float64, full sorts) ----

/** Penalised logits by the textbook definitions. */
function refPenalise(
  logits: Float32Array,
  prompt: number[],
  output: number[],
  p: SamplingParams,
): Float64Array {
  const w = Float64Array.from(logits);
  const seen = new Set([...prompt, ...output]);
  for (const t of seen) w[t] = w[t] > 0 ? w[t] / p.repetitionPenalty : w[t] * p.repetitionPenalty;
  const counts = new Map<number, number>();
  for (const t of output) counts.set(t, (counts.get(t) ?? 0) + 1);
  for (const [t, c] of counts) w[t] -= p.frequencyPenalty * c + p.presencePenalty;
  return w;
}

function refArgmax(w: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < w.length; i++) if (w[i] > w[best]) best = i;
  return best;
}

/**
 * Probability of each token after temperature, top-k, top-p and min-p, by full sort. `slack`
 * loosens the top-p and min-p boundaries by that relative amount, giving a superset that absorbs
 * float rounding differences when only membership is checked.
 */
function refDistribution(w: ArrayLike<number>, p: SamplingParams, slack = 0): Float64Array {
  const V = w.length;
  let ids = Array.from({ length: V }, (_, i) => i).filter((i) => w[i] !== -Infinity);
  ids.sort((a, b) => (w[a] !== w[b] ? w[b] - w[a] : a - b));
  if (p.topK > 0) ids = ids.slice(0, p.topK);
  const scaled = ids.map((i) => w[i] / p.temperature);
  const exps = scaled.map((s) => Math.exp(s - scaled[0]));
  const z = exps.reduce((a, b) => a + b, 0);
  const probs = exps.map((x) => x / z);
  let keep = ids.length;
  if (p.topP < 1) {
    let cum = 0;
    for (keep = 0; keep < ids.length;) {
      cum += probs[keep++];
      if (cum >= p.topP + slack) break;
    }
  }
  const out = new Float64Array(V);
  let total = 0;
  for (let j = 0; j < keep; j++) {
    if (probs[j] >= p.minP * probs[0] * (1 - slack)) {
      out[ids[j]] = probs[j];
      total += probs[j];
    }
  }
  for (let i = 0; i < V; i++) out[i] /= total;
  return out;
}

// ---- Rng ----

test("Rng: xoshiro128** values are fixed for a given seed (cross-checked with a Python port)", () => {
  const first5 = (seed: number) => {
    const r = new Rng(seed);
    return Array.from({ length: 5 }, () => r.nextU32());
  };
  assert.deepEqual(first5(42), [3395405556, 1058568338, 1626310787, 503119432, 3432419667]);
  assert.deepEqual(first5(-1), [3628566168, 916915304, 1032478295, 1310698681, 3830855905]);
  assert.deepEqual(first5(2 ** 53 - 1), [2341798403, 4184218323, 1170879478, 1012120492, 742131754]);
  assert.equal(new Rng(7).nextFloat(), 0.016790851441331744);
});

test("Rng: same seed, same sequence; different or missing seeds differ; floats in [0, 1)", () => {
  const a = new Rng(123);
  const b = new Rng(123);
  const c = new Rng(124);
  let differ = 0;
  for (let i = 0; i < 10000; i++) {
    const x = a.nextFloat();
    assert.equal(x, b.nextFloat());
    assert.ok(x >= 0 && x < 1);
    if (x !== c.nextFloat()) differ++;
  }
  assert.ok(differ > 9990);
  const r1 = new Rng();
  const r2 = new Rng();
  assert.ok(Number.isSafeInteger(r1.seed));
  assert.notEqual(r1.seed, r2.seed);
  assert.equal(new Rng(r1.seed).nextU32(), r1.nextU32());
  assert.throws(() => new Rng(0.5), RangeError);
});

test("Rng: nextFloat looks uniform (bucket counts) and nextU32 covers the high bit", () => {
  const r = new Rng(99);
  const buckets = new Array<number>(16).fill(0);
  let high = 0;
  const N = 160000;
  for (let i = 0; i < N; i++) {
    buckets[Math.floor(r.nextFloat() * 16)]++;
    if (r.nextU32() >= 2 ** 31) high++;
  }
  for (const b of buckets) assert.ok(Math.abs(b - N / 16) < 600, `bucket ${b}`);
  assert.ok(Math.abs(high - N / 2) < 1200);
});

// ---- Sampler: reproducibility ----

seededTest("Sampler: the same seed reproduces the token sequence; different seeds differ", (rand) => {
  const V = 500;
  const run = (seed: number) => {
    const s = new Sampler(params({ temperature: 1.1, topP: 0.95, repetitionPenalty: 1.1, seed }), V);
    s.setPrompt([1, 2, 3]);
    const logits = new Float32Array(V);
    const tokens: number[] = [];
    for (let step = 0; step < 2000; step++) {
      for (let i = 0; i < V; i++) logits[i] = Math.sin(i * 0.37 + step * 0.11) * 2;
      const t = s.sample(logits);
      s.accept(t);
      tokens.push(t);
    }
    return tokens;
  };
  const seed = Math.floor(rand.nextFloat() * 2 ** 40);
  const a = run(seed);
  assert.deepEqual(run(seed), a);
  const b = run(seed + 1);
  assert.ok(a.filter((t, i) => t !== b[i]).length > 1000, "different seeds should give different draws");

  const unseeded = new Sampler(params({}), V);
  assert.ok(Number.isSafeInteger(unseeded.seed));
  assert.notEqual(unseeded.seed, new Sampler(params({}), V).seed);
});

// ---- Sampler: filters ----

seededTest("Sampler: top-k / top-p / min-p never emit an excluded token (random inputs)", (rand) => {
  for (let trial = 0; trial < 400; trial++) {
    const V = 1 + randInt(rand, trial % 10 === 0 ? 20000 : 2000);
    const p = params({
      temperature: 0.05 + 3 * rand.nextFloat(),
      topK:
        rand.nextFloat() < 0.5 ? 0 : 1 + randInt(rand, Math.min(V + 5, rand.nextFloat() < 0.5 ? 50 : V + 5)),
      topP: rand.nextFloat() < 0.3 ? 1 : 0.02 + 0.98 * rand.nextFloat(),
      minP: rand.nextFloat() < 0.5 ? 0 : rand.nextFloat(),
      seed: randInt(rand, 2 ** 32),
    });
    const logits = randomLogits(rand, V, rand.nextFloat() < 0.5, rand.nextFloat() < 0.3 ? 0.2 : 0);
    const what = `trial ${trial}, V=${V}, ${JSON.stringify(p)}`;
    const allowed = refDistribution(logits, p, 1e-9);
    const sampler = new Sampler(p, V);
    // Every 4th trial also checks the filters are not too strict: a token the (tightened)
    // reference gives ≥ 5% must show up in 600 draws (missed with probability ≤ 0.95^600 ≈ 4e-14).
    const coverage = trial % 4 === 1; // odd trials: never the large vocabularies
    const seen = new Set<number>();
    for (let d = 0; d < (coverage ? 600 : 50); d++) {
      const t = sampler.sample(logits);
      assert.ok(allowed[t] > 0, `${what}: drew excluded token ${t} (logit ${logits[t]})`);
      seen.add(t);
    }
    if (coverage) {
      const strict = refDistribution(logits, p, -1e-9);
      for (let i = 0; i < V; i++) {
        if (strict[i] >= 0.05) assert.ok(seen.has(i), `${what}: token ${i} (p=${strict[i]}) never drawn`);
      }
    }
  }
});

test("Sampler: top-p keeps the shortest prefix whose mass reaches top_p exactly", () => {
  const equal = new Float32Array(4); // cumulative mass .25 .5 .75 1: top-p .5 keeps ids 0 and 1
  const s = new Sampler(params({ topP: 0.5, seed: 5 }), 4);
  const drawn = new Set(Array.from({ length: 2000 }, () => s.sample(equal)));
  assert.deepEqual([...drawn].sort(), [0, 1]);
});

test("Sampler: large tied vocabularies keep exactly the lowest ids at the top-k / top-p boundary", () => {
  const V = 100000;
  const flat = new Float32Array(V); // all equal: the ranking is by id alone
  const topK = new Sampler(params({ topK: 10, seed: 1 }), V);
  const topP = new Sampler(params({ topP: 0.5, seed: 2 }), V);
  let maxTopP = 0;
  for (let d = 0; d < 300; d++) {
    assert.ok(topK.sample(flat) < 10);
    maxTopP = Math.max(maxTopP, topP.sample(flat));
  }
  assert.ok(maxTopP < V / 2 && maxTopP > V / 2 - 2000, `top-p max id ${maxTopP}`);
});

test("Sampler: top-k 1 and a tiny top-p keep one of tied maxima (lowest id); min-p 1 keeps all", () => {
  const logits = Float32Array.from([0.3, 2, -1, 2, 1.999]);
  for (const p of [{ topK: 1 }, { topP: 1e-6 }, { topK: 2, topP: 1e-6 }]) {
    const s = new Sampler(params({ ...p, temperature: 5, seed: 3 }), logits.length);
    for (let d = 0; d < 200; d++) assert.equal(s.sample(logits), 1, JSON.stringify(p));
  }
  const s = new Sampler(params({ minP: 1, temperature: 5, seed: 3 }), logits.length);
  const drawn = new Set(Array.from({ length: 200 }, () => s.sample(logits)));
  assert.deepEqual([...drawn].sort(), [1, 3]);
});

// ---- Sampler: greedy ----

seededTest("Sampler: temperature 0 equals argmax, also of penalised logits", (rand) => {
  for (let trial = 0; trial < 300; trial++) {
    const V = 1 + randInt(rand, 3000);
    const logits = randomLogits(rand, V, rand.nextFloat() < 0.3, 0.05);
    const copy = logits.slice();
    const p = params({
      temperature: 0,
      repetitionPenalty: rand.nextFloat() < 0.3 ? 1 : 0.5 + 1.5 * rand.nextFloat(),
      presencePenalty: 4 * rand.nextFloat() - 2,
      frequencyPenalty: 4 * rand.nextFloat() - 2,
      topK: randInt(rand, 5), // filters do not change the argmax
      topP: 0.5,
    });
    const prompt = Array.from({ length: randInt(rand, 30) }, () => randInt(rand, V));
    const output = Array.from({ length: randInt(rand, 30) }, () => randInt(rand, V));
    const s = new Sampler(p, V);
    s.setPrompt(prompt);
    for (const t of output) s.accept(t);
    const expected = refArgmax(refPenalise(logits, prompt, output, p));
    assert.equal(s.sample(logits), expected, `trial ${trial}`);
    assert.deepEqual(logits, copy, "sample() must not modify the logits");

    assert.equal(new Sampler(params({ temperature: 0 }), V).sample(logits), argmax(logits));
    assert.equal(argmax(logits), refArgmax(logits));
  }
});

test("argmax: ties go to the lowest id; -Infinity is fine; NaN throws", () => {
  assert.equal(argmax(Float32Array.from([1, 3, 3, 2])), 1);
  assert.equal(argmax(Float32Array.from([-Infinity, -5, -Infinity])), 1);
  assert.throws(() => argmax(Float32Array.from([1, NaN, 3])), /NaN/);
  assert.throws(() => argmax(Float32Array.from([NaN, 1])), /NaN/);
});

// ---- Sampler: penalties (hand-checked) ----

/**
 * Checks that token 0's penalised logit is `expected`, via greedy decoding against token 1 (never
 * in the history) placed just below and just above it. Token 2 is history noise that must not matter.
 */
function assertPenalised(
  p: Partial<SamplingParams>,
  prompt: number[],
  output: number[],
  logit: number,
  expected: number,
): void {
  for (const [delta, winner] of [
    [-1e-3, 0],
    [1e-3, 1],
  ]) {
    const s = new Sampler(params({ ...p, temperature: 0 }), 3);
    s.setPrompt(prompt);
    for (const t of output) s.accept(t);
    const got = s.sample(Float32Array.from([logit, expected + delta, -50]));
    assert.equal(got, winner, `${JSON.stringify(p)}: logit ${logit} should become ${expected}`);
  }
}

test("penalties: repetition divides positive logits and multiplies negative ones, once per token", () => {
  assertPenalised({ repetitionPenalty: 2 }, [0], [], 3, 1.5);
  assertPenalised({ repetitionPenalty: 2 }, [], [0], -3, -6);
  assertPenalised({ repetitionPenalty: 2 }, [0, 0, 2], [0, 0], 3, 1.5); // repeats do not compound
  assertPenalised({ repetitionPenalty: 0.5 }, [0], [], 3, 6); // < 1 encourages
  assertPenalised({ repetitionPenalty: 0.5 }, [0], [], -3, -1.5);
  assertPenalised({ repetitionPenalty: 2 }, [2], [2], 3, 3); // token 0 unseen: untouched
});

test("penalties: presence subtracts once, frequency per occurrence, output only", () => {
  assertPenalised({ presencePenalty: 0.5 }, [], [0, 0, 0], 1, 0.5);
  assertPenalised({ presencePenalty: 0.5 }, [0, 0], [2], 1, 1); // prompt tokens are exempt
  assertPenalised({ presencePenalty: -1 }, [], [0], 1, 2);
  assertPenalised({ frequencyPenalty: 0.5 }, [], [0, 2, 0, 0], 1, -0.5);
  assertPenalised({ frequencyPenalty: 0.5 }, [0], [2], 1, 1);
  assertPenalised({ presencePenalty: 0.5, frequencyPenalty: 0.25 }, [], [0, 0], 1, 0);
  // Repetition first, then presence and frequency: 4 / 2 - 1 - 0.5.
  assertPenalised({ repetitionPenalty: 2, presencePenalty: 1, frequencyPenalty: 0.5 }, [], [0], 4, 0.5);
});

test("penalties: setPrompt starts a new sequence and forgets earlier output", () => {
  const s = new Sampler(params({ temperature: 0, presencePenalty: 2, repetitionPenalty: 2 }), 2);
  s.setPrompt([]);
  s.accept(0);
  const logits = Float32Array.from([1, 0.8]);
  assert.equal(s.sample(logits), 1);
  s.setPrompt([1]);
  assert.equal(s.sample(logits), 0);
});

test("Sampler: bad token ids, NaN / +Infinity / all-masked logits and wrong lengths throw", () => {
  const s = new Sampler(params({ seed: 1 }), 4);
  assert.throws(
    () => s.setPrompt([0, 4]),
    (e: unknown) => e instanceof TachyonError && /token id 4/.test(e.message),
  );
  assert.throws(() => s.accept(-1), TachyonError);
  assert.throws(() => s.accept(1.5), TachyonError);
  assert.throws(() => s.sample(Float32Array.from([0, NaN, 1, 2])), /token 1 is NaN/);
  assert.throws(() => s.sample(Float32Array.from([0, 1, 2, Infinity])), /token 3 is \+Infinity/);
  assert.throws(() => s.sample(new Float32Array(4).fill(-Infinity)), /-Infinity/);
  assert.throws(() => s.sample(new Float32Array(5)), RangeError);
  assert.throws(() => new Sampler(params({ topP: 2 }), 4), TachyonError);
  // Masked tokens are never drawn.
  const masked = Float32Array.from([-Infinity, 0, -Infinity, 0]);
  for (let d = 0; d < 500; d++) assert.ok(s.sample(masked) % 2 === 1);
});

// ---- Sampler: distribution ----

/** Chi-square critical values at p = 1e-6, by degrees of freedom (scipy.stats.chi2.isf(1e-6, df)). */
const CHI2_CRITICAL_1E6 = [
  0, 23.928, 27.631, 30.665, 33.377, 35.888, 38.258, 40.522, 42.701, 44.811, 46.863, 48.866, 50.825,
];

function assertDistribution(
  logits: Float32Array,
  p: SamplingParams,
  history: { prompt: number[]; output: number[] },
  expectedKept: number,
): void {
  const V = logits.length;
  const expected = refDistribution(refPenalise(logits, history.prompt, history.output, p), p);
  const kept = expected.filter((x) => x > 0).length;
  assert.equal(kept, expectedKept, `reference keeps ${kept} tokens: ${expected.join(", ")}`);

  const s = new Sampler(p, V);
  s.setPrompt(history.prompt);
  for (const t of history.output) s.accept(t);
  const N = 200000;
  const counts = new Array<number>(V).fill(0);
  for (let d = 0; d < N; d++) counts[s.sample(logits)]++;

  let chi2 = 0;
  for (let i = 0; i < V; i++) {
    if (expected[i] === 0) assert.equal(counts[i], 0, `token ${i} is excluded but was drawn`);
    else chi2 += (counts[i] - N * expected[i]) ** 2 / (N * expected[i]);
  }
  const critical = CHI2_CRITICAL_1E6[kept - 1];
  assert.ok(chi2 < critical, `chi2 ${chi2.toFixed(2)} ≥ ${critical} (df ${kept - 1}); counts ${counts}`);
}

seededTest("Sampler: temperature 0.7 + top-p 0.9 matches the expected distribution (chi-square)", (rand) => {
  const logits = Float32Array.from([0.5, -1, 2, 0.2, 1.5, -3, 1, 0]);
  // Probabilities ∝ exp(l / 0.7): the four best reach 0.926 ≥ 0.9 (three reach only 0.867).
  const p = params({ temperature: 0.7, topP: 0.9, seed: randInt(rand, 2 ** 32) });
  assertDistribution(logits, p, { prompt: [], output: [] }, 4);
});

seededTest("Sampler: top-k with ties at the boundary keeps the lowest ids (chi-square)", (rand) => {
  const logits = Float32Array.from([1, 3, 2, 2, 2, 0.5, 2, -Infinity]);
  const p = params({ topK: 3, seed: randInt(rand, 2 ** 32) }); // keeps ids 1, 2, 3
  assertDistribution(logits, p, { prompt: [], output: [] }, 3);
});

seededTest("Sampler: min-p with a masked token (chi-square)", (rand) => {
  const logits = Float32Array.from([0, 1, 2, 3, -Infinity, 2.5, -1, 1.5]);
  // Keep p / pmax = exp((l - 3) / 1.5) ≥ 0.3, i.e. l ≥ 1.194: ids 2, 3, 5, 7.
  const p = params({ temperature: 1.5, minP: 0.3, seed: randInt(rand, 2 ** 32) });
  assertDistribution(logits, p, { prompt: [], output: [] }, 4);
});

seededTest("Sampler: penalties with every filter on (chi-square)", (rand) => {
  const logits = Float32Array.from([2, 1.8, 1.5, -0.5, 1.2, 0.9, 0.3, 2.2]);
  // Penalised: [1.538, 0.685, 1.5, -1.35, 1.2, 0.9, 0.3, 0.692]. top-k drops ids 6 and 3; over the
  // rest at T = 1.2 the cumulative mass runs .233 .458 .634 .771 .886, so top-p drops id 1; min-p
  // drops id 7 (ratio .494 < .55) and keeps id 5 (.587): ids 0, 2, 4, 5 remain.
  const p = params({
    temperature: 1.2,
    topK: 6,
    topP: 0.85,
    minP: 0.55,
    repetitionPenalty: 1.3,
    presencePenalty: 0.4,
    frequencyPenalty: 0.3,
    seed: randInt(rand, 2 ** 32),
  });
  assertDistribution(logits, p, { prompt: [0, 3, 3], output: [7, 7, 1, 3] }, 4);
});

seededTest("Sampler: plain temperature sampling over all tokens (chi-square)", (rand) => {
  const logits = Float32Array.from([0.1, -0.4, 1.3, 0.7, -2, 0.9, 0, 0.5]);
  assertDistribution(
    logits,
    params({ temperature: 1.3, seed: randInt(rand, 2 ** 32) }),
    { prompt: [], output: [] },
    8,
  );
});

// ---- logprobs ----

/** log-softmax by a different route: sum exp in ascending order, shifted by the max. */
function refLogSoftmax(logits: Float32Array): Float64Array {
  const xs = Array.from(logits);
  const max = Math.max(...xs);
  const sorted = xs.map((x) => x - max).sort((a, b) => a - b);
  let z = 0;
  for (const s of sorted) z += Math.exp(s);
  return Float64Array.from(xs, (x) => x - max - Math.log(z));
}

seededTest("logSoftmaxAt / topLogprobs match a float64 reference, including logits near ±1e4", (rand) => {
  for (const offset of [0, 1e4, -1e4]) {
    for (let trial = 0; trial < 20; trial++) {
      const V = 1 + randInt(rand, 3000);
      const logits = randomLogits(rand, V, trial % 2 === 0, trial % 4 === 1 ? 0.1 : 0);
      for (let i = 0; i < V; i++) logits[i] += offset;
      const ref = refLogSoftmax(logits);
      for (let probe = 0; probe < 20; probe++) {
        const i = randInt(rand, V);
        const lp = logSoftmaxAt(logits, i);
        if (ref[i] === -Infinity) assert.equal(lp, -Infinity);
        else assert.ok(Math.abs(lp - ref[i]) < 1e-9, `token ${i}: ${lp} vs ${ref[i]} (offset ${offset})`);
      }

      const n = randInt(rand, 25);
      const top = topLogprobs(logits, n);
      const order = Array.from({ length: V }, (_, i) => i)
        .filter((i) => logits[i] !== -Infinity)
        .sort((a, b) => (logits[a] !== logits[b] ? logits[b] - logits[a] : a - b));
      assert.deepEqual(
        top.map((e) => e.token),
        order.slice(0, n),
      );
      for (const e of top) assert.equal(e.logprob, logSoftmaxAt(logits, e.token));
    }
  }
});

test("logSoftmaxAt: far-apart logits do not overflow; -Infinity gives -Infinity", () => {
  const logits = Float32Array.from([1e4, -1e4, 0, -Infinity]);
  assert.equal(logSoftmaxAt(logits, 0), 0);
  assert.equal(logSoftmaxAt(logits, 1), -2e4);
  assert.equal(logSoftmaxAt(logits, 2), -1e4);
  assert.equal(logSoftmaxAt(logits, 3), -Infinity);
  assert.throws(() => logSoftmaxAt(logits, 4), RangeError);
  assert.throws(() => logSoftmaxAt(Float32Array.from([0, NaN]), 0), /NaN/);
});

test("topLogprobs: ties by lower id; n clamped to the unmasked tokens", () => {
  const logits = Float32Array.from([1, 2, 2, 0, 2, -Infinity]);
  assert.deepEqual(
    topLogprobs(logits, 3).map((e) => e.token),
    [1, 2, 4],
  );
  assert.deepEqual(topLogprobs(logits, 0), []);
  assert.deepEqual(
    topLogprobs(logits, 10).map((e) => e.token),
    [1, 2, 4, 0, 3],
  );
});

// ---- validateSamplingParams ----

test("validateSamplingParams: fills defaults and accepts the edges of each range", () => {
  assert.deepEqual(validateSamplingParams({}), defaultSamplingParams);
  const edges = {
    temperature: 0,
    topK: -1,
    topP: 1,
    minP: 1,
    repetitionPenalty: 1e-3,
    presencePenalty: -2,
    frequencyPenalty: 2,
    seed: -5,
  };
  assert.deepEqual(validateSamplingParams(edges), edges);
  assert.equal(validateSamplingParams({ topP: 1e-9, minP: 0 }).topP, 1e-9);
  // JSON null means "use the default", as in OpenAI's API.
  assert.equal(validateSamplingParams({ temperature: null as unknown as number }).temperature, 1);
});

test("validateSamplingParams: each invalid value is a TachyonError naming the field and value", () => {
  const bad: [Partial<SamplingParams>, string, string][] = [
    [{ temperature: -0.1 }, "temperature", "-0.1"],
    [{ temperature: NaN }, "temperature", "NaN"],
    [{ temperature: Infinity }, "temperature", "Infinity"],
    [{ temperature: "1" as unknown as number }, "temperature", '"1"'],
    [{ topK: 1.5 }, "top_k", "1.5"],
    [{ topP: 0 }, "top_p", "0"],
    [{ topP: 1.5 }, "top_p", "1.5"],
    [{ topP: NaN }, "top_p", "NaN"],
    [{ minP: -0.1 }, "min_p", "-0.1"],
    [{ minP: 1.1 }, "min_p", "1.1"],
    [{ repetitionPenalty: 0 }, "repetition_penalty", "0"],
    [{ repetitionPenalty: -1 }, "repetition_penalty", "-1"],
    [{ presencePenalty: 2.5 }, "presence_penalty", "2.5"],
    [{ presencePenalty: -2.1 }, "presence_penalty", "-2.1"],
    [{ frequencyPenalty: 3 }, "frequency_penalty", "3"],
    [{ seed: 1.5 }, "seed", "1.5"],
    [{ seed: 2 ** 60 }, "seed", String(2 ** 60)],
  ];
  for (const [p, name, value] of bad) {
    assert.throws(
      () => validateSamplingParams(p),
      (e: unknown) =>
        e instanceof TachyonError &&
        e.code === "argument" &&
        e.message.startsWith(`${name} must be`) &&
        e.message.endsWith(`got ${value}`),
      JSON.stringify(p),
    );
  }
  assert.throws(() => validateSamplingParams({ topP: 1.5 }), { message: "top_p must be in (0, 1], got 1.5" });
});
