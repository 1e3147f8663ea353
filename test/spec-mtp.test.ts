/**
 * MTP speculation on a small random MTP model (fast enough for long prompts and many steps): the
 * greedy tokens equal plain decoding's, and the MTP modules' cache stays exact through prefill
 * chunks and rollbacks, so every depth-1 proposal equals the teacher-forced one from score().
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadModel, type LoadedModel } from "../src/index.js";
import { SpeculationLength } from "../src/engine/speculative/adaptive-length.js";
import { SpeculativeDecoder } from "../src/engine/speculative/decoder.js";
import { MtpProposer } from "../src/engine/speculative/mtp.js";
import { Sampler, validateSamplingParams } from "../src/engine/sampling.js";
import { writeRandomCheckpoint } from "../src/model/random-checkpoint.js";
import { fixturesDir, repoRoot } from "./paths.js";
import { seededRandom } from "./random.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tachyon-spec-mtp-"));
writeRandomCheckpoint(
  dir,
  {
    architecture: "Qwen3ForCausalLM",
    vocabSize: 512,
    hiddenSize: 32,
    intermediateSize: 64,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 16,
    numMtpModules: 2,
    tieWordEmbeddings: true,
    maxPositions: 1024,
  },
  { dtype: "F32", seed: 5, tokenizerDir: path.join(fixturesDir, "tokenizers", "bytelevel") },
);
const model = await loadModel(dir, { device: "cpu" });
const V = model.config.vocabSize;
const random = seededRandom(17);
const randomTokens = (n: number) => Array.from({ length: n }, () => Math.floor(random() * V));
// Repeating a phrase gives the greedy continuation something to copy, so proposals get accepted.
const phrase = randomTokens(12);
const prompts = [
  randomTokens(5),
  [...phrase, ...phrase, ...phrase],
  randomTokens(1),
  [...randomTokens(300), ...phrase, ...phrase], // two prefill chunks
  randomTokens(520), // three
];

function argmaxRow(logits: Float32Array, row: number, vocab: number): number {
  let best = 0;
  for (let v = 1; v < vocab; v++) if (logits[row * vocab + v] > logits[row * vocab + best]) best = v;
  return best;
}

test("MTP speculation gives the plain greedy tokens, prompts across prefill chunks included", async () => {
  for (const [i, prompt] of prompts.entries()) {
    const opts = { temperature: 0, maxTokens: 40, ignoreEos: true };
    const plain = await model.complete(prompt, opts);
    for (const adaptive of [true, false]) {
      const spec = await model.complete(prompt, { ...opts, speculation: { method: "mtp", adaptive } });
      assert.deepEqual(spec.tokens, plain.tokens, `prompt ${i}, adaptive ${adaptive}`);
    }
  }
});

/**
 * Decodes greedily with MTP proposals and checks each depth-1 proposal against score()'s
 * teacher-forced depth-1 argmax. Returns the decoder's counts.
 */
function checkProposals(m: LoadedModel, prompt: readonly number[], newTokens: number) {
  const executor = m.executor;
  const seq = executor.newSequence();
  const sampler = new Sampler(validateSamplingParams({ temperature: 0 }), m.config.vocabSize);
  const mtp = new MtpProposer(executor, seq);
  const proposed = new Map<number, number>(); // sequence length → depth-1 proposal
  const proposer = {
    maxTokens: mtp.maxTokens,
    observe: mtp.observe.bind(mtp),
    propose(tokens: readonly number[], k: number) {
      const p = mtp.propose(tokens, k);
      if (p.tokens.length > 0) proposed.set(tokens.length, p.tokens[0]);
      return p;
    },
  };
  const decoder = new SpeculativeDecoder(executor, seq, sampler, "argmax", prompt, {
    proposer,
    length: new SpeculationLength(2, false),
  });
  const end = prompt.length + newTokens;
  try {
    for (let chunk = 256; chunk < prompt.length; chunk += 256) decoder.fill(chunk);
    while (decoder.tokens.length < end) decoder.step(end - decoder.tokens.length);
  } finally {
    seq.free();
  }
  // At length L the pending token is L − 1; depth 1 at position L − 2 reads it.
  const { mtpLogits } = executor.score(decoder.tokens, 1);
  assert.ok(proposed.size > 5);
  for (const [L, token] of proposed) {
    assert.equal(token, argmaxRow(mtpLogits[0], L - 2, m.config.vocabSize), `length ${L}`);
  }
  return decoder.counter;
}

test("every depth-1 proposal equals the teacher-forced one: the MTP cache is exact after rollbacks", () => {
  for (const prompt of prompts) checkProposals(model, prompt, 30);
});

test("the same on the embedded model, whose proposals are mostly accepted", async () => {
  const tiny = await loadModel(path.join(repoRoot, "models", "tachyon-code-tiny"), { device: "cpu" });
  const prompt = tiny.tokenizer.encode("import numpy as np\n\n\ndef mean(values):\n    ");
  const counts = checkProposals(tiny, prompt, 40);
  assert.ok(counts.accepted > counts.steps / 2, "most steps accept a proposal");
  assert.ok(counts.accepted < counts.proposed, "and some are rejected");
});
