/**
 * The pipelined greedy decode (GreedyPipeline): the tokens of one-step-at-a-time greedy decoding,
 * a cache left as if the step in flight never ran, and a spent pipeline that says so.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { loadModel } from "../src/index.js";
import { GreedyPipeline } from "../src/engine/greedy-pipeline.js";
import type { SequenceKv } from "../src/engine/kv-cache.js";
import { fixturesDir } from "./paths.js";

const model = await loadModel(path.join(fixturesDir, "models", "qwen3"), { device: "cpu" });
const executor = model.executor;
const prompt = model.tokenizer.encode("def fib(n):\n    if n < 2:");

/** A sequence holding `prompt`, and the greedy token after it (pending, not in the cache). */
function prefilled(): { seq: SequenceKv; pending: number } {
  const seq = executor.newSequence();
  const [pending] = executor.stepGreedy([{ seq, tokens: prompt }]);
  return { seq, pending };
}

/** `count` greedy tokens after `pending`, one waited-for step at a time. */
function stepwise(seq: SequenceKv, pending: number, count: number): number[] {
  const out: number[] = [];
  let token = pending;
  for (let i = 0; i < count; i++) {
    [token] = executor.stepGreedy([{ seq, tokens: [token] }]);
    out.push(token);
  }
  return out;
}

/** The `count` greedy tokens after `prompt`'s pending one, decoded step by step in a sequence of their own. */
function expectedTokens(count: number): number[] {
  const { seq, pending } = prefilled();
  try {
    return stepwise(seq, pending, count);
  } finally {
    seq.free();
  }
}

test("pipelined greedy tokens equal step-by-step greedy tokens", () => {
  const expected = expectedTokens(12);
  const b = prefilled();
  const pipeline = new GreedyPipeline(executor, b.seq, b.pending);
  const got = Array.from({ length: 12 }, (_, i) => pipeline.next(i < 11));
  assert.deepEqual(got, expected);
  // Spent by next(false): the cache holds the prompt, the first pending token and every token
  // returned but the last, which is pending.
  assert.equal(b.seq.length, prompt.length + 12);
  assert.throws(() => pipeline.next(), /spent/);
  b.seq.free();
});

test("closing drops the step in flight: decoding on continues as if it never ran", () => {
  const expected = expectedTokens(10);
  const b = prefilled();
  const pipeline = new GreedyPipeline(executor, b.seq, b.pending);
  const first = Array.from({ length: 6 }, () => pipeline.next());
  assert.equal(b.seq.length, prompt.length + 7, "the step after the sixth token is in flight");
  pipeline.close();
  assert.equal(b.seq.length, prompt.length + 6, "the sixth token is pending again");
  const rest = stepwise(b.seq, first[5], 4);
  assert.deepEqual([...first, ...rest], expected);
  b.seq.free();
});
