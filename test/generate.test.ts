/** The generation loop on a real (fixture) model: seeds, stops, limits, logprobs, streaming, abort. */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { loadModel, type GeneratedToken, type GenerationResult, type GenerateOptions } from "../src/index.js";
import { fixturesDir } from "./paths.js";

const model = await loadModel(path.join(fixturesDir, "models", "qwen3"), { device: "cpu" });
const prompt = "def add(a, b):\n    return";

async function collect(
  p: string | number[],
  options: GenerateOptions,
): Promise<{ chunks: GeneratedToken[]; result: GenerationResult }> {
  const it = model.generate(p, options);
  const chunks: GeneratedToken[] = [];
  for (;;) {
    const r = await it.next();
    if (r.done) return { chunks, result: r.value };
    chunks.push(r.value);
  }
}

test("streamed chunks add up to the result text", async () => {
  const { chunks, result } = await collect(prompt, {
    maxTokens: 24,
    temperature: 0.9,
    seed: 3,
    ignoreEos: true,
  });
  assert.equal(chunks.map((c) => c.text).join(""), result.text);
  assert.equal(result.finishReason, "length");
  assert.equal(result.completionTokens, 24);
  assert.equal(result.text, model.tokenizer.decode(result.tokens, true));
});

test("a seed reproduces sampled output; another seed changes it", async () => {
  const opts = { maxTokens: 24, temperature: 1.0, ignoreEos: true };
  const a = await model.complete(prompt, { ...opts, seed: 42 });
  const b = await model.complete(prompt, { ...opts, seed: 42 });
  const c = await model.complete(prompt, { ...opts, seed: 43 });
  assert.deepEqual(a.tokens, b.tokens);
  assert.notDeepEqual(a.tokens, c.tokens);
});

test("temperature 0 equals the argmax of the model's logits at every step", async () => {
  const ids = model.tokenizer.encode(prompt);
  const r = await model.complete(ids, { maxTokens: 8, temperature: 0, ignoreEos: true });
  const all = [...ids, ...r.tokens];
  const logits = model.logits(all.slice(0, -1));
  const V = model.config.vocabSize;
  r.tokens.forEach((tok, i) => {
    const row = logits.subarray((ids.length - 1 + i) * V, (ids.length + i) * V);
    let best = 0;
    for (let v = 1; v < V; v++) if (row[v] > row[best]) best = v;
    assert.equal(tok, best, `step ${i}`);
  });
});

test("logprobs are the log-softmax of the model's logits, with sorted alternatives", async () => {
  const ids = model.tokenizer.encode(prompt);
  const { chunks } = await collect(ids, {
    maxTokens: 6,
    temperature: 0.8,
    seed: 5,
    logprobs: 3,
    ignoreEos: true,
  });
  const tokens = chunks.filter((c) => c.token !== null).map((c) => c.token as number);
  const logits = model.logits([...ids, ...tokens].slice(0, -1));
  const V = model.config.vocabSize;
  chunks.forEach((c, i) => {
    if (c.token === null) return;
    const row = logits.subarray((ids.length - 1 + i) * V, (ids.length + i) * V);
    const max = Math.max(...row);
    const lse = max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
    assert.ok(Math.abs(c.logprob! - (row[c.token] - lse)) < 1e-5, `step ${i}`);
    assert.equal(c.topLogprobs!.length, 3);
    const lp = c.topLogprobs!.map((a) => a.logprob);
    assert.deepEqual(
      lp,
      [...lp].sort((x, y) => y - x),
    );
    assert.ok(Math.abs(lp[0] - (max - lse)) < 1e-5);
  });
});

test("a stop string ends generation before it; a stop token id ends it at that token", async () => {
  const base = await model.complete(prompt, { maxTokens: 24, temperature: 0, ignoreEos: true });
  const cut = Math.floor(base.text.length / 2);
  const stop = base.text.slice(cut, cut + 3);
  const first = base.text.indexOf(stop);
  const stopped = await model.complete(prompt, {
    maxTokens: 24,
    temperature: 0,
    ignoreEos: true,
    stop: [stop],
  });
  assert.equal(stopped.finishReason, "stop");
  assert.equal(stopped.text, base.text.slice(0, first));

  const byId = await model.complete(prompt, {
    maxTokens: 24,
    temperature: 0,
    stopTokenIds: [base.tokens[4]],
  });
  const at = base.tokens.indexOf(base.tokens[4]);
  assert.equal(byId.finishReason, "stop");
  assert.deepEqual(byId.tokens, base.tokens.slice(0, at + 1));
});

test("an AbortSignal ends the stream with finish reason abort, and the KV blocks are returned", async () => {
  const free = model.executor.allocator.freeBlocks;
  const controller = new AbortController();
  const it = model.generate(prompt, { maxTokens: 100, ignoreEos: true, signal: controller.signal });
  await it.next();
  await it.next();
  controller.abort();
  let r = await it.next();
  while (!r.done) r = await it.next();
  assert.equal(r.value.finishReason, "abort");
  assert.ok(r.value.completionTokens < 100);
  assert.equal(model.executor.allocator.freeBlocks, free);
});

test("bad options are rejected with a message naming the field", async () => {
  await assert.rejects(model.complete(prompt, { topP: 1.5 }), /top_p/);
  await assert.rejects(model.complete(prompt, { maxTokens: 0 }), /max_tokens/);
  await assert.rejects(model.complete([], {}), /prompt is empty/);
});
