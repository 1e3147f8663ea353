/**
 * Bad model folders give one clear error naming the file or tensor and what is wrong, from the
 * library and from the CLI (one line, exit code 2, no stack trace).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadModel, TachyonError } from "../src/index.js";
import { writeRandomCheckpoint, type ModelShape } from "../src/model/random-checkpoint.js";
import { fixturesDir, repoRoot } from "./paths.js";

const shape: ModelShape = {
  architecture: "LlamaForCausalLM",
  vocabSize: 512,
  hiddenSize: 32,
  intermediateSize: 64,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
};

function freshModel(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tachyon-bad-"));
  writeRandomCheckpoint(dir, shape, { tokenizerDir: path.join(fixturesDir, "tokenizers", "bytelevel") });
  return dir;
}

function editConfig(dir: string, edit: (c: Record<string, unknown>) => void): void {
  const file = path.join(dir, "config.json");
  const c = JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, unknown>;
  edit(c);
  fs.writeFileSync(file, JSON.stringify(c));
}

async function loadError(dir: string): Promise<TachyonError> {
  try {
    await loadModel(dir, { device: "cpu" });
  } catch (e) {
    assert.ok(e instanceof TachyonError, `expected a TachyonError, got ${(e as Error).stack}`);
    return e;
  }
  assert.fail("the load succeeded");
}

test("a valid random model loads and generates (the baseline for the cases below)", async () => {
  const model = await loadModel(freshModel(), { device: "cpu" });
  const r = await model.complete([1, 2, 3], { maxTokens: 4, temperature: 0, ignoreEos: true });
  assert.equal(r.tokens.length, 4);
});

test("unsupported architecture names it and lists what is supported", async () => {
  const dir = freshModel();
  editConfig(dir, (c) => (c.architectures = ["GPT2LMHeadModel"]));
  const e = await loadError(dir);
  assert.match(e.message, /GPT2LMHeadModel is not supported.*LlamaForCausalLM/);
});

test("a tensor whose shape disagrees with config.json is named", async () => {
  const dir = freshModel();
  editConfig(dir, (c) => (c.intermediate_size = 48));
  const e = await loadError(dir);
  assert.match(e.message, /mlp\.gate_proj\.weight has shape \[64, 32\] but config\.json implies \[48, 32\]/);
});

test("a missing tokenizer says which file is needed", async () => {
  const dir = freshModel();
  fs.rmSync(path.join(dir, "tokenizer.json"));
  assert.match((await loadError(dir)).message, /no tokenizer\.json/);
});

test("a truncated checkpoint is reported as truncated, naming the file", async () => {
  const dir = freshModel();
  const file = path.join(dir, "model.safetensors");
  fs.truncateSync(file, fs.statSync(file).size - 100);
  assert.match((await loadError(dir)).message, /model\.safetensors.*truncated/);
});

test("a missing tensor is named", async () => {
  const dir = freshModel();
  editConfig(dir, (c) => (c.num_hidden_layers = 3));
  assert.match((await loadError(dir)).message, /model\.layers\.2\.\S+ is missing/);
});

test("the CLI prints one line and exits 2 on bad input", () => {
  const dir = freshModel();
  editConfig(dir, (c) => (c.architectures = ["GPT2LMHeadModel"]));
  const cli = path.join(repoRoot, "dist", "src", "cli", "main.js");
  const r = spawnSync(process.execPath, [cli, "run", "--model", dir, "--prompt", "x"], { encoding: "utf8" });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /^tachyon: .*GPT2LMHeadModel is not supported/);
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  const flag = spawnSync(process.execPath, [cli, "run", "--temperature", "hot"], { encoding: "utf8" });
  assert.equal(flag.status, 2);
  assert.match(flag.stderr, /--temperature needs a number/);
});
