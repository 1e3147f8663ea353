/**
 * Writes test/fixtures/quantized/: one int4 quantization (groups of 32, integer zero points) of
 * the qwen3 test model, packed five ways: tachyon's own format, GPTQ v1 (zeros stored minus
 * one), GPTQ v2, GPTQ with desc_act (groups listed in reverse order through g_idx) and AWQ
 * "gemm". All five hold exactly the same weights, so loading any of them must give the same
 * logits. The packing here is written from the format descriptions (docs/QUANTIZATION.md),
 * independently of the loaders it tests.
 *
 * Run after a build: node dist/scripts/make-quantized-fixtures.js
 */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { roundToF16 } from "../src/model/dtype.js";
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from "../src/model/safetensors.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const source = path.join(root, "test/fixtures/models/qwen3");
const outRoot = path.join(root, "test/fixtures/quantized");
const GROUP = 32;
const linear = /\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.weight$/;

interface Int4Weight {
  rows: number;
  cols: number;
  /** q[n][k], 0..15 */
  q: Uint8Array;
  /** per [group][n] (checkpoint order: groups first) */
  scale: Float32Array;
  zero: Uint8Array;
}

/** Asymmetric int4 with integer zero points, GPTQ style: the range always includes 0. */
function quantize(w: Float32Array, rows: number, cols: number): Int4Weight {
  const groups = cols / GROUP;
  const q = new Uint8Array(rows * cols);
  const scale = new Float32Array(groups * rows);
  const zero = new Uint8Array(groups * rows);
  for (let n = 0; n < rows; n++) {
    for (let g = 0; g < groups; g++) {
      let lo = 0;
      let hi = 0;
      for (let k = g * GROUP; k < (g + 1) * GROUP; k++) {
        lo = Math.min(lo, w[n * cols + k]);
        hi = Math.max(hi, w[n * cols + k]);
      }
      const s = roundToF16((hi - lo) / 15);
      const z = Math.min(15, Math.max(0, Math.round(-lo / s)));
      // GPTQ v1 stores zero − 1 in 4 bits; a zero of 0 would wrap, which real v1 files get wrong too.
      if (z === 0)
        throw new Error("a group with zero point 0 cannot be stored in GPTQ v1; change the source");
      scale[g * rows + n] = s;
      zero[g * rows + n] = z;
      for (let k = g * GROUP; k < (g + 1) * GROUP; k++) {
        q[n * cols + k] = Math.min(15, Math.max(0, Math.round(w[n * cols + k] / s) + z));
      }
    }
  }
  return { rows, cols, q, scale, zero };
}

/** int32 words from 8 nibbles each: word i holds values[8i .. 8i+8) at nibble positions `order`. */
function packWords(
  values: (i: number) => number,
  count: number,
  order = [0, 1, 2, 3, 4, 5, 6, 7],
): Int32Array {
  const words = new Int32Array(count / 8);
  for (let i = 0; i < count; i++) words[i >> 3] |= values(i) << (4 * order.indexOf(i & 7));
  return words;
}

function i32(words: Int32Array, shape: number[]): TensorToWrite {
  return { dtype: "I32", shape, data: new Uint8Array(words.buffer) };
}

function f16(values: Float32Array, shape: number[]): TensorToWrite {
  return { dtype: "F16", shape, data: values };
}

/** The five packings of one weight, by folder. */
function packings(base: string, w: Int4Weight): Record<string, Record<string, TensorToWrite>> {
  const { rows: N, cols: K, q, scale, zero } = w;
  const G = K / GROUP;
  // Tachyon: rows of codes, two per byte (even k low); offset = −zero · scale rounded to f16.
  const codes = new Uint8Array((N * K) / 2);
  for (let i = 0; i < N * K; i++) codes[i >> 1] |= q[i] << (4 * (i & 1));
  const rowMajor = (perGroup: (g: number, n: number) => number) =>
    Float32Array.from({ length: N * G }, (_, i) => perGroup(i % G, Math.floor(i / G)));
  const tachyon = {
    [base + ".qweight"]: { dtype: "U8", shape: [N, K / 2], data: codes } as TensorToWrite,
    [base + ".scales"]: f16(
      rowMajor((g, n) => scale[g * N + n]),
      [N, G],
    ),
    [base + ".offsets"]: f16(
      rowMajor((g, n) => roundToF16(-zero[g * N + n] * scale[g * N + n])),
      [N, G],
    ),
  };
  // GPTQ: qweight [K/8, N] packed along K; qzeros [G, N/8] packed along N.
  const qweightGptq = new Int32Array((K / 8) * N);
  for (let k = 0; k < K; k++)
    for (let n = 0; n < N; n++) qweightGptq[(k >> 3) * N + n] |= q[n * K + k] << (4 * (k & 7));
  const zeros = (minusOne: number, groupOrder: (g: number) => number) =>
    i32(
      packWords((i) => (zero[groupOrder(Math.floor(i / N)) * N + (i % N)] - minusOne) & 15, G * N),
      [G, N / 8],
    );
  const scalesIn = (groupOrder: (g: number) => number) =>
    f16(
      Float32Array.from({ length: G * N }, (_, i) => scale[groupOrder(Math.floor(i / N)) * N + (i % N)]),
      [G, N],
    );
  const identity = (g: number) => g;
  const reversed = (g: number) => G - 1 - g;
  const gIdx = (order: (k: number) => number) =>
    i32(
      Int32Array.from({ length: K }, (_, k) => order(k)),
      [K],
    );
  const gptq = (minusOne: number) => ({
    [base + ".qweight"]: i32(qweightGptq, [K / 8, N]),
    [base + ".qzeros"]: zeros(minusOne, identity),
    [base + ".scales"]: scalesIn(identity),
    [base + ".g_idx"]: gIdx((k) => Math.floor(k / GROUP)),
  });
  // desc_act: checkpoint group c holds our group G-1-c; g_idx maps each input to its stored group.
  const descAct = {
    [base + ".qweight"]: i32(qweightGptq, [K / 8, N]),
    [base + ".qzeros"]: zeros(1, reversed),
    [base + ".scales"]: scalesIn(reversed),
    [base + ".g_idx"]: gIdx((k) => G - 1 - Math.floor(k / GROUP)),
  };
  // AWQ: qweight [K, N/8] packed along N with the interleave [0, 2, 4, 6, 1, 3, 5, 7].
  const interleave = [0, 2, 4, 6, 1, 3, 5, 7];
  const awq = {
    [base + ".qweight"]: i32(
      packWords((i) => q[(i % N) * K + Math.floor(i / N)], K * N, interleave),
      [K, N / 8],
    ),
    [base + ".qzeros"]: i32(
      packWords((i) => zero[i], G * N, interleave),
      [G, N / 8],
    ),
    [base + ".scales"]: scalesIn(identity),
  };
  return { "tachyon-int4": tachyon, gptq: gptq(1), "gptq-v2": gptq(0), "gptq-desc-act": descAct, awq };
}

const configs: Record<string, Record<string, unknown>> = {
  "tachyon-int4": {
    quant_method: "tachyon",
    format_version: 1,
    bits: 4,
    group_size: GROUP,
    sym: false,
    method: "rtn",
    modules_to_not_convert: ["lm_head"],
  },
  gptq: {
    quant_method: "gptq",
    bits: 4,
    group_size: GROUP,
    sym: false,
    desc_act: false,
    checkpoint_format: "gptq",
  },
  "gptq-v2": {
    quant_method: "gptq",
    bits: 4,
    group_size: GROUP,
    sym: false,
    desc_act: false,
    checkpoint_format: "gptq_v2",
  },
  "gptq-desc-act": { quant_method: "gptq", bits: 4, group_size: GROUP, sym: false, desc_act: true },
  awq: { quant_method: "awq", bits: 4, group_size: GROUP, zero_point: true, version: "gemm" },
};

const file = SafetensorsFile.open(path.join(source, "model.safetensors"));
const outputs: Record<string, Record<string, TensorToWrite>> = Object.fromEntries(
  Object.keys(configs).map((k) => [k, {}]),
);
for (const [name, info] of file.tensors) {
  if (!linear.test(name)) {
    for (const out of Object.values(outputs))
      out[name] = { dtype: info.dtype, shape: info.shape, data: file.read(name) };
    continue;
  }
  const [rows, cols] = info.shape;
  const packed = packings(name.replace(/\.weight$/, ""), quantize(file.readFloat32(name), rows, cols));
  for (const [folder, tensors] of Object.entries(packed)) Object.assign(outputs[folder], tensors);
}
file.close();
const sourceConfig = JSON.parse(fs.readFileSync(path.join(source, "config.json"), "utf8")) as Record<
  string,
  unknown
>;
for (const [folder, tensors] of Object.entries(outputs)) {
  const dir = path.join(outRoot, folder);
  fs.mkdirSync(dir, { recursive: true });
  writeSafetensors(path.join(dir, "model.safetensors"), tensors);
  const config = { ...sourceConfig, quantization_config: configs[folder] };
  fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify(config, null, 2) + "\n");
  for (const f of ["tokenizer.json", "tokenizer_config.json"])
    fs.copyFileSync(path.join(source, f), path.join(dir, f));
}
process.stdout.write(`wrote ${Object.keys(outputs).join(", ")} under ${outRoot}\n`);
