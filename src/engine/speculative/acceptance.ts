/**
 * Which proposed tokens the target accepts. A verification step gives the target's logits at the
 * pending token and after each proposed token (k + 1 rows); row j decides proposal j, and the row
 * after the last accepted proposal gives one more token: the correction, or the bonus when all
 * were accepted. So every step yields between 1 and k + 1 tokens.
 */
import type { Sampler } from "../sampling.js";
import type { Proposal } from "./proposer.js";

/** How many proposed tokens were accepted, and the target's token after them. */
export interface Verdict {
  accepted: number;
  next: number;
}

/** Greedy verification from the target's argmax of each row: accept while they agree. */
export function acceptGreedy(proposed: readonly number[], targetIds: ArrayLike<number>): Verdict {
  let accepted = 0;
  while (accepted < proposed.length && proposed[accepted] === targetIds[accepted]) accepted++;
  return { accepted, next: targetIds[accepted] };
}

/**
 * Speculative sampling (Leviathan et al., Chen et al., 2023), which leaves the output distributed
 * exactly as the target's: p is the target's distribution after the request's processing (the
 * Sampler's penalties, temperature, top-k/p, min-p), q the proposer's. Proposal x is accepted with
 * probability min(1, p(x) / q(x)); on rejection the token is drawn from normalize(max(0, p − q));
 * with all accepted, the bonus token is drawn from p.
 *
 * A proposal without q (a point mass: copied or greedy tokens, every built-in proposer's) is
 * verified by drawing the target's own token from p and comparing: accepted with probability
 * p(x), as by the rule above, and the tokens are then exactly those plain sampling draws with the
 * same seed, one random number each, however many tokens each step proposed. So a seeded request
 * stays reproducible while the adaptive length and a batch's budget vary the proposals. Greedy
 * (temperature 0) compares with the penalised argmax. Each returned token is recorded in the
 * sampler as it is decided, since later rows' penalties depend on it. `p` and `residual` are
 * vocabulary-sized scratch.
 */
export function acceptSampled(
  sampler: Sampler,
  proposal: Proposal,
  row: (j: number) => Float32Array,
  p: Float64Array,
  residual: Float64Array,
): Verdict {
  const proposed = proposal.tokens;
  const greedy = sampler.params.temperature === 0;
  for (let j = 0; j < proposed.length; j++) {
    const x = proposed[j];
    const q = proposal.probs?.[j];
    let next: number;
    if (greedy || !q) {
      next = sampler.sample(row(j));
    } else {
      sampler.distribution(row(j), p);
      if (sampler.random() * q[x] < p[x]) {
        next = x;
      } else {
        let mass = 0;
        for (let t = 0; t < p.length; t++) mass += residual[t] = Math.max(0, p[t] - q[t]);
        // p ≤ q everywhere means p = q, whose proposals are always accepted; rounding aside.
        next = sampler.drawFrom(mass > 0 ? residual : p);
      }
    }
    sampler.accept(next);
    if (next !== x) return { accepted: j, next };
  }
  const next = sampler.sample(row(proposed.length));
  sampler.accept(next);
  return { accepted: proposed.length, next };
}
