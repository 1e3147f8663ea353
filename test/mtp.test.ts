/** Multi-token-prediction modules: loading, shapes and causality on a random MTP model. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadModel } from "../src/index.js";
import { mtpAcceptance } from "../src/engine/evaluate.js";
import { writeRandomCheckpoint } from "../src/model/random-checkpoint.js";
import { fixturesDir } from "./paths.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tachyon-mtp-"));
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
  },
  { dtype: "F32", seed: 3, tokenizerDir: path.join(fixturesDir, "tokenizers", "bytelevel") },
);
const model = await loadModel(dir, { device: "cpu" });
const V = model.config.vocabSize;

test("MTP logits have one row per position that has a token to read", () => {
  const tokens = [5, 17, 99, 3, 250, 8, 41];
  const { logits, mtpLogits } = model.executor.score(tokens, 2);
  assert.equal(logits.length, tokens.length * V);
  assert.equal(mtpLogits.length, 2);
  assert.equal(mtpLogits[0].length, (tokens.length - 1) * V);
  assert.equal(mtpLogits[1].length, (tokens.length - 2) * V);
  assert.ok(mtpLogits.every((l) => l.every(Number.isFinite)));
});

test("depth-k row i reads tokens up to i + k only (causal)", () => {
  const a = [5, 17, 99, 3, 250, 8, 41];
  const b = [...a];
  b[5] = 77; // changes what depth 1 reads at row 4 and depth 2 at row 3
  const sa = model.executor.score(a, 2);
  const sb = model.executor.score(b, 2);
  const same = (x: Float32Array, y: Float32Array, row: number) =>
    x.subarray(row * V, (row + 1) * V).every((v, i) => v === y[row * V + i]);
  for (let i = 0; i < 4; i++) assert.ok(same(sa.mtpLogits[0], sb.mtpLogits[0], i), `depth 1 row ${i}`);
  assert.ok(!same(sa.mtpLogits[0], sb.mtpLogits[0], 4), "depth 1 row 4 reads token 5");
  for (let i = 0; i < 3; i++) assert.ok(same(sa.mtpLogits[1], sb.mtpLogits[1], i), `depth 2 row ${i}`);
  assert.ok(!same(sa.mtpLogits[1], sb.mtpLogits[1], 3), "depth 2 row 3 reads token 5");
});

test("acceptance statistics are consistent", async () => {
  const r = await mtpAcceptance(model, [[1, 2, 3, 4, 5, 6, 7, 8]], 16);
  assert.equal(r.depths, 2);
  assert.equal(r.steps, 16 - 2);
  assert.ok(r.cumulative[1] <= r.cumulative[0]);
  assert.ok(Math.abs(r.meanAcceptedLength - (1 + r.cumulative[0] + r.cumulative[1])) < 1e-12);
});

test("a sequence longer than the backend's step is scored in chunks, with the same logits", () => {
  const tokens = Array.from({ length: 23 }, (_, i) => (i * 37 + 11) % V);
  const whole = model.executor.score(tokens, 2);
  const backend = model.executor.backend as { maxStepRows?: number };
  Object.defineProperty(backend, "maxStepRows", { value: 5, configurable: true });
  try {
    const chunked = model.executor.score(tokens, 2);
    const close = (x: Float32Array, y: Float32Array) =>
      x.every((v, i) => Math.abs(v - y[i]) <= 1e-5 * (1 + Math.abs(y[i])));
    assert.ok(close(chunked.logits, whole.logits), "main logits");
    chunked.mtpLogits.forEach((l, k) => assert.ok(close(l, whole.mtpLogits[k]), `depth ${k + 1} logits`));
  } finally {
    delete backend.maxStepRows;
  }
});
