/**
 * Speculation under continuous batching, on the embedded model: a speculating sequence verifies
 * its proposals among other sequences' rows and produces exactly what it produces alone, however
 * it is batched, budgeted, stopped, preempted or cancelled, and its proposer's state follows it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { loadModel, type GeneratedToken, type GenerateOptions, type GenerationResult } from "../src/index.js";
import { Scheduler, type SchedulerOptions } from "../src/engine/scheduler.js";
import type { SpeculationOptions } from "../src/engine/generate.js";
import { draftDir, tinyDir } from "./server-harness.js";

const tiny = await loadModel(tinyDir, { device: "cpu", kvCacheTokens: 4096 });
const encode = (text: string) => tiny.tokenizer.encode(text);
// Repetitive prompts, so n-gram and MTP proposals get accepted.
const prompts = [
  encode("x = [1, 2, 3]\ny = [1, 2, 3]\nz = [1, 2, 3]\n"),
  encode("def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):\n"),
  encode("for i in range(10):\n    print(i)\nfor j in range(10):\n"),
];
const greedy = { temperature: 0, maxTokens: 16, ignoreEos: true };
const ngram: SpeculationOptions = { method: "ngram" };
const mtp: SpeculationOptions = { method: "mtp" };

/** A stream's chunks and result. */
async function collect(
  stream: AsyncGenerator<GeneratedToken, GenerationResult>,
): Promise<{ chunks: GeneratedToken[]; result: GenerationResult }> {
  const chunks: GeneratedToken[] = [];
  for (;;) {
    const r = await stream.next();
    if (r.done) return { chunks, result: r.value };
    chunks.push(r.value);
  }
}

const resultOf = async (stream: AsyncGenerator<GeneratedToken, GenerationResult>) =>
  (await collect(stream)).result;

/** Each request alone, through the one-sequence loop. */
async function alone(
  requests: { prompt: number[]; options: GenerateOptions }[],
): Promise<GenerationResult[]> {
  const out: GenerationResult[] = [];
  for (const { prompt, options } of requests) out.push(await tiny.complete(prompt, options));
  return out;
}

/** All requests submitted together to one scheduler; their results and the scheduler. */
async function together(
  requests: { prompt: number[]; options: GenerateOptions }[],
  options: SchedulerOptions = {},
): Promise<{ results: GenerationResult[]; scheduler: Scheduler }> {
  const scheduler = new Scheduler(tiny.executor, tiny.tokenizer, options);
  const results = await Promise.all(
    requests.map(({ prompt, options }) => resultOf(scheduler.submit(prompt, options)[0])),
  );
  return { results, scheduler };
}

test("greedy: speculating sequences batched with plain ones give the tokens each gives alone", async () => {
  const requests = prompts.flatMap((prompt) =>
    [undefined, ngram, mtp].map((speculation) => ({ prompt, options: { ...greedy, speculation } })),
  );
  const expected = await alone(requests.filter((r) => !r.options.speculation));
  const { results, scheduler } = await together(requests);
  results.forEach((r, i) => {
    assert.deepEqual(r.tokens, expected[Math.floor(i / 3)].tokens, `request ${i}`);
    assert.equal(r.speculation?.method, requests[i].options.speculation?.method);
  });
  const stats = scheduler.stats();
  assert.ok(stats.acceptedTokens > 0 && stats.acceptedTokens <= stats.proposedTokens);
  const perRequest = results.map((r) => r.speculation?.acceptedTokens ?? 0);
  assert.equal(
    perRequest.reduce((a, b) => a + b, 0),
    stats.acceptedTokens,
  );
  assert.ok(
    results.every((r, i) => !requests[i].options.speculation || r.speculation!.acceptedTokens > 0),
    "every speculating request had proposals accepted",
  );
  assert.equal(stats.kvBlocksUsed, 0);
});

test("MTP with a fixed length: the proposals and verdicts in a batch are those of the one-sequence loop", async () => {
  // MTP proposals read the hidden states of the sequence's own rows in the batched step, and the
  // MTP cache layers of blocks shared by prefix come only from other MTP sequences: any mix-up
  // changes what is proposed, so the counts would differ.
  const fixedMtp = { ...greedy, speculation: { ...mtp, adaptive: false } };
  const requests = prompts.map((prompt) => ({ prompt, options: fixedMtp }));
  const expected = await alone(requests);
  const scheduler = new Scheduler(tiny.executor, tiny.tokenizer);
  // Plain sequences publish the prompts' blocks first (their MTP layers unfilled): not for MTP ones.
  await Promise.all(prompts.map((p) => resultOf(scheduler.submit(p, { ...greedy, maxTokens: 2 })[0])));
  const run = () => Promise.all(requests.map((r) => resultOf(scheduler.submit(r.prompt, r.options)[0])));
  const first = await run();
  const cached = scheduler.stats().cachedTokens;
  // Again: now each prompt comes from the first round's blocks, MTP layers included.
  const second = await run();
  assert.ok(scheduler.stats().cachedTokens > cached, "the second round reused cached prefixes");
  // (A prompt from the cache may leave one token to feed: that step counts, proposing nothing.)
  const verdicts = (r: GenerationResult) => [r.speculation!.proposedTokens, r.speculation!.acceptedTokens];
  for (const [round, results] of [first, second].entries()) {
    results.forEach((r, i) => {
      assert.deepEqual(r.tokens, expected[i].tokens, `round ${round}, request ${i}`);
      assert.deepEqual(verdicts(r), verdicts(expected[i]), `round ${round}, request ${i}`);
    });
  }
});

test("the prefix cache holds only kept tokens: a prompt continuing a speculated output reuses them exactly", async () => {
  const scheduler = new Scheduler(tiny.executor, tiny.tokenizer);
  const prompt = encode("import numpy as np\n\n\ndef mean(values):\n    ");
  const options = { ...greedy, maxTokens: 40, speculation: mtp };
  const [first] = await Promise.all([
    resultOf(scheduler.submit(prompt, options)[0]),
    resultOf(scheduler.submit(prompts[1], options)[0]),
  ]);
  assert.ok(first.speculation!.proposedTokens > first.speculation!.acceptedTokens, "some were rejected");
  // The next turn: the first output and more; its blocks come from what the first one published.
  const next = [...prompt, ...first.tokens, ...encode("\n\ndef median(values):\n")];
  const cached = scheduler.stats().cachedTokens;
  const reused = await resultOf(scheduler.submit(next, { ...greedy, speculation: mtp })[0]);
  assert.ok(scheduler.stats().cachedTokens - cached > prompt.length, "blocks of the output were reused");
  assert.deepEqual(reused.tokens, (await tiny.complete(next, greedy)).tokens);
});

test("a small budget proposes less, never more than it holds, and starves no decode row", async () => {
  const requests = prompts.map((prompt, i) => ({
    prompt,
    options: { ...greedy, speculation: i === 2 ? undefined : { ...ngram, maxTokens: 6 } },
  }));
  const expected = await alone(
    requests.map((r) => ({ ...r, options: { ...r.options, speculation: undefined } })),
  );
  const executor = tiny.executor;
  const real = executor.stepChoosing;
  const stepRows: number[] = [];
  executor.stepChoosing = (inputs, choices) => {
    stepRows.push(inputs.reduce((n, inp) => n + inp.tokens.length, 0));
    return real.call(executor, inputs, choices);
  };
  try {
    const { results, scheduler } = await together(requests, { maxBatchTokens: 5 });
    results.forEach((r, i) => assert.deepEqual(r.tokens, expected[i].tokens, `request ${i}`));
    assert.ok(Math.max(...stepRows) <= 5, "no step exceeds the budget");
    assert.ok(scheduler.stats().acceptedTokens > 0, "the budget left room for some proposals");
  } finally {
    executor.stepChoosing = real;
  }
});

test("max_tokens, stop strings, stop tokens and logprobs cut an accepted run exactly", async () => {
  const prompt = prompts[0];
  const reference = await tiny.complete(prompt, greedy);
  const variants: GenerateOptions[] = [
    ...[1, 2, 5].map((maxTokens) => ({ ...greedy, maxTokens })),
    { ...greedy, stop: [reference.text.slice(10, 14)] },
    { ...greedy, stopTokenIds: [reference.tokens[9]] },
    { ...greedy, maxTokens: 12, logprobs: 2 },
  ];
  const expected = await Promise.all(variants.map((options) => collect(tiny.generate(prompt, options))));
  assert.ok(
    expected[3].result.finishReason === "stop" && expected[3].result.text.length < reference.text.length,
  );
  const scheduler = new Scheduler(tiny.executor, tiny.tokenizer);
  const results = await Promise.all(
    variants.flatMap((options) =>
      [ngram, mtp].map((speculation) => collect(scheduler.submit(prompt, { ...options, speculation })[0])),
    ),
  );
  results.forEach(({ chunks, result }, i) => {
    const want = expected[Math.floor(i / 2)];
    assert.deepEqual(result.tokens, want.result.tokens, `request ${i}`);
    assert.equal(result.finishReason, want.result.finishReason, `request ${i}`);
    assert.equal(result.completionTokens, want.result.completionTokens, `request ${i}`);
    assert.deepEqual(chunks, want.chunks, `request ${i}: the same chunks, text and logprobs`);
  });
});

test("seeded sampling with speculation is reproducible, batched or not, and equals sampling without", async () => {
  const sampled = { temperature: 0.8, topP: 0.95, maxTokens: 16, ignoreEos: true };
  const requests = prompts.slice(0, 2).flatMap((prompt, i) =>
    [undefined, ngram, mtp].map((speculation) => ({
      prompt,
      options: { ...sampled, seed: 40 + i, speculation },
    })),
  );
  const expected = await alone(requests);
  const first = await together(requests);
  const second = await together(requests, { maxBatchTokens: 6 });
  requests.forEach((_, i) => {
    assert.deepEqual(first.results[i].tokens, expected[i].tokens, `request ${i}`);
    assert.deepEqual(second.results[i].tokens, expected[i].tokens, `request ${i}, small budget`);
    assert.deepEqual(expected[i].tokens, expected[i - (i % 3)].tokens, `request ${i} equals its plain twin`);
  });
});

test("n > 1 speculating siblings each get their own proposer", async () => {
  const scheduler = new Scheduler(tiny.executor, tiny.tokenizer);
  const expected = await tiny.complete(prompts[1], greedy);
  for (const speculation of [ngram, mtp]) {
    const results = await Promise.all(
      scheduler.submit(prompts[1], { ...greedy, speculation }, 3).map(resultOf),
    );
    for (const r of results) {
      assert.deepEqual(r.tokens, expected.tokens);
      assert.ok(r.speculation!.acceptedTokens > 0);
    }
  }
  assert.throws(
    () =>
      scheduler.submit(
        prompts[1],
        { speculation: { method: "custom", proposer: { maxTokens: 1, propose: () => ({ tokens: [] }) } } },
        2,
      ),
    /custom proposer serves one sequence/,
  );
});

test("with a tiny KV cache, speculating sequences are preempted and recomputed, and greedy output is unchanged", async () => {
  // 12 blocks of 16 tokens: four sequences of up to ~60 tokens cannot all hold their blocks.
  const small = await loadModel(tinyDir, { device: "cpu", maxContext: 192, kvCacheTokens: 192 });
  const opts = { temperature: 0, maxTokens: 36, ignoreEos: true };
  const all = [...prompts, encode("import os\nimport sys\nimport os\n")];
  const expected: number[][] = [];
  for (const p of all) expected.push((await small.complete(p, opts)).tokens);
  const scheduler = new Scheduler(small.executor, small.tokenizer, { maxBatchTokens: 16 });
  const specs = [ngram, mtp, undefined, ngram];
  const results = await Promise.all(
    all.map((p, i) => resultOf(scheduler.submit(p, { ...opts, speculation: specs[i] })[0])),
  );
  assert.deepEqual(
    results.map((r) => r.tokens),
    expected,
  );
  const stats = scheduler.stats();
  assert.ok(stats.preemptions > 0, "the cache was too small for all four at once");
  assert.ok(stats.acceptedTokens > 0);
  assert.equal(stats.kvBlocksUsed, 0, "every block is back");
  assert.equal(stats.running + stats.waiting, 0);
});

test("draft-model speculation under batching: same tokens, a full draft cache proposes less, blocks back", async () => {
  // Four blocks of 16: not enough for every sequence's draft cache at once.
  const draft = await loadModel(draftDir, { device: "cpu", kvCacheTokens: 64 });
  const speculation: SpeculationOptions = { method: "draft", draft, maxTokens: 3 };
  const requests = prompts.map((prompt) => ({ prompt, options: { ...greedy, speculation } }));
  const expected = await alone(requests.map((r) => ({ ...r, options: greedy })));
  const { results, scheduler } = await together(requests);
  results.forEach((r, i) => assert.deepEqual(r.tokens, expected[i].tokens, `request ${i}`));
  assert.ok(scheduler.stats().acceptedTokens > 0);
  const pool = draft.executor.allocator;
  assert.equal(pool.freeBlocks, pool.numBlocks, "closed proposers gave the draft's blocks back");
});

test("cancelling a speculating stream mid-way ends it with abort and frees its blocks", async () => {
  const scheduler = new Scheduler(tiny.executor, tiny.tokenizer);
  const abort = new AbortController();
  const [stream] = scheduler.submit(prompts[0], {
    ...greedy,
    maxTokens: 200,
    speculation: mtp,
    signal: abort.signal,
  });
  const [other] = scheduler.submit(prompts[1], { ...greedy, speculation: ngram });
  let read = 0;
  let ended: GenerationResult;
  for (;;) {
    const r = await stream.next();
    if (r.done) {
      ended = r.value;
      break;
    }
    if (++read === 5) abort.abort();
  }
  assert.equal(ended.finishReason, "abort");
  assert.ok(ended.completionTokens < 200);
  assert.equal((await resultOf(other)).finishReason, "length");
  await scheduler.idle();
  assert.equal(scheduler.stats().kvBlocksUsed, 0);
});
