/**
 * Bad quantized input gives one clear TachyonError (naming the file, tensor and what to do), the
 * CLI prints one line and exits 2, and `tachyon quantize` never leaves anything half-written.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { loadModel, TachyonError } from "../src/index.js";
import { float32ToF16Bits } from "../src/model/dtype.js";
import { quantizeModel } from "../src/quant/quantize-model.js";
import { copyModel, editConfig, editTensors, tempDir } from "./quant-helpers.js";
import { fixturesDir, repoRoot } from "./paths.js";

const cli = path.join(repoRoot, "dist", "src", "cli", "main.js");
const tachyonInt4 = path.join(fixturesDir, "quantized", "tachyon-int4");
const gptq = path.join(fixturesDir, "quantized", "gptq");
const qwen3 = path.join(fixturesDir, "models", "qwen3");
const scales = "model.layers.1.mlp.up_proj.scales";

async function loadError(dir: string): Promise<string> {
  try {
    await loadModel(dir, { device: "cpu" });
  } catch (e) {
    assert.ok(e instanceof TachyonError, `expected a TachyonError, got ${(e as Error).stack}`);
    return e.message;
  }
  assert.fail("the load succeeded");
}

function tachyon(args: string[]) {
  return spawnSync(process.execPath, [cli, ...args], { encoding: "utf8" });
}

/** The CLI's answer to a bad input: exit code 2 and exactly one line on stderr. */
function oneLineError(args: string[]): string {
  const r = tachyon(args);
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  return r.stderr;
}

test("an unknown quant_method or unsupported bits are refused when config.json is read", async () => {
  const dir = copyModel(tachyonInt4);
  editConfig(dir, (c) => (c.quantization_config = { quant_method: "bitsandbytes", load_in_4bit: true }));
  assert.match(
    await loadError(dir),
    /quant_method "bitsandbytes" is not supported; tachyon reads fp8.*tachyon quantize/,
  );
  editConfig(dir, (c) => (c.quantization_config = { quant_method: "gptq", bits: 3, group_size: 32 }));
  assert.match(await loadError(dir), /bits 3 is not supported for gptq/);
  editConfig(dir, (c) => (c.quantization_config = { quant_method: "fp8", weight_block_size: [128] }));
  assert.match(await loadError(dir), /weight_block_size must be \[rows, cols\]/);
});

test("a group size that does not divide a weight's inputs is named, at load and at quantize", async () => {
  const dir = copyModel(tachyonInt4);
  editConfig(dir, (c) => ((c.quantization_config as Record<string, unknown>).group_size = 48));
  assert.match(
    await loadError(dir),
    /group size 48 does not divide the 64 inputs of model\.layers\.0\.self_attn\.q_proj/,
  );
  const out = path.join(tempDir("out"), "q");
  await assert.rejects(
    quantizeModel(qwen3, out, { scheme: "int4", groupSize: 128, method: "rtn" }),
    /group size 128 does not divide the 64 inputs/,
  );
  assert.ok(!fs.existsSync(out));
});

test("a quantized tensor of the wrong shape or dtype names the file, the tensor and what is needed", async () => {
  const dir = copyModel(tachyonInt4);
  editTensors(dir, (t) => t.set(scales, { dtype: "F16", shape: [128, 1], data: new Uint8Array(256) }));
  assert.match(
    await loadError(dir),
    /model\.safetensors: tensor model\.layers\.1\.mlp\.up_proj\.scales is F16 \[128, 1\] but a tachyon int4 weight of this model needs F16 \[128, 2\]/,
  );
  editTensors(dir, (t) => t.set(scales, { dtype: "F32", shape: [128, 2], data: new Uint8Array(1024) }));
  assert.match(
    await loadError(dir),
    /scales is F32 \[128, 2\] but a tachyon int4 weight .* needs F16 \[128, 2\]/,
  );
  editTensors(dir, (t) => t.delete(scales));
  assert.match(
    await loadError(dir),
    /tensor model\.layers\.1\.mlp\.up_proj\.scales is missing, and a tachyon int4 weight needs it/,
  );
});

test("a tensor whose byte size disagrees with its header, or a truncated file, is reported before loading", async () => {
  const dir = copyModel(gptq);
  const file = path.join(dir, "model.safetensors");
  const bytes = fs.readFileSync(file);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString("utf8")) as Record<
    string,
    { shape: number[] }
  >;
  header["model.layers.0.mlp.up_proj.qzeros"].shape = [2, 17]; // one int32 more than its data holds
  const json = Buffer.from(JSON.stringify(header).padEnd(headerLength, " "));
  assert.equal(json.length, headerLength);
  fs.writeFileSync(file, Buffer.concat([bytes.subarray(0, 8), json, bytes.subarray(8 + headerLength)]));
  assert.match(await loadError(dir), /up_proj\.qzeros": size mismatch/);
  fs.writeFileSync(file, bytes.subarray(0, bytes.length - 1000));
  assert.match(await loadError(dir), /model\.safetensors.*truncated/);
});

test("non-finite scales are refused, naming the tensor", async () => {
  const dir = copyModel(tachyonInt4);
  editTensors(dir, (t) => {
    const data = new Uint16Array(128 * 2).fill(float32ToF16Bits(0.01));
    data[7] = float32ToF16Bits(Infinity);
    t.set(scales, { dtype: "F16", shape: [128, 2], data: new Uint8Array(data.buffer) });
  });
  assert.match(
    await loadError(dir),
    /tensor model\.layers\.1\.mlp\.up_proj\.scales holds Infinity at index 7; quantization scales must be finite/,
  );
});

test("a GPTQ desc_act checkpoint whose g_idx mixes groups within a run is refused with what to do", async () => {
  const dir = copyModel(gptq);
  editTensors(dir, (t) => {
    const gIdx = Int32Array.from({ length: 64 }, (_, k) => k % 2);
    t.set("model.layers.0.self_attn.q_proj.g_idx", {
      dtype: "I32",
      shape: [64],
      data: new Uint8Array(gIdx.buffer),
    });
  });
  assert.match(await loadError(dir), /made with desc_act .* use a checkpoint made with desc_act=false/);
});

test("an fp8 checkpoint whose weight lost its scale, or holds NaN codes, is refused", async () => {
  const src = path.join(tempDir("fp8"), "q");
  await quantizeModel(qwen3, src, { scheme: "fp8", method: "rtn" });
  const dir = copyModel(src);
  editTensors(dir, (t) => t.delete("model.layers.0.mlp.gate_proj.weight_scale_inv"));
  assert.match(
    await loadError(dir),
    /gate_proj\.weight is F8_E4M3, but in a fp8 .* must be F32, F16 or BF16/,
  );
  const nan = copyModel(src);
  editTensors(nan, (t) => ((t.get("model.layers.0.mlp.gate_proj.weight")!.data as Uint8Array)[3] = 0x7f));
  assert.match(await loadError(nan), /gate_proj\.weight holds an fp8 NaN at index 3/);
});

test("the CLI prints one line and exits 2 for bad quantize arguments and bad quantized checkpoints", () => {
  const out = path.join(tempDir("cli"), "q");
  assert.match(
    oneLineError(["quantize", "--model", qwen3, "--to", "int3", "--out", out]),
    /--to must be one of fp8, int8, int4, int2/,
  );
  assert.match(
    oneLineError(["quantize", "--model", qwen3, "--to", "int4", "--group-size", "100", "--out", out]),
    /--group-size must be 128, 64, 32/,
  );
  assert.match(
    oneLineError(["quantize", "--model", qwen3, "--to", "int4", "--out", out]),
    /group size 128 does not divide/,
  );
  assert.match(
    oneLineError([
      "quantize",
      "--model",
      qwen3,
      "--to",
      "int4",
      "--group-size",
      "32",
      "--method",
      "gptq",
      "--out",
      out,
    ]),
    /needs --calibration FILE/,
  );
  assert.match(
    oneLineError(["quantize", "--model", qwen3, "--to", "fp8", "--method", "gptq", "--out", out]),
    /gptq is for int4 and int2/,
  );
  assert.match(
    oneLineError([
      "quantize",
      "--model",
      qwen3,
      "--to",
      "int4",
      "--group-size",
      "32",
      "--keep",
      "attn.nothing",
      "--out",
      out,
    ]),
    /--keep attn\.nothing matches no linear module/,
  );
  assert.match(
    oneLineError(["quantize", "--model", tachyonInt4, "--to", "int4", "--out", out]),
    /already quantized/,
  );
  assert.match(
    oneLineError(["quantize", "--model", qwen3, "--to", "int8", "--out", qwen3]),
    /already exists/,
  );
  assert.ok(!fs.existsSync(out));
  const dir = copyModel(tachyonInt4);
  editTensors(dir, (t) => t.delete(scales));
  assert.match(oneLineError(["run", "--model", dir, "--max-tokens", "2"]), /up_proj\.scales is missing/);
});

test("a failure halfway through quantizing leaves neither the output nor a partial folder", async () => {
  const src = copyModel(qwen3);
  editTensors(src, (t) => {
    const w = t.get("model.layers.1.mlp.down_proj.weight")!;
    const data = new Uint16Array((w.data as Uint8Array).slice().buffer);
    data[5] = 0x7fc0; // bf16 NaN
    t.set("model.layers.1.mlp.down_proj.weight", { ...w, data: new Uint8Array(data.buffer) });
  });
  const parent = tempDir("half");
  const out = path.join(parent, "q");
  await assert.rejects(
    quantizeModel(src, out, { scheme: "int4", groupSize: 32, method: "rtn" }),
    /down_proj\.weight holds NaN at index 5/,
  );
  assert.deepEqual(fs.readdirSync(parent), []);
});

test("Ctrl-C during quantize exits 130 and leaves nothing behind", async () => {
  const parent = tempDir("sigint");
  const out = path.join(parent, "q");
  const calibration = path.join(parent, "..", `${path.basename(parent)}-calibration.py`);
  fs.writeFileSync(
    calibration,
    fs.readFileSync(path.join(repoRoot, "src", "model", "transformer.ts"), "utf8").repeat(4),
  );
  const model = path.join(repoRoot, "models", "tachyon-code-tiny");
  const args = [
    cli,
    "quantize",
    "--model",
    model,
    "--to",
    "int4",
    "--method",
    "gptq",
    "--calibration",
    calibration,
    "--out",
    out,
  ];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  // Interrupt once the partial folder exists, i.e. in the middle of the work.
  while (fs.readdirSync(parent).length === 0) await new Promise((r) => setTimeout(r, 20));
  await new Promise((r) => setTimeout(r, 300));
  child.kill("SIGINT");
  assert.equal(await exited, 130, stderr);
  assert.match(stderr, /interrupted; .* was not written/);
  assert.deepEqual(fs.readdirSync(parent), []);
});
