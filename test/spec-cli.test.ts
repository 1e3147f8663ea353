/**
 * `tachyon run` with speculation: same tokens as without, statistics in the JSON and the stats line;
 * the flags that do not fit refused, by `run` and by `serve --draft-model`.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fixturesDir, repoRoot } from "./paths.js";

const cli = path.join(repoRoot, "dist", "src", "cli", "main.js");
const modelDir = path.join(fixturesDir, "models", "qwen3");
const draftDir = path.join(fixturesDir, "models", "llama");

function tachyon(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const base = [
    "run",
    "--model",
    modelDir,
    "--device",
    "cpu",
    "--prompt",
    "x = 1\nx = 1\n",
    "--temperature",
    "0",
  ];
  return spawnSync(process.execPath, [cli, ...base, ...args], { encoding: "utf8" });
}

interface RunJson {
  tokens: { id: number }[];
  speculation: {
    method: string;
    steps: number;
    acceptance_rate: number;
    mean_accepted_length: number;
  } | null;
}

test("run --spec reports speculation statistics and generates the same tokens", () => {
  const plain = tachyon(["--max-tokens", "24", "--json"]);
  assert.equal(plain.status, 0, plain.stderr);
  const expected = JSON.parse(plain.stdout) as RunJson;
  assert.equal(expected.speculation, null);
  for (const args of [
    ["--spec", "ngram", "--spec-k", "3"],
    ["--draft-model", draftDir, "--spec-fixed"],
  ]) {
    const r = tachyon(["--max-tokens", "24", "--json", ...args]);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as RunJson;
    assert.deepEqual(out.tokens, expected.tokens);
    assert.equal(out.speculation!.method, args.includes("ngram") ? "ngram" : "draft");
    assert.ok(out.speculation!.steps > 0 && out.speculation!.mean_accepted_length >= 1);
  }
  const line = tachyon(["--max-tokens", "8", "--spec", "ngram"]);
  assert.equal(line.status, 0, line.stderr);
  assert.match(line.stderr, /spec ngram: [\d.]+ tokens\/step, \d+% of \d+ proposed accepted/);
});

test("run refuses speculation flags that do not fit", () => {
  for (const [args, message] of [
    [["--spec", "lookahead"], /--spec must be mtp, draft, ngram or none/],
    [["--spec", "mtp"], /no MTP modules/],
    [["--spec", "draft"], /--spec draft needs --draft-model/],
    [["--spec", "ngram", "--draft-model", draftDir], /--draft-model is for --spec draft/],
    [["--spec", "ngram", "--spec-k", "0"], /--spec-k/],
    [["--draft-model", path.join(fixturesDir, "models", "mistral")], /tokenizer differs/],
  ] as const) {
    const r = tachyon(["--max-tokens", "4", ...args]);
    assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, message);
  }
});

test("serve refuses a draft model whose tokenizer differs from a served model's", () => {
  const mistral = path.join(fixturesDir, "models", "mistral");
  const args = ["serve", "--device", "cpu", "--port", "0", "--model", modelDir, "--draft-model", mistral];
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: "utf8", timeout: 30_000 });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /tokenizer differs/);
});
