/**
 * Published formats load to the engine layout: the same int4 weights packed as tachyon, GPTQ v1,
 * GPTQ v2, GPTQ with desc_act and AWQ (test/fixtures/quantized, made by
 * scripts/make-quantized-fixtures.ts) give identical logits; fp8 in the DeepSeek-V3 layout, with
 * 128×128 or other block sizes, loads to its dequantized values.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { toFloat32 } from "../src/model/dtype.js";
import { dequantize } from "../src/quant/dequantize.js";
import { quantizeFp8 } from "../src/quant/fp8.js";
import { fp8Tensors } from "../src/quant/formats/fp8-block.js";
import {
  copyModel,
  editConfig,
  editTensors,
  folderLogits,
  loadedQuantized,
  relativeError,
} from "./quant-helpers.js";
import { fixturesDir, repoRoot } from "./paths.js";

const quantized = path.join(fixturesDir, "quantized");
const source = path.join(fixturesDir, "models", "qwen3");
const tokens = [1, 40, 7, 300, 12, 99, 5, 250, 61, 8];

test("GPTQ v1, GPTQ v2, GPTQ desc_act and AWQ packings load to exactly the tachyon-format weights", () => {
  const reference = folderLogits(path.join(quantized, "tachyon-int4"), tokens);
  assert.ok(relativeError(reference, folderLogits(source, tokens)) < 0.5, "int4 stays near the 16-bit model");
  const weights = loadedQuantized(path.join(quantized, "tachyon-int4"));
  assert.equal(weights.size, 14, "all 7 linears of both layers are quantized; the head is not");
  for (const format of ["gptq", "gptq-v2", "gptq-desc-act", "awq"]) {
    const dir = path.join(quantized, format);
    assert.deepEqual(folderLogits(dir, tokens), reference, format);
    for (const [name, w] of loadedQuantized(dir)) {
      const t = weights.get(name)!;
      assert.deepEqual(
        [w.scheme, w.groupSize, w.codes, w.scales, w.offsets],
        [t.scheme, t.groupSize, t.codes, t.scales, t.offsets],
        `${format} ${name}`,
      );
    }
  }
});

test("the v1 zero-point convention matters: reading a v1 file as v2 changes the weights", () => {
  const dir = copyModel(path.join(quantized, "gptq"));
  editConfig(dir, (c) => ((c.quantization_config as Record<string, unknown>).checkpoint_format = "gptq_v2"));
  assert.notDeepEqual(folderLogits(dir, tokens), folderLogits(path.join(quantized, "gptq"), tokens));
});

test("tachyon info shows a published checkpoint's quantization", () => {
  const r = spawnSync(
    process.execPath,
    [path.join(repoRoot, "dist/src/cli/main.js"), "info", "--model", path.join(quantized, "gptq")],
    {
      encoding: "utf8",
    },
  );
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /quantization\s+int4, groups of 32 \(gptq\); 14 of 15 linear weights/);
});

for (const block of [128, 32]) {
  test(`fp8 in the DeepSeek-V3 layout with ${block}×${block} blocks loads to its dequantized values`, () => {
    const dir = copyModel(source);
    const expected = new Map<string, Float32Array>();
    editTensors(dir, (tensors) => {
      for (const [name, t] of [...tensors]) {
        if (!/_proj\.weight$/.test(name)) continue;
        const w = quantizeFp8(toFloat32(t.data as Uint8Array, t.dtype), t.shape[0], t.shape[1], block, block);
        expected.set(name, dequantize(w));
        tensors.delete(name);
        for (const [n, s] of Object.entries(fp8Tensors(name.replace(/\.weight$/, ""), w))) tensors.set(n, s);
      }
    });
    editConfig(dir, (c) => {
      c.quantization_config = {
        quant_method: "fp8",
        fmt: "e4m3",
        activation_scheme: "dynamic",
        weight_block_size: [block, block],
      };
    });
    const loaded = loadedQuantized(dir);
    assert.equal(loaded.size, expected.size);
    for (const [name, values] of expected) assert.deepEqual(dequantize(loaded.get(name)!), values, name);
    assert.ok(relativeError(folderLogits(dir, tokens), folderLogits(source, tokens)) < 0.3);
  });
}
