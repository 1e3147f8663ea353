/**
 * The speculation length follows acceptance and step cost; the statistics count what happened;
 * n-gram lookup proposes what followed the latest earlier occurrence of the longest suffix.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { loadModel } from "../src/index.js";
import { SpeculationLength } from "../src/engine/speculative/adaptive-length.js";
import { NgramProposer } from "../src/engine/speculative/ngram.js";
import { OracleProposer } from "../src/engine/speculative/oracle.js";
import { fixturesDir } from "./paths.js";
import { seededRandom } from "./random.js";

/** Runs `steps` steps in which each proposal is accepted with probability `rate`; step time 1 + c·k. */
function simulate(
  length: SpeculationLength,
  steps: number,
  rate: number,
  rowCost: number,
  seed = 1,
): number[] {
  const random = seededRandom(seed);
  const chosen: number[] = [];
  for (let s = 0; s < steps; s++) {
    const k = length.choose();
    let accepted = 0;
    while (accepted < k && random() < rate) accepted++;
    length.record(k, accepted, 10 * (1 + rowCost * k));
    chosen.push(k);
  }
  return chosen;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

test("high acceptance on cheap verification speculates to the maximum", () => {
  const chosen = simulate(new SpeculationLength(6), 200, 0.95, 0.05);
  assert.ok(mean(chosen.slice(-50)) > 5.5, `mean k ${mean(chosen.slice(-50))}`);
});

test("low acceptance speculates little, and less when verification is expensive", () => {
  const cheap = mean(simulate(new SpeculationLength(6), 300, 0.3, 0.05).slice(-100));
  const costly = mean(simulate(new SpeculationLength(6), 300, 0.3, 1).slice(-100));
  assert.ok(cheap < 3, `cheap verification: mean k ${cheap}`);
  assert.ok(costly < 0.5, `costly verification: mean k ${costly}`);
  assert.ok(costly < cheap);
});

test("the length follows a change of acceptance, and retries after stopping", () => {
  const length = new SpeculationLength(4);
  const good = simulate(length, 100, 0.95, 0.3);
  const bad = simulate(length, 100, 0, 0.3);
  assert.ok(mean(good.slice(-20)) > 3);
  assert.ok(bad.slice(-50).filter((k) => k > 0).length < 10, "mostly stops proposing");
  assert.ok(
    bad.slice(-50).some((k) => k > 0),
    "but tries again now and then",
  );
  const again = simulate(length, 100, 0.95, 0.3);
  assert.ok(mean(again.slice(-20)) > 3, "and recovers when proposals are good again");
});

test("without adaptation the length is the maximum", () => {
  assert.deepEqual(simulate(new SpeculationLength(3, false), 20, 0, 1), new Array(20).fill(3));
});

test("n-gram lookup: the latest occurrence of the longest matching suffix", () => {
  const ngram = new NgramProposer(4);
  // Suffix [1, 2, 3] occurs at 0 (followed by 9) and at 5 (followed by 7, 8): the latest wins.
  assert.deepEqual(ngram.propose([1, 2, 3, 9, 0, 1, 2, 3, 7, 8, 5, 1, 2, 3], 3).tokens, [7, 8, 5]);
  // The 4-token suffix [6, 1, 2, 3] outranks the later 3-token match.
  assert.deepEqual(ngram.propose([6, 1, 2, 3, 4, 4, 1, 2, 3, 5, 6, 1, 2, 3], 2).tokens, [4, 4]);
  assert.deepEqual(ngram.propose([1, 2, 3, 4], 3).tokens, [], "no earlier occurrence");
  assert.deepEqual(ngram.propose([5, 5, 5], 4).tokens, [5], "the match may overlap the suffix");
  assert.deepEqual(ngram.propose([7], 2).tokens, []);
});

test("statistics count steps, proposals and acceptances", async () => {
  const model = await loadModel(path.join(fixturesDir, "models", "llama"), { device: "cpu" });
  const prompt = model.tokenizer.encode("import os\n");
  const opts = { temperature: 0, ignoreEos: true };
  const reference = await model.complete(prompt, { ...opts, maxTokens: 40 });
  // An oracle proposing the greedy continuation: every proposal accepted, 4 tokens per step.
  const proposer = new OracleProposer([...prompt, ...reference.tokens], 3);
  const r = await model.complete(prompt, {
    ...opts,
    maxTokens: 1 + 4 * 9,
    speculation: { method: "custom", proposer, adaptive: false, maxTokens: 3 },
  });
  assert.deepEqual(r.tokens, reference.tokens.slice(0, 37));
  assert.deepEqual(r.speculation, {
    method: "custom",
    steps: 9,
    proposedTokens: 27,
    acceptedTokens: 27,
    acceptanceRate: 1,
    meanAcceptedLength: 4,
  });
  const plain = await model.complete(prompt, { ...opts, maxTokens: 8 });
  assert.equal(plain.speculation, undefined);
  // A proposer that is always wrong: nothing accepted, one token per step.
  const wrong = await model.complete(prompt, {
    ...opts,
    maxTokens: 8,
    speculation: { method: "custom", proposer: { maxTokens: 2, propose: () => ({ tokens: [1, 1] }) } },
  });
  assert.equal(wrong.speculation!.acceptedTokens, wrong.tokens.slice(1).filter((t) => t === 1).length);
  assert.equal(wrong.speculation!.steps, 7);
});
