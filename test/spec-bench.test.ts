/** The bench's speculation mode: oracle proposals are all accepted, L + 1 tokens per step. */
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { loadModel } from "../src/index.js";
import { benchSpeculation } from "../src/cli/bench-spec.js";
import { fixturesDir } from "./paths.js";

test("oracle speculation yields L + 1 tokens per step and the plain greedy tokens", async () => {
  const model = await loadModel(path.join(fixturesDir, "models", "llama"), { device: "cpu" });
  const prompt = model.tokenizer.encode("import os\nimport sys\n");
  const genTokens = 1 + 4 * 12; // whole steps for L = 1 and L = 3
  const r = benchSpeculation(model.executor, prompt, genTokens, [1, 3]);
  assert.equal(r.method, "oracle");
  assert.deepEqual(r.accepted_length, [1, 3]);
  assert.deepEqual(r.tokens_per_step, [2, 4]);
  assert.deepEqual(r.greedy_equal, [true, true]);
  for (const x of [...r.decode_tok_s, ...r.verify_step_relative, ...r.speedup]) assert.ok(x > 0);
  assert.ok(r.one_token_step_ms > 0 && r.plain_decode_tok_s > 0);
});
