/** `tachyon bench` on the CPU backend: verify steps after a chosen context, recorded in the JSON; the bytes a step reads. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { benchCommand, weightBytes } from "../src/cli/bench.js";
import { parseConfig } from "../src/model/config.js";
import { configJson, namedShapes } from "../src/model/random-checkpoint.js";
import { expectedTensors } from "../src/model/weights.js";

const args = [
  "--shape",
  "cpu-20m",
  "--device",
  "cpu",
  "--prompt-tokens",
  "8",
  "--gen-tokens",
  "3",
  "--ttft-tokens",
  "0",
];

test("bench --verify-rows times steps of M rows after --verify-context tokens and records both", async () => {
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "tachyon-bench-")), "r.json");
  assert.equal(
    await benchCommand([...args, "--verify-rows", "1,2", "--verify-context", "40", "--out", out]),
    0,
  );
  const r = JSON.parse(fs.readFileSync(out, "utf8"));
  assert.equal(r.verify_context, 40);
  assert.deepEqual(Object.keys(r.verify_step_ms), ["1", "2"]);
  for (const ms of Object.values(r.verify_step_ms)) assert.ok((ms as number) > 0);
});

test("bench --verify-context must be a whole number of tokens", async () => {
  await assert.rejects(
    benchCommand([...args, "--verify-rows", "2", "--verify-context", "2.5"]),
    /--verify-context 2\.5: /,
  );
});

test("bench counts the bytes a step reads: one embedding row untied, the whole table when it is the head", () => {
  const untied = parseConfig(configJson(namedShapes["llama-3-8b"]));
  const tied = parseConfig(configJson(namedShapes["llama-3.2-1b"]));
  const params = (cfg: typeof untied, head: boolean) =>
    [...expectedTensors(cfg, head).values()].reduce((n, d) => n + d.reduce((a, b) => a * b, 1), 0);
  const table = (cfg: typeof untied) => cfg.vocabSize * cfg.hiddenSize;
  // bf16: every parameter once, except the untied table's rows other than the token's own.
  assert.equal(weightBytes(untied, 2, null), 2 * (params(untied, true) - table(untied) + untied.hiddenSize));
  assert.equal(weightBytes(tied, 2, null), 2 * params(tied, false));
  // Quantized: every matrix but the embedding table, with a 4-byte scale entry per group.
  const matrices = [...expectedTensors(untied, true)]
    .filter(([name, d]) => d.length === 2 && name !== "model.embed_tokens.weight")
    .reduce((n, [, d]) => n + d[0] * d[1], 0);
  const int4 = (group: number) => weightBytes(untied, 2, { scheme: "int4", groupSize: group });
  assert.equal(int4(32) - int4(128), 4 * matrices * (1 / 32 - 1 / 128));
  assert.equal(weightBytes(untied, 2, null) - int4(128), matrices * (2 - 0.5 - 4 / 128));
});
