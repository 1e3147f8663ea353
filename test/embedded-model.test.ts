/**
 * The shipped default model (models/tachyon-code-tiny) against transformers' own numbers:
 * logits and greedy tokens, the MTP modules' logits, and held-out perplexity from the model card.
 * A broken loader, tokenizer, MTP implementation or checkpoint fails here.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { loadModel } from "../src/index.js";
import { perplexity } from "../src/engine/evaluate.js";
import { SafetensorsFile } from "../src/model/safetensors.js";
import { fixturesDir, repoRoot } from "./paths.js";

interface Reference {
  perplexity: { heldout_sample: number; tokens_sample: number };
  prompts: { text: string; ids: number[] }[];
  greedy: number[][];
}

const tinyDir = path.join(repoRoot, "models", "tachyon-code-tiny");
const draftDir = path.join(repoRoot, "models", "tachyon-code-draft");
const refDir = path.join(fixturesDir, "embedded");
const ref = JSON.parse(fs.readFileSync(path.join(refDir, "reference.json"), "utf8")) as Reference;
const model = await loadModel(tinyDir, { device: "cpu" });

function maxRowError(got: Float32Array, expected: Float32Array, vocab: number): number {
  assert.equal(got.length, expected.length);
  let worst = 0;
  for (let r = 0; r < got.length / vocab; r++) {
    let num = 0,
      den = 0;
    for (let v = r * vocab; v < (r + 1) * vocab; v++) {
      num += (got[v] - expected[v]) ** 2;
      den += expected[v] ** 2;
    }
    worst = Math.max(worst, Math.sqrt(num / den));
  }
  return worst;
}

test("logits and MTP logits match transformers (fp32, rel. error < 1e-4 at every position)", () => {
  assert.equal(model.config.numMtpModules, 2);
  const file = SafetensorsFile.open(path.join(refDir, "reference.safetensors"));
  try {
    ref.prompts.forEach((p, i) => {
      assert.deepEqual(model.tokenizer.encode(p.text, false), p.ids);
      const { logits, mtpLogits } = model.executor.score(p.ids, 2);
      const V = model.config.vocabSize;
      const err = maxRowError(logits, file.readFloat32(`logits.${i}`), V);
      assert.ok(err < 1e-4, `prompt ${i} main logits: ${err}`);
      for (let k = 1; k <= 2; k++) {
        const e = maxRowError(mtpLogits[k - 1], file.readFloat32(`mtp_logits.${k}.${i}`), V);
        assert.ok(e < 1e-4, `prompt ${i} MTP depth ${k}: ${e}`);
      }
    });
  } finally {
    file.close();
  }
});

test("32 greedy tokens identical to transformers", async () => {
  for (let i = 0; i < ref.prompts.length; i++) {
    const r = await model.complete(ref.prompts[i].ids, { temperature: 0, maxTokens: 32, ignoreEos: true });
    assert.deepEqual(r.tokens, ref.greedy[i], `prompt ${i}`);
  }
});

test("held-out perplexity equals the model card's figure", () => {
  const text = fs.readFileSync(path.join(refDir, "heldout-sample.txt"), "utf8");
  const ids = model.tokenizer.encode(text, false);
  assert.equal(ids.length, ref.perplexity.tokens_sample);
  // Scored as one sequence, as the reference was.
  const { perplexity: ppl } = perplexity(model, ids, ids.length);
  assert.ok(
    Math.abs(ppl / ref.perplexity.heldout_sample - 1) < 1e-3,
    `${ppl} vs ${ref.perplexity.heldout_sample}`,
  );
  const card = fs.readFileSync(path.join(tinyDir, "README.md"), "utf8");
  assert.ok(
    card.includes(ref.perplexity.heldout_sample.toFixed(3)),
    "the card states the figure the test checks",
  );
});

test("the draft model shares the tokenizer and generates", async () => {
  const draft = await loadModel(draftDir, { device: "cpu" });
  assert.equal(draft.config.vocabSize, model.config.vocabSize);
  const text = "import os\nprint(os.getcwd())\n";
  assert.deepEqual(draft.tokenizer.encode(text), model.tokenizer.encode(text));
  const r = await draft.complete("def main():\n", { maxTokens: 16, temperature: 0, ignoreEos: true });
  assert.equal(r.completionTokens, 16);
});
