/**
 * quantize → load: the written checkpoint loads to exactly the quantizer's weights for every
 * scheme and architecture; quantized models stay close to the 16-bit model; GPTQ beats
 * round-to-nearest on its calibration text; mixed precision and the LM head are recorded.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { Checkpoint } from "../src/model/checkpoint.js";
import { writeRandomCheckpoint, type ModelShape } from "../src/model/random-checkpoint.js";
import { dequantize } from "../src/quant/dequantize.js";
import { quantizeModel, type QuantizeRequest } from "../src/quant/quantize-model.js";
import { quantizeRtn } from "../src/quant/rtn.js";
import { Tokenizer } from "../src/tokenizer/tokenizer.js";
import { folderLogits, freshSeed, loadedQuantized, relativeError, tempDir } from "./quant-helpers.js";
import { fixturesDir, repoRoot } from "./paths.js";

const mtpShape: ModelShape = {
  architecture: "Qwen3ForCausalLM",
  vocabSize: 512,
  hiddenSize: 64,
  intermediateSize: 128,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 16,
  tieWordEmbeddings: true,
  numMtpModules: 1,
};
const tokenizerDir = path.join(fixturesDir, "models", "qwen3");

async function quantized(
  src: string,
  req: Omit<QuantizeRequest, "method"> & { method?: QuantizeRequest["method"] },
) {
  const out = path.join(tempDir("quantized"), "out");
  const summary = await quantizeModel(src, out, { method: "rtn", ...req });
  return { out, summary };
}

for (const [scheme, groupSize] of [
  ["fp8", undefined],
  ["int8", undefined],
  ["int8", 32],
  ["int4", 32],
  ["int4", 64],
  ["int2", 32],
] as const) {
  test(`${scheme}${groupSize ? ` g${groupSize}` : ""}: a random MTP model with a tied head loads to exactly the quantizer's weights`, async () => {
    const seed = freshSeed();
    const src = tempDir("src");
    writeRandomCheckpoint(src, mtpShape, { seed, tokenizerDir });
    const { out } = await quantized(src, { scheme, groupSize, quantizeLmHead: true });
    const config = JSON.parse(fs.readFileSync(path.join(out, "config.json"), "utf8")) as Record<
      string,
      unknown
    >;
    assert.equal(config.tie_word_embeddings, false, "the quantized head is untied from the embeddings");
    const loaded = loadedQuantized(out);
    // 7 linears per layer, 2 layers + 1 MTP layer, the MTP projection and the head.
    assert.equal(loaded.size, 7 * 3 + 2, `seed ${seed}`);
    const ckpt = Checkpoint.open(src);
    for (const [name, w] of loaded) {
      const source = name === "lm_head.weight" ? "model.embed_tokens.weight" : name;
      const [rows, cols] = ckpt.info(source).shape;
      const spec = { scheme, groupSize: groupSize ?? (scheme === "fp8" ? 128 : cols) };
      const expected = quantizeRtn(name, ckpt.readFloat32(source), rows, cols, spec);
      assert.deepEqual(dequantize(w), dequantize(expected), `seed ${seed}: ${name}`);
    }
    ckpt.close();
    assert.ok(fs.existsSync(path.join(out, "tokenizer.json")), "tokenizer files are copied");
  });
}

for (const arch of ["llama", "mistral", "qwen2", "qwen3", "llama31"]) {
  test(`${arch}: int8, fp8 and int4 g32 models stay close to the 16-bit model`, async () => {
    const src = path.join(fixturesDir, "models", arch);
    const tokens = [3, 17, 250, 9, 77, 400, 12, 5];
    const reference = folderLogits(src, tokens);
    // Tolerances for these tiny random models, whose logits are small and fragile.
    for (const [scheme, groupSize, tolerance] of [
      ["int8", undefined, 0.08],
      ["fp8", undefined, 0.3],
      ["int4", 32, 0.7],
    ] as const) {
      const { out } = await quantized(src, { scheme, groupSize });
      const err = relativeError(folderLogits(out, tokens), reference);
      assert.ok(err < tolerance, `${arch} ${scheme}: relative logit error ${err}`);
    }
  });
}

test("embedded model: fp8 and int8 perplexity within 0.5% of bf16, int4 g128 within 5%", async () => {
  const src = path.join(repoRoot, "models", "tachyon-code-tiny");
  const text = fs.readFileSync(path.join(fixturesDir, "embedded", "heldout-sample.txt"), "utf8");
  const ids = Tokenizer.load(src).encode(text, false).slice(0, 128);
  const perplexity = (dir: string) => {
    const logits = folderLogits(dir, ids);
    const vocab = logits.length / ids.length;
    let nll = 0;
    for (let i = 0; i + 1 < ids.length; i++) {
      const row = logits.subarray(i * vocab, (i + 1) * vocab);
      const max = row.reduce((a, b) => Math.max(a, b), -Infinity);
      const sum = row.reduce((a, b) => a + Math.exp(b - max), 0);
      nll += max + Math.log(sum) - row[ids[i + 1]];
    }
    return Math.exp(nll / (ids.length - 1));
  };
  const base = perplexity(src);
  for (const [scheme, groupSize, limit] of [
    ["fp8", undefined, 0.005],
    ["int8", undefined, 0.005],
    ["int4", 128, 0.05],
  ] as const) {
    const { out } = await quantized(src, { scheme, groupSize });
    const ppl = perplexity(out);
    assert.ok(ppl / base - 1 < limit, `${scheme}: perplexity ${ppl} vs ${base}`);
  }
});

test("GPTQ int4 and int2 beat round-to-nearest on the calibration text's logits", async () => {
  const src = path.join(fixturesDir, "models", "qwen3");
  const text = fs.readFileSync(path.join(repoRoot, "src", "model", "transformer.ts"), "utf8");
  const ids = Tokenizer.load(src).encode(text, false).slice(0, 160);
  const reference = folderLogits(src, ids);
  for (const [scheme, groupSize] of [
    ["int4", 32],
    ["int2", 32],
  ] as const) {
    const rtn = relativeError(
      folderLogits((await quantized(src, { scheme, groupSize })).out, ids),
      reference,
    );
    const { out, summary } = await quantized(src, {
      scheme,
      groupSize,
      method: "gptq",
      calibrationText: text,
      calibrationTokens: 160,
    });
    assert.equal(summary.calibrationTokens, 160);
    const gptq = relativeError(folderLogits(out, ids), reference);
    assert.ok(gptq < rtn, `${scheme}: GPTQ ${gptq} vs RTN ${rtn}`);
    const q = (
      JSON.parse(fs.readFileSync(path.join(out, "config.json"), "utf8")) as {
        quantization_config: Record<string, unknown>;
      }
    ).quantization_config;
    assert.equal(q.method, "gptq");
  }
});

test("GPTQ quantizes an MTP model's modules and a tied head", async () => {
  const src = tempDir("src");
  writeRandomCheckpoint(src, mtpShape, { seed: freshSeed(), tokenizerDir });
  const text = fs.readFileSync(path.join(repoRoot, "src", "model", "mtp.ts"), "utf8");
  const { out, summary } = await quantized(src, {
    scheme: "int4",
    groupSize: 32,
    method: "gptq",
    calibrationText: text,
    calibrationTokens: 128,
    quantizeLmHead: true,
  });
  assert.equal(summary.quantized, 7 * 3 + 2);
  assert.deepEqual(summary.kept, []);
  const names = [...loadedQuantized(out).keys()];
  assert.ok(names.includes("mtp.0.proj.weight") && names.includes("mtp.0.layer.mlp.down_proj.weight"));
  assert.ok(names.includes("lm_head.weight"));
});

test("--keep leaves matching modules in 16 bits and records them; the head stays 16-bit by default", async () => {
  const src = path.join(fixturesDir, "models", "qwen2");
  const { out, summary } = await quantized(src, {
    scheme: "int4",
    groupSize: 32,
    keep: ["model.layers.0.", "mlp.down_proj"],
  });
  const config = JSON.parse(fs.readFileSync(path.join(out, "config.json"), "utf8")) as {
    quantization_config: {
      modules_to_not_convert: string[];
      bits: number;
      group_size: number;
      quant_method: string;
    };
  };
  const kept = config.quantization_config.modules_to_not_convert;
  assert.deepEqual(kept, summary.kept);
  assert.ok(
    kept.includes("model.layers.0.self_attn.q_proj") && kept.includes("model.layers.1.mlp.down_proj"),
  );
  assert.ok(kept.includes("lm_head"));
  assert.ok(!kept.includes("model.layers.1.mlp.up_proj"));
  assert.deepEqual(
    [
      config.quantization_config.quant_method,
      config.quantization_config.bits,
      config.quantization_config.group_size,
    ],
    ["tachyon", 4, 32],
  );
  const loaded = loadedQuantized(out);
  assert.equal(loaded.size, 6, "layer 1 minus its down_proj");
  const ckpt = Checkpoint.open(out);
  const source = Checkpoint.open(src);
  const name = "model.layers.0.self_attn.q_proj.weight";
  assert.deepEqual(ckpt.read(name), source.read(name), "a kept module is copied as stored");
  source.close();
  assert.ok(ckpt.has("model.layers.0.self_attn.q_proj.bias"), "biases are copied");
  ckpt.close();
  assert.deepEqual(
    fs.readdirSync(path.dirname(out)),
    ["out"],
    "no partial folder is left next to the output",
  );
});
