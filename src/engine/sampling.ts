/**
 * Token sampling on the host: penalties, temperature, top-k, top-p and min-p, then a seeded draw.
 * This is the reference the GPU sampler mirrors, so the semantics are spelled out here:
 *
 * - Order (vLLM's): penalties → temperature → top-k → top-p → min-p → draw.
 * - Ranking is by (penalised logit desc, token id asc). That order is total, so ties at the top-k or
 *   top-p boundary keep the lowest ids and top-k keeps exactly k tokens (fewer only when fewer are
 *   unmasked).
 * - top-p keeps the shortest prefix of that ranking whose probability (under the top-k distribution
 *   at the given temperature) reaches top_p; min-p then keeps tokens whose probability is at least
 *   min_p times the top one's. Both always keep the top token.
 * - Filtered tokens get probability exactly zero: the draw only walks the kept tokens.
 * - NaN or +Infinity logits throw; -Infinity logits mark tokens that can never be drawn.
 *
 * Per call the work is O(vocab) plus a selection, never a full sort of the vocabulary: top-k is a
 * heap scan, top-p a quickselect steered by mass over the tokens heavy enough to matter. The
 * vocab-sized buffers are shared scratch, not allocated per token.
 */
import { TachyonError } from "../errors.js";
import { Rng } from "./rng.js";

export interface SamplingParams {
  /** 0 ⇒ greedy (argmax after penalties). */
  temperature: number;
  /** Keep the k best tokens; 0 or negative ⇒ disabled. */
  topK: number;
  /** Nucleus mass in (0, 1]; 1 ⇒ disabled. */
  topP: number;
  /** Relative probability floor in [0, 1]; 0 ⇒ disabled. */
  minP: number;
  /** > 0; 1 ⇒ disabled. Applies to tokens seen in the prompt or the output. */
  repetitionPenalty: number;
  /** In [-2, 2]; subtracted once from each token present in the output. */
  presencePenalty: number;
  /** In [-2, 2]; subtracted once per occurrence of a token in the output. */
  frequencyPenalty: number;
  /** Makes the draws reproducible when set. */
  seed?: number;
}

export const defaultSamplingParams: SamplingParams = Object.freeze({
  temperature: 1,
  topK: 0,
  topP: 1,
  minP: 0,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
});

function show(v: unknown): string {
  return typeof v === "number" ? String(v) : JSON.stringify(v);
}

/** A number from the request, or the default when absent; JSON null counts as absent, as in OpenAI's API. */
function field(
  value: number | undefined | null,
  name: string,
  fallback: number,
  ok: (v: number) => boolean,
  range: string,
): number {
  if (value === undefined || value === null) return fallback;
  if (typeof value !== "number" || !ok(value)) {
    throw new TachyonError(`${name} must be ${range}, got ${show(value)}`, "argument");
  }
  return value;
}

/** Fills defaults and checks every field; errors name the field (as the OpenAI API spells it). */
export function validateSamplingParams(p: Partial<SamplingParams>): SamplingParams {
  const d = defaultSamplingParams;
  const penalty = (v: number) => v >= -2 && v <= 2;
  const out: SamplingParams = {
    temperature: field(p.temperature, "temperature", d.temperature, (v) => v >= 0 && v < Infinity, ">= 0"),
    topK: field(p.topK, "top_k", d.topK, Number.isSafeInteger, "an integer (0 or negative disables it)"),
    topP: field(p.topP, "top_p", d.topP, (v) => v > 0 && v <= 1, "in (0, 1]"),
    minP: field(p.minP, "min_p", d.minP, (v) => v >= 0 && v <= 1, "in [0, 1]"),
    repetitionPenalty: field(
      p.repetitionPenalty,
      "repetition_penalty",
      d.repetitionPenalty,
      (v) => v > 0 && v < Infinity,
      "> 0",
    ),
    presencePenalty: field(p.presencePenalty, "presence_penalty", d.presencePenalty, penalty, "in [-2, 2]"),
    frequencyPenalty: field(
      p.frequencyPenalty,
      "frequency_penalty",
      d.frequencyPenalty,
      penalty,
      "in [-2, 2]",
    ),
  };
  if (p.seed !== undefined && p.seed !== null) {
    out.seed = field(p.seed, "seed", 0, Number.isSafeInteger, "an integer in ±(2^53 - 1)");
  }
  return out;
}

/** Vocab-sized work buffers shared by all samplers: sampling is synchronous, so one set per thread. */
interface Scratch {
  /** Penalised logits (float64, so penalties are exact formulas, not float32 roundings). */
  w: Float64Array;
  /** exp((w - max) / temperature) of the candidate tokens, indexed by token id. */
  e: Float64Array;
  /** Candidate token ids; selection rearranges them in place. */
  idx: Int32Array;
}

let shared: Scratch = { w: new Float64Array(0), e: new Float64Array(0), idx: new Int32Array(0) };

function scratch(size: number): Scratch {
  if (shared.idx.length < size) {
    shared = { w: new Float64Array(size), e: new Float64Array(size), idx: new Int32Array(size) };
  }
  return shared;
}

export class Sampler {
  readonly params: SamplingParams;
  /** The seed in use (random when params.seed was not set), so a draw can be reproduced. */
  readonly seed: number;
  private readonly rng: Rng;
  /** Distinct ids of prompt ∪ output, for the repetition penalty. */
  private readonly seen = new Set<number>();
  private readonly seenIds: number[] = [];
  /** Distinct output ids and their counts (parallel arrays), for presence and frequency penalties. */
  private readonly outSlot = new Map<number, number>();
  private readonly outIds: number[] = [];
  private readonly outCounts: number[] = [];

  constructor(
    params: SamplingParams,
    readonly vocabSize: number,
  ) {
    if (!Number.isSafeInteger(vocabSize) || vocabSize <= 0) {
      throw new RangeError(`Sampler: vocabSize must be a positive integer, got ${vocabSize}`);
    }
    this.params = validateSamplingParams(params);
    this.rng = new Rng(this.params.seed);
    this.seed = this.rng.seed;
  }

  /** Starts a sequence: sets its prompt and forgets any earlier output. */
  setPrompt(promptTokens: readonly number[]): void {
    this.seen.clear();
    this.seenIds.length = 0;
    this.outSlot.clear();
    this.outIds.length = 0;
    this.outCounts.length = 0;
    for (const t of promptTokens) this.markSeen(this.checkToken(t));
  }

  /** Records a generated token so the penalties of the next draw include it. */
  accept(token: number): void {
    this.markSeen(this.checkToken(token));
    const slot = this.outSlot.get(token);
    if (slot === undefined) {
      this.outSlot.set(token, this.outIds.length);
      this.outIds.push(token);
      this.outCounts.push(1);
    } else {
      this.outCounts[slot]++;
    }
  }

  /**
   * What a device-side sampler needs for the next draw: every token seen (prompt ∪ output) with
   * its count in the output, for the penalties, and a random 32-bit word from this sampler's
   * seeded stream (so a seed reproduces device sampling too).
   */
  deviceDraw(): { tokens: Int32Array; outputCounts: Int32Array; random: number } {
    const tokens = Int32Array.from(this.seenIds);
    const outputCounts = Int32Array.from(this.seenIds, (t) => {
      const slot = this.outSlot.get(t);
      return slot === undefined ? 0 : this.outCounts[slot];
    });
    return { tokens, outputCounts, random: this.rng.nextU32() };
  }

  /** Draws the next token from `logits` (left unmodified). */
  sample(logits: Float32Array): number {
    const { n, total, best } = this.weigh(logits);
    if (n === 0) return best;
    const { e, idx } = shared;
    // The walk adds the same weights in the same order as `total`, so r < total always lands;
    // a zero weight never lands, since r < cum would have been true one step earlier.
    const r = this.rng.nextFloat() * total;
    let cum = 0;
    for (let j = 0; j < n; j++) {
      cum += e[idx[j]];
      if (r < cum) return idx[j];
    }
    return best; // unreachable
  }

  /**
   * The distribution `sample` draws from, written densely into `out` (length vocab): zero for
   * filtered tokens, 1 at the argmax for greedy. Speculative sampling compares it with a proposer's.
   */
  distribution(logits: Float32Array, out: Float64Array): void {
    const { n, total, best } = this.weigh(logits);
    out.fill(0);
    if (n === 0) {
      out[best] = 1;
      return;
    }
    const { e, idx } = shared;
    for (let j = 0; j < n; j++) out[idx[j]] = e[idx[j]] / total;
  }

  /** A uniform number in [0, 1) from this sampler's seeded stream. */
  random(): number {
    return this.rng.nextFloat();
  }

  /** Draws index i with probability weights[i] / Σ weights (non-negative weights, positive sum). */
  drawFrom(weights: Float64Array): number {
    let total = 0;
    let last = -1;
    for (let i = 0; i < weights.length; i++) {
      total += weights[i];
      if (weights[i] > 0) last = i;
    }
    if (!(total > 0)) throw new RangeError("drawFrom: the weights sum to zero");
    const r = this.rng.nextFloat() * total;
    let cum = 0;
    for (let i = 0; i < weights.length; i++) {
      cum += weights[i];
      if (r < cum && weights[i] > 0) return i;
    }
    return last; // rounding: r landed past the last partial sum
  }

  /**
   * Applies penalties, temperature, top-k, top-p and min-p to `logits`. Returns the argmax and,
   * unless greedy (then n = 0), the kept tokens idx[0, n) of the shared scratch with their weights
   * e[token] and the weights' total.
   */
  private weigh(logits: Float32Array): { n: number; total: number; best: number } {
    const V = this.vocabSize;
    if (logits.length !== V) {
      throw new RangeError(`Sampler: expected ${V} logits, got ${logits.length}`);
    }
    const { temperature: T, topK, topP, minP } = this.params;
    const { w, e, idx } = scratch(V);
    w.set(logits);
    this.applyPenalties(w);
    const best = argmaxChecked(w, V);
    if (T === 0) return { n: 0, total: 0, best };
    const max = w[best];

    // min-p in log space: p / pmax ≥ minP ⇔ (w - max) / T ≥ ln(minP).
    const lnMinP = minP > 0 ? Math.log(minP) : -Infinity;
    let n: number;
    if (topK > 0 && topK < V) {
      n = heapTopK(w, V, topK, idx);
      if (topP < 1) {
        let z = 0;
        for (let j = 0; j < n; j++) {
          const t = idx[j];
          z += e[t] = Math.exp((w[t] - max) / T);
        }
        n = selectNucleus(idx, n, topP * z, w, e);
      }
    } else if (topP < 1) {
      // top-p needs the mass of the whole vocabulary; the pass that sums it also drops tokens too
      // light to be in any nucleus (see nucleusFloor), so the selection works on a short list.
      let z = 0;
      for (let i = 0; i < V; i++) z += e[i] = Math.exp((w[i] - max) / T);
      const floor = nucleusFloor(topP, z, V);
      n = 0;
      for (let i = 0; i < V; i++) if (e[i] >= floor) idx[n++] = i;
      n = selectNucleus(idx, n, topP * z, w, e);
    } else {
      // Without top-p, min-p is a plain threshold and can filter before any exp.
      n = collect(w, V, max, T, lnMinP, idx);
    }

    // Final weights, min-p applied (top-p left e filled for idx[0, n)). The top token has weight
    // exp(0) = 1, so total ≥ 1.
    const haveExp = topP < 1;
    let total = 0;
    for (let j = 0; j < n; j++) {
      const t = idx[j];
      const x = (w[t] - max) / T;
      total += e[t] = x >= lnMinP ? (haveExp ? e[t] : Math.exp(x)) : 0;
    }
    return { n, total, best };
  }

  private checkToken(token: number): number {
    if (!Number.isInteger(token) || token < 0 || token >= this.vocabSize) {
      throw new TachyonError(
        `token id ${token} is outside the vocabulary [0, ${this.vocabSize})`,
        "argument",
      );
    }
    return token;
  }

  private markSeen(token: number): void {
    if (!this.seen.has(token)) {
      this.seen.add(token);
      this.seenIds.push(token);
    }
  }

  /** HF/vLLM repetition penalty first, then OpenAI's frequency and presence penalties. */
  private applyPenalties(w: Float64Array): void {
    const { repetitionPenalty: rep, presencePenalty: presence, frequencyPenalty: freq } = this.params;
    if (rep !== 1) {
      for (const t of this.seenIds) {
        const x = w[t];
        w[t] = x > 0 ? x / rep : x * rep;
      }
    }
    if (presence !== 0 || freq !== 0) {
      const ids = this.outIds;
      for (let j = 0; j < ids.length; j++) w[ids[j]] -= freq * this.outCounts[j] + presence;
    }
  }
}

/** Argmax with lowest id on ties; throws on NaN or +Infinity, and when every value is -Infinity. */
function argmaxChecked(values: Float32Array | Float64Array, n: number): number {
  let best = 0;
  let max = values[0];
  for (let i = 1; i < n; i++) {
    const x = values[i];
    if (x > max) {
      max = x;
      best = i;
    } else if (x !== x) {
      max = x; // report below; NaN at 0 is caught the same way
      best = i;
      break;
    }
  }
  if (max !== max) throw new TachyonError(`logits: token ${best} is NaN`, "numeric");
  if (max === Infinity) throw new TachyonError(`logits: token ${best} is +Infinity`, "numeric");
  if (max === -Infinity) throw new TachyonError("logits: every token is -Infinity (all masked)", "numeric");
  return best;
}

/** Index of the largest logit; ties go to the lowest id. Throws on NaN, +Infinity or all -Infinity. */
export function argmax(logits: Float32Array): number {
  return argmaxChecked(logits, logits.length);
}

/** Fills idx with the unmasked tokens whose (w - max) / T is at least `cut`; returns how many. */
function collect(w: Float64Array, V: number, max: number, T: number, cut: number, idx: Int32Array): number {
  let n = 0;
  for (let i = 0; i < V; i++) if (w[i] !== -Infinity && (w[i] - max) / T >= cut) idx[n++] = i;
  return n;
}

/**
 * A weight below which no token can be in the top-p nucleus. If the nucleus's last token j had
 * weight e_j, the tokens from j on (at most V, each ≤ e_j) carry more than (1 - topP)·z, else j
 * would not be needed; so e_j > (1 - topP)·z / V. Halved to stay clear of rounding.
 */
function nucleusFloor(topP: number, z: number, V: number): number {
  return (0.5 * (1 - topP) * z) / V;
}

/** Whether token a ranks before token b: higher value first, then lower id. */
function before(w: Float64Array, a: number, b: number): boolean {
  const wa = w[a];
  const wb = w[b];
  return wa > wb || (wa === wb && a < b);
}

/** Sorts idx[lo, hi) by rank: insertion sort for short ranges, the built-in sort otherwise. */
function sortRange(idx: Int32Array, lo: number, hi: number, w: Float64Array): void {
  if (hi - lo > 32) {
    idx.subarray(lo, hi).sort((a, b) => (a === b ? 0 : before(w, a, b) ? -1 : 1));
    return;
  }
  for (let i = lo + 1; i < hi; i++) {
    const t = idx[i];
    let j = i - 1;
    while (j >= lo && before(w, t, idx[j])) {
      idx[j + 1] = idx[j];
      j--;
    }
    idx[j + 1] = t;
  }
}

/**
 * Partitions idx[lo, hi) (at least 3 long) around a median-of-three pivot; returns the pivot's
 * final position p: idx[lo, p) rank before it, idx(p, hi) after it.
 */
function partition(idx: Int32Array, lo: number, hi: number, w: Float64Array): number {
  const last = hi - 1;
  const mid = (lo + hi) >>> 1;
  // Order lo, mid, last so the median lands at mid, then park it at the end.
  if (before(w, idx[mid], idx[lo])) swap(idx, lo, mid);
  if (before(w, idx[last], idx[lo])) swap(idx, lo, last);
  if (before(w, idx[last], idx[mid])) swap(idx, mid, last);
  swap(idx, mid, last);
  const pivot = idx[last];
  let store = lo;
  for (let j = lo; j < last; j++) {
    if (before(w, idx[j], pivot)) swap(idx, store++, j);
  }
  swap(idx, store, last);
  return store;
}

function swap(idx: Int32Array, i: number, j: number): void {
  const t = idx[i];
  idx[i] = idx[j];
  idx[j] = t;
}

/** Quickselect rounds before falling back to a sort of what is left (guards against bad pivots). */
function roundLimit(n: number): number {
  return 2 * Math.ceil(Math.log2(n + 1)) + 8;
}

/**
 * Puts the k best-ranked unmasked tokens in idx[0, returned), in heap order: a min-heap on rank
 * whose root is the worst kept token. Most tokens cost one comparison against the root.
 */
function heapTopK(w: Float64Array, V: number, k: number, idx: Int32Array): number {
  let n = 0;
  let i = 0;
  for (; i < V && n < k; i++) {
    if (w[i] === -Infinity) continue;
    idx[n] = i;
    siftUp(idx, n++, w);
  }
  if (n < k) return n;
  let floor = w[idx[0]];
  for (; i < V; i++) {
    // A tie with the root loses: the root has the lower id.
    if (w[i] > floor) {
      idx[0] = i;
      siftDown(idx, k, w);
      floor = w[idx[0]];
    }
  }
  return k;
}

function siftUp(heap: Int32Array, pos: number, w: Float64Array): void {
  const t = heap[pos];
  while (pos > 0) {
    const parent = (pos - 1) >> 1;
    if (!before(w, heap[parent], t)) break;
    heap[pos] = heap[parent];
    pos = parent;
  }
  heap[pos] = t;
}

function siftDown(heap: Int32Array, size: number, w: Float64Array): void {
  const t = heap[0];
  let pos = 0;
  for (;;) {
    let child = 2 * pos + 1;
    if (child >= size) break;
    if (child + 1 < size && before(w, heap[child], heap[child + 1])) child++; // the worse child
    if (!before(w, t, heap[child])) break;
    heap[pos] = heap[child];
    pos = child;
  }
  heap[pos] = t;
}

/**
 * Top-p on idx[0, n): rearranges it so that idx[0, returned) is the shortest best-ranked prefix
 * whose weight e reaches `target` (all n when rounding keeps it short), in no particular order.
 * A quickselect steered by mass instead of count: O(n) expected, no full sort.
 */
function selectNucleus(idx: Int32Array, n: number, target: number, w: Float64Array, e: Float64Array): number {
  // Invariant: idx[0, lo) are all kept and weigh `kept`; idx[hi, n) are all dropped.
  let lo = 0;
  let hi = n;
  let kept = 0;
  for (let round = roundLimit(n); hi - lo > 32 && round > 0; round--) {
    const p = partition(idx, lo, hi, w);
    let mass = kept;
    for (let j = lo; j < p; j++) mass += e[idx[j]];
    if (mass >= target) {
      hi = p; // the prefix ends before the pivot
    } else {
      mass += e[idx[p]];
      if (mass >= target) return p + 1;
      kept = mass;
      lo = p + 1;
    }
  }
  sortRange(idx, lo, hi, w);
  for (let j = lo; j < hi; j++) {
    kept += e[idx[j]];
    if (kept >= target) return j + 1;
  }
  return hi;
}

/** Max and log of the softmax normaliser, in float64; the max subtraction keeps it stable. */
function logNormaliser(logits: Float32Array): { max: number; logZ: number } {
  const max = logits[argmax(logits)];
  let z = 0;
  for (let i = 0; i < logits.length; i++) z += Math.exp(logits[i] - max);
  return { max, logZ: Math.log(z) };
}

/** log softmax(logits)[token] of the raw logits, as OpenAI's logprobs report it. */
export function logSoftmaxAt(logits: Float32Array, token: number): number {
  if (!Number.isInteger(token) || token < 0 || token >= logits.length) {
    throw new RangeError(`logSoftmaxAt: token ${token} is outside [0, ${logits.length})`);
  }
  const { max, logZ } = logNormaliser(logits);
  return logits[token] - max - logZ;
}

/**
 * The n most likely tokens of the raw logits with their log-probabilities, best first, ties by
 * lower id. Masked (-Infinity) tokens are never listed, so fewer than n can come back.
 */
export function topLogprobs(logits: Float32Array, n: number): { token: number; logprob: number }[] {
  const V = logits.length;
  const { max, logZ } = logNormaliser(logits);
  if (!(n >= 1)) return [];
  const { w, idx } = scratch(V);
  w.set(logits);
  n = heapTopK(w, V, Math.min(Math.floor(n), V), idx);
  sortRange(idx, 0, n, w);
  const out: { token: number; logprob: number }[] = [];
  for (let j = 0; j < n; j++) out.push({ token: idx[j], logprob: logits[idx[j]] - max - logZ });
  return out;
}
