/** `tachyon bench` on the CPU backend: verify steps after a chosen context, recorded in the JSON. */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { benchCommand } from "../src/cli/bench.js";

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
