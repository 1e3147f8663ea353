/**
 * Rolling back rejected proposals: the sequence's cache after a verification with rejections is
 * the cache a fresh run of the accepted tokens builds, and blocks past the new length go back to
 * the pool.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { loadModel } from "../src/index.js";
import { BlockAllocator, SequenceKv } from "../src/engine/kv-cache.js";
import { SpeculationLength } from "../src/engine/speculative/adaptive-length.js";
import { SpeculativeDecoder } from "../src/engine/speculative/decoder.js";
import { Sampler, validateSamplingParams } from "../src/engine/sampling.js";
import { fixturesDir } from "./paths.js";

test("truncate shortens a sequence and frees the blocks past it", () => {
  const pool = new BlockAllocator(8);
  const seq = new SequenceKv(pool, 4);
  seq.reserve(13); // 4 blocks
  seq.length = 13;
  const slotOf9 = seq.slot(9);
  seq.truncate(9); // positions 0..8: 3 blocks
  assert.equal(seq.length, 9);
  assert.equal(seq.blockTable.length, 3);
  assert.equal(pool.freeBlocks, 5);
  assert.equal(seq.slot(8), seq.blockTable[2] * 4);
  seq.truncate(8); // exactly 2 blocks
  assert.equal(seq.blockTable.length, 2);
  assert.equal(pool.freeBlocks, 6);
  seq.reserve(10);
  assert.equal(seq.slot(9), slotOf9, "the freed block is reused first");
  assert.throws(() => seq.truncate(9), RangeError, "cannot grow");
  assert.throws(() => seq.truncate(-1), RangeError);
  seq.truncate(0);
  assert.equal(pool.freeBlocks, 8);
});

test("after rejected proposals the cache equals a fresh run of the kept tokens", async () => {
  const model = await loadModel(path.join(fixturesDir, "models", "qwen3"), { device: "cpu" });
  const executor = model.executor;
  const V = model.config.vocabSize;
  const prompt = model.tokenizer.encode("def add(a, b):\n    return a + b\n");
  const seq = executor.newSequence();
  const free = executor.allocator.freeBlocks;
  // Proposes 7 tokens of which only the first agrees with the model (found by a first pass).
  const greedy = await model.complete(prompt, { temperature: 0, maxTokens: 24, ignoreEos: true });
  let proposals = 0;
  const proposer = {
    maxTokens: 7,
    propose(tokens: readonly number[], k: number) {
      proposals++;
      const next = greedy.tokens[tokens.length - prompt.length];
      return { tokens: [next, ...Array.from({ length: k - 1 }, (_, i) => (next + 1 + i) % V)] };
    },
  };
  const sampler = new Sampler(validateSamplingParams({ temperature: 0 }), V);
  const decoder = new SpeculativeDecoder(executor, seq, sampler, "argmax", prompt, {
    proposer,
    length: new SpeculationLength(7, false),
  });
  try {
    decoder.step(24); // the first token, from the prompt
    while (decoder.tokens.length < prompt.length + 20) {
      const before = seq.length;
      const { tokens } = decoder.step(prompt.length + 24 - decoder.tokens.length);
      assert.equal(tokens.length, 2, "one proposal accepted, then the correction");
      assert.equal(seq.length, before + 2);
      // Blocks cover exactly the kept positions plus the pending token's.
      assert.equal(seq.blockTable.length, Math.ceil(seq.length / executor.blockSize));
    }
    const produced = decoder.tokens.slice(prompt.length);
    assert.deepEqual(produced, greedy.tokens.slice(0, produced.length));
    assert.ok(proposals >= 9);

    // The next step's logits from the rolled-back cache match a fresh sequence's.
    const pending = decoder.tokens.at(-1)!;
    const [afterRollback] = executor.step([{ seq, tokens: [pending] }]);
    const fresh = executor.newSequence();
    try {
      executor.step([{ seq: fresh, tokens: decoder.tokens.slice(0, -1) }]);
      const [expected] = executor.step([{ seq: fresh, tokens: [pending] }]);
      let worst = 0;
      for (let v = 0; v < V; v++) worst = Math.max(worst, Math.abs(afterRollback[v] - expected[v]));
      assert.ok(worst < 1e-4, `max logit difference ${worst}`);
    } finally {
      fresh.free();
    }
  } finally {
    decoder.close();
    seq.free();
  }
  assert.equal(executor.allocator.freeBlocks, free, "every block is back in the pool");
});
