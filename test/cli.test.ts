/** The `tachyon` command as a user runs it: JSON output with logprobs, info, piped chat. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { loadModel } from "../src/index.js";
import { fixturesDir, repoRoot } from "./paths.js";

const cli = path.join(repoRoot, "dist", "src", "cli", "main.js");
const modelDir = path.join(fixturesDir, "models", "llama");

function tachyon(args: string[], input?: string): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", input });
}

test("run --json reports the greedy tokens, their logprobs and statistics", async () => {
  const r = tachyon(
    ["run", "--model", modelDir, "--prompt", "import os", "--temperature", "0"].concat([
      "--max-tokens",
      "8",
      "--logprobs",
      "2",
      "--json",
    ]),
  );
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as {
    tokens: { id: number; logprob: number; top_logprobs: { id: number; logprob: number }[] }[];
    usage: { completion_tokens: number };
    finish_reason: string;
  };
  const model = await loadModel(modelDir, { device: "cpu" });
  const expected = await model.complete("import os", { temperature: 0, maxTokens: 8 });
  assert.deepEqual(
    out.tokens.map((t) => t.id),
    expected.tokens.slice(0, out.tokens.length),
  );
  assert.equal(out.usage.completion_tokens, expected.completionTokens);
  for (const t of out.tokens) {
    assert.equal(t.top_logprobs.length, 2);
    assert.equal(t.top_logprobs[0].id, t.id, "greedy picks the most likely token");
    assert.ok(t.logprob <= 0);
  }
});

test("run streams text and ends with a statistics line", () => {
  const r = tachyon(["run", "--model", modelDir, "--prompt", "x = 1", "--max-tokens", "5", "--seed", "1"]);
  assert.equal(r.status, 0, r.stderr);
  assert.ok(r.stdout.startsWith("x = 1"));
  assert.match(
    r.stderr,
    /\[prompt \d+ tokens · generated \d+ tokens · first token [\d.]+ ms · [\d.]+ tok\/s/,
  );
});

test("info describes the model without loading it", () => {
  const r = tachyon(["info", "--model", path.join(fixturesDir, "models", "qwen3")]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /architecture\s+Qwen3ForCausalLM/);
  assert.match(r.stdout, /heads \(q \/ kv\) × dim\s+4 \/ 2 × 32/);
  assert.match(r.stdout, /checkpoint dtype\s+BF16/);
});

test("chat answers each piped line in turn", () => {
  const r = tachyon(
    ["run", "--model", modelDir, "--chat", "--max-tokens", "4", "--seed", "2"],
    "hello\nand again\n",
  );
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr.match(/\[prompt/g)?.length, 2, r.stderr);
});
