/**
 * How many tokens to propose per step. Proposing k costs a step of k + 1 rows (plus the proposer's
 * work) and yields 1 + (expected accepted) tokens, so the best k maximises
 *
 *   E(k) / cost(k),   E(k) = 1 + Σ_{i ≤ k} α_1 · … · α_i
 *
 * where α_i is the observed rate at which proposal i is accepted given that proposals 1..i−1
 * were, and cost(k) the measured time of steps that verified k proposals (lengths not measured
 * yet are read off a line through the measured ones). Acceptance forgets slowly, so the length
 * follows the text (repetitive stretches speculate further) and drifts back to trying again after
 * a bad stretch. Before any measurement a proposed row is assumed cheap, as on a GPU, where a verify
 * step of a few rows costs about one decode step.
 */

/** Weight each observation keeps per later step: a memory of about 20 steps. */
const decay = 0.95;
/** Assumed extra cost of each proposed row, relative to a one-row step, until measured. */
const assumedRowCost = 0.1;
/** Weight of a new step-time measurement. */
const timeWeight = 0.2;

export class SpeculationLength {
  /** Per proposal position i: decayed count of acceptances and of tries. */
  private readonly hits: number[];
  private readonly tries: number[];
  /** Per k: mean step time (ms), and how many steps were seen (the first one warms up). */
  private readonly ms: number[];
  private readonly seen: number[];

  constructor(
    /** The most tokens ever proposed per step. */
    readonly max: number,
    readonly adaptive = true,
  ) {
    this.hits = new Array<number>(max).fill(0);
    this.tries = new Array<number>(max).fill(0);
    this.ms = new Array<number>(max + 1).fill(0);
    this.seen = new Array<number>(max + 1).fill(0);
  }

  /**
   * Acceptance rate of proposal i given the ones before it. The prior (worth two tries) is the
   * rate of the proposal before, since neighbours accept alike; 1/2 for the first.
   */
  rate(i: number): number {
    const prior = i === 0 ? 0.5 : this.rate(i - 1);
    return (this.hits[i] + 2 * prior) / (this.tries[i] + 2);
  }

  /** The number of tokens to propose next. */
  choose(): number {
    if (!this.adaptive) return this.max;
    let best = 0;
    let bestValue = 0;
    let expected = 1;
    let reach = 1;
    for (let k = 0; k <= this.max; k++) {
      if (k > 0) expected += reach *= this.rate(k - 1);
      const value = expected / this.cost(k);
      if (value > bestValue) {
        best = k;
        bestValue = value;
      }
    }
    return best;
  }

  /** Records a step that proposed `proposed` tokens, accepted `accepted` of them and took `ms`. */
  record(proposed: number, accepted: number, ms: number): void {
    for (let i = 0; i < this.max; i++) {
      this.hits[i] *= decay;
      this.tries[i] *= decay;
    }
    for (let i = 0; i < proposed && i <= accepted && i < this.max; i++) {
      this.tries[i]++;
      if (i < accepted) this.hits[i]++;
    }
    if (proposed > this.max) return;
    // The first step of a length warms up (compiles, captures a graph): not its cost.
    if (this.seen[proposed]++ === 1) this.ms[proposed] = ms;
    else if (this.seen[proposed] > 2) this.ms[proposed] += timeWeight * (ms - this.ms[proposed]);
  }

  /**
   * Step time for k proposals: measured, or else read off a line a + b·k through the measured
   * lengths (least squares; with one measured length the slope is assumed, with none the unit).
   */
  private cost(k: number): number {
    if (this.seen[k] > 1) return this.ms[k];
    let n = 0;
    let sk = 0;
    let sm = 0;
    let skk = 0;
    let skm = 0;
    for (let j = 0; j <= this.max; j++) {
      if (this.seen[j] < 2) continue;
      n++;
      sk += j;
      sm += this.ms[j];
      skk += j * j;
      skm += j * this.ms[j];
    }
    if (n === 0) return 1 + assumedRowCost * k;
    const spread = n * skk - sk * sk;
    if (spread === 0) return (sm / (1 + assumedRowCost * sk)) * (1 + assumedRowCost * k);
    const slope = Math.max(0, (n * skm - sk * sm) / spread);
    const intercept = Math.max((sm - slope * sk) / n, Number.MIN_VALUE);
    return intercept + slope * k;
  }
}
