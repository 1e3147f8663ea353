/**
 * The CPU backend against Hugging Face transformers: logits at every position and 32 greedy
 * tokens, for each architecture fixture made by scripts/fixtures/make_fixtures.py.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { loadModel } from "../src/index.js";
import { SafetensorsFile } from "../src/model/safetensors.js";
import { fixturesDir } from "./paths.js";

interface Reference {
  architecture: string;
  prompts: { text: string; ids: number[] }[];
  greedy: number[][];
}

const modelsDir = path.join(fixturesDir, "models");
const names = fs.readdirSync(modelsDir).sort();

test("fixtures cover every architecture and variant", () => {
  for (const n of ["llama", "llama31", "llama_tied", "mistral", "qwen2", "qwen3"])
    assert.ok(names.includes(n), n);
});

/** ‖a − b‖ / ‖b‖ over one row. */
function relativeError(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}

for (const name of names) {
  const dir = path.join(modelsDir, name);
  const ref = JSON.parse(fs.readFileSync(path.join(dir, "reference.json"), "utf8")) as Reference;

  test(`${name}: logits match transformers at every position (fp32, rel. error < 1e-4)`, async () => {
    const model = await loadModel(dir, { device: "cpu" });
    assert.equal(model.config.architecture, ref.architecture);
    const logitsFile = SafetensorsFile.open(path.join(dir, "reference.safetensors"));
    try {
      ref.prompts.forEach((prompt, i) => {
        assert.deepEqual(model.tokenizer.encode(prompt.text), prompt.ids, "tokenizer ids");
        const expected = logitsFile.readFloat32(`logits.${i}`);
        const got = model.logits(prompt.ids);
        const V = model.config.vocabSize;
        assert.equal(got.length, expected.length);
        for (let pos = 0; pos < prompt.ids.length; pos++) {
          const err = relativeError(
            got.subarray(pos * V, (pos + 1) * V),
            expected.subarray(pos * V, (pos + 1) * V),
          );
          assert.ok(err < 1e-4, `prompt ${i} position ${pos}: relative error ${err.toExponential(2)}`);
        }
      });
    } finally {
      logitsFile.close();
    }
  });

  test(`${name}: 32 greedy tokens identical to transformers`, async () => {
    const model = await loadModel(dir, { device: "cpu" });
    for (let i = 0; i < ref.prompts.length; i++) {
      const r = await model.complete(ref.prompts[i].ids, { temperature: 0, maxTokens: 32, ignoreEos: true });
      assert.deepEqual(r.tokens, ref.greedy[i], `prompt ${i}`);
    }
  });
}
