/**
 * The continuous-batching scheduler without HTTP: chunked prefill and preemption never change
 * greedy output, and a mixed step sends each row to its own way of choosing a token.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import type { DeviceDraw, Tensor } from "../src/backends/backend.js";
import { loadModel, type GenerationResult } from "../src/index.js";
import { Scheduler } from "../src/engine/scheduler.js";
import { argmax, defaultSamplingParams } from "../src/engine/sampling.js";
import { draftDir } from "./server-harness.js";

async function drain(stream: AsyncGenerator<unknown, GenerationResult>): Promise<GenerationResult> {
  for (;;) {
    const r = await stream.next();
    if (r.done) return r.value;
  }
}

const prompts = ["def add(a, b):\n", "import os\n", "class Node:\n    def __init__(self):\n", "x = [1, 2"];

test("with a small KV cache, sequences are preempted and recomputed, and greedy output is unchanged", async () => {
  // 16 blocks of 16 tokens: four sequences of up to ~110 tokens cannot all hold their blocks.
  const model = await loadModel(draftDir, { device: "cpu", maxContext: 256, kvCacheTokens: 256 });
  const opts = { temperature: 0, maxTokens: 100, ignoreEos: true };
  const alone: number[][] = [];
  for (const p of prompts) alone.push((await model.complete(p, opts)).tokens);

  const scheduler = new Scheduler(model.executor, model.tokenizer, { maxBatchTokens: 8 });
  const results = await Promise.all(
    prompts.map((p) => drain(scheduler.submit(model.tokenizer.encode(p), opts)[0])),
  );
  assert.deepEqual(
    results.map((r) => r.tokens),
    alone,
  );
  const stats = scheduler.stats();
  assert.ok(stats.preemptions > 0, "the cache was too small for all four at once");
  assert.equal(stats.kvBlocksUsed, 0);
  assert.equal(stats.running + stats.waiting, 0);
});

test("a request that can never fit the KV cache is refused up front", async () => {
  const model = await loadModel(draftDir, { device: "cpu", maxContext: 1024, kvCacheTokens: 512 });
  const scheduler = new Scheduler(model.executor, model.tokenizer, { maxWaiting: 1 });
  assert.throws(
    () => scheduler.submit(new Array(400).fill(5), { maxTokens: 200 }),
    /needs more KV cache than the server holds \(512 tokens\)/,
  );
  scheduler.submit([5], { maxTokens: 1 });
  assert.throws(() => scheduler.submit([5], { maxTokens: 1 }), /queue is full/);
  await scheduler.idle();
});

test("stepChoosing sends each row to its own mechanism and answers in input order", async () => {
  const model = await loadModel(draftDir, { device: "cpu" });
  const executor = model.executor;
  const backend = executor.backend;
  const V = model.config.vocabSize;
  // A device sampler stand-in that records what it was given: the argmax of each row it gets.
  const seen: DeviceDraw[][] = [];
  backend.sampleRows = (logits: Tensor, draws: readonly DeviceDraw[]) => {
    seen.push([...draws]);
    const all = backend.read(logits);
    return Int32Array.from(draws, (_, i) => argmax(all.subarray(i * V, (i + 1) * V)));
  };
  try {
    const tokens = [[1, 2, 3], [4, 5], [6], [7, 8, 9, 10], [11, 12]];
    // Inputs 0 (host) and 3 (argmax) verify: a choice for every row.
    const allLogits = [true, false, false, true, false];
    // Each input alone: the logits and hidden states of all its rows.
    const alone = tokens.map((t) => {
      const seq = executor.newSequence();
      const [r] = executor.stepChoosing([{ seq, tokens: t, allLogits: true }], [{ by: "host" }]);
      seq.free();
      return { logits: r.logits!, hidden: backend.read(r.hidden.tensor) };
    });
    const reference = alone.map((a) => a.logits);
    const maxDiff = (a: Float32Array, b: Float32Array) =>
      a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);
    const argmaxOfRows = (logits: Float32Array, rows: number[]) =>
      rows.map((r) => argmax(logits.subarray(r * V, (r + 1) * V)));
    const draw: DeviceDraw = {
      params: defaultSamplingParams,
      tokens: new Int32Array(0),
      outputCounts: new Int32Array(0),
      random: 7,
    };
    const seqs = tokens.map(() => executor.newSequence());
    const results = executor.stepChoosing(
      seqs.map((seq, i) => ({ seq, tokens: tokens[i], allLogits: allLogits[i] })),
      [{ by: "host" }, { by: "draw", draw }, { by: "none" }, { by: "argmax" }, { by: "argmax" }],
    );
    seqs.forEach((s) => s.free());
    assert.equal(results[0].logits!.length, 3 * V, "every row's logits");
    const diff = maxDiff(results[0].logits!, reference[0]);
    assert.ok(diff < 1e-4, `host rows get their logits (max difference ${diff})`);
    assert.deepEqual(results[1].tokens, argmaxOfRows(reference[1], [1]));
    assert.equal(results[2].tokens ?? results[2].logits, undefined);
    assert.deepEqual(results[3].tokens, argmaxOfRows(reference[3], [0, 1, 2, 3]));
    assert.deepEqual(results[4].tokens, argmaxOfRows(reference[4], [1]));
    results.forEach((r, i) => {
      const d = maxDiff(backend.read(r.hidden.tensor), alone[i].hidden);
      assert.ok(d < 1e-4, `input ${i} gets its own rows' hidden states (max difference ${d})`);
    });
    assert.equal(seen.length, 1);
    assert.equal(seen[0][0], draw);
    assert.throws(
      () =>
        executor.stepChoosing([{ seq: seqs[0], tokens: [1, 2], allLogits: true }], [{ by: "draw", draw }]),
      /a device draw chooses one token/,
    );
  } finally {
    delete backend.sampleRows;
  }
});

test("a step that throws fails the generations in it, frees their blocks, and the scheduler goes on", async () => {
  const model = await loadModel(draftDir, { device: "cpu" });
  const executor = model.executor;
  const scheduler = new Scheduler(executor, model.tokenizer);
  const real = executor.stepChoosing;
  executor.stepChoosing = () => {
    executor.stepChoosing = real;
    throw new Error("device lost");
  };
  const [failing] = scheduler.submit([1, 2, 3], { maxTokens: 4 });
  await assert.rejects(drain(failing), /device lost/);
  assert.equal(scheduler.stats().kvBlocksUsed, 0);
  const [next] = scheduler.submit([1, 2, 3], { maxTokens: 4, ignoreEos: true });
  assert.equal((await drain(next)).completionTokens, 4);
});
