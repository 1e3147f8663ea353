/**
 * Speculative decoding is lossless under greedy decoding: for every proposer, on the embedded
 * model and on the architecture fixtures, it produces exactly the tokens plain decoding produces,
 * whatever the proposals (good, bad, cut short by stops or the token limit).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { loadModel, type GenerateOptions, type LoadedModel } from "../src/index.js";
import type { SpeculationOptions } from "../src/engine/generate.js";
import { fixturesDir, repoRoot } from "./paths.js";

const tiny = await loadModel(path.join(repoRoot, "models", "tachyon-code-tiny"), { device: "cpu" });
const draft = await loadModel(path.join(repoRoot, "models", "tachyon-code-draft"), { device: "cpu" });
const heldout = tiny.tokenizer.encode(
  fs.readFileSync(path.join(fixturesDir, "embedded", "heldout-sample.txt"), "utf8"),
  false,
);
// Prompts of varied length from held-out code, down to one token (spec-mtp.test.ts covers prompts
// longer than a prefill chunk, on a faster model).
const tinyPrompts = [heldout.slice(0, 40), heldout.slice(100, 112), heldout.slice(900, 901)];

async function expectSameTokens(
  model: LoadedModel,
  prompts: readonly number[][],
  speculation: SpeculationOptions,
  options: GenerateOptions = {},
): Promise<number> {
  let accepted = 0;
  for (const [i, prompt] of prompts.entries()) {
    const opts = { temperature: 0, maxTokens: 20, ignoreEos: true, ...options };
    const plain = await model.complete(prompt, opts);
    const spec = await model.complete(prompt, { ...opts, speculation });
    assert.deepEqual(spec.tokens, plain.tokens, `prompt ${i}`);
    assert.equal(spec.text, plain.text, `prompt ${i}`);
    assert.equal(spec.finishReason, plain.finishReason, `prompt ${i}`);
    accepted += spec.speculation!.acceptedTokens;
  }
  return accepted;
}

test("embedded model: n-gram speculation gives the plain greedy tokens", async () => {
  const accepted = await expectSameTokens(tiny, tinyPrompts, { method: "ngram" });
  assert.ok(accepted > 0, "some proposals must be accepted for the test to mean anything");
});

test("embedded model: MTP speculation gives the plain greedy tokens", async () => {
  const accepted = await expectSameTokens(tiny, tinyPrompts, { method: "mtp" });
  assert.ok(accepted > 0);
});

test("embedded model: draft-model speculation gives the plain greedy tokens", async () => {
  const accepted = await expectSameTokens(tiny, tinyPrompts, { method: "draft", draft, maxTokens: 5 });
  assert.ok(accepted > 0);
});

test("greedy with a repetition penalty, stop strings and logprobs (tokens chosen on the host)", async () => {
  const prompts = tinyPrompts.slice(0, 1);
  await expectSameTokens(tiny, prompts, { method: "ngram" }, { repetitionPenalty: 1.3 });
  await expectSameTokens(tiny, prompts, { method: "mtp" }, { stop: ["\n\n"], logprobs: 2 });
});

test("a stop token inside an accepted run ends generation there", async () => {
  // Greedy loops repeat; make the first repeated token a stop token.
  const prompt = tinyPrompts[0];
  const plain = await tiny.complete(prompt, { temperature: 0, maxTokens: 24, ignoreEos: true });
  const stopTokenIds = [plain.tokens[14]];
  const opts = { temperature: 0, maxTokens: 24, ignoreEos: true, stopTokenIds };
  const expected = await tiny.complete(prompt, opts);
  for (const method of ["ngram", "mtp"] as const) {
    const r = await tiny.complete(prompt, { ...opts, speculation: { method } });
    assert.deepEqual(r.tokens, expected.tokens);
    assert.equal(r.finishReason, "stop");
  }
});

test("architecture fixtures: n-gram and draft-model speculation give the plain greedy tokens", async () => {
  const fixtureDraft = await loadModel(path.join(fixturesDir, "models", "llama"), { device: "cpu" });
  for (const name of ["llama", "llama31", "llama_tied", "mistral", "qwen2", "qwen3"]) {
    const model = await loadModel(path.join(fixturesDir, "models", name), { device: "cpu" });
    const ids = model.tokenizer.encode("def add(a, b):\n    return a + b\n\nclass Point:\n    x: int\n");
    const prompts = [ids, ids.slice(0, 3), [...ids, ...ids]];
    await expectSameTokens(model, prompts, { method: "ngram", maxTokens: 6 }, { maxTokens: 60 });
    if (name !== "mistral") {
      // A different model with the same tokenizer: mostly rejected proposals.
      await expectSameTokens(model, prompts, { method: "draft", draft: fixtureDraft }, { maxTokens: 30 });
    }
  }
});

test("speculation near the context limit stays within it", async () => {
  const dir = path.join(fixturesDir, "models", "qwen3");
  const model = await loadModel(dir, { device: "cpu", maxContext: 48 });
  const small = await loadModel(path.join(fixturesDir, "models", "llama"), { device: "cpu", maxContext: 40 });
  const prompt = model.tokenizer.encode("x = 1\nx = 1\nx = 1\nx = 1\n");
  for (const speculation of [{ method: "ngram" }, { method: "draft", draft: small }] as const) {
    await expectSameTokens(model, [prompt], { ...speculation, maxTokens: 8 }, { maxTokens: undefined });
  }
});

test("a draft model with another tokenizer is refused with a clear error", async () => {
  const other = await loadModel(path.join(fixturesDir, "models", "mistral"), { device: "cpu" });
  await assert.rejects(
    tiny.complete("import os", { maxTokens: 4, speculation: { method: "draft", draft: other } }),
    /tokenizer differs/,
  );
  const fixture = await loadModel(path.join(fixturesDir, "models", "qwen3"), { device: "cpu" });
  await assert.rejects(
    fixture.complete("import os", { maxTokens: 4, speculation: { method: "mtp" } }),
    /no MTP modules/,
  );
  await assert.rejects(
    tiny.complete("import os", { maxTokens: 4, speculation: { method: "ngram", maxTokens: 16 } }),
    /speculation length/,
  );
});
