import { test } from "node:test";
import assert from "node:assert/strict";
import { deviceLayout } from "../src/backends/cuda/quant-layout.js";
import { Rng } from "../src/engine/rng.js";
import { schemeBits, type QuantScheme } from "../src/quant/quantized-weight.js";

const seed = Date.now() % 1e9;
const rng = new Rng(seed);

/** Code k of a row as the GEMV kernel reads it: byte b of quad q (four consecutive k) of a word. */
function kernelCode(words: Uint32Array, bits: number, k: number): number {
  const perWord = 32 / bits;
  const word = words[Math.floor(k / perWord)];
  const i = k % perWord;
  const quad = Math.floor(i / 4);
  const b = i % 4;
  // int4: quad 0 = low nibbles, quad 1 = high nibbles; int2: quad s = bits 2s..2s+1 of each byte.
  return (word >>> (8 * b + quad * bits)) & ((1 << bits) - 1);
}

for (const scheme of ["int4", "int2"] as QuantScheme[]) {
  test(`${scheme} codes reordered for the GPU still give every code at its k (seed ${seed})`, () => {
    const bits = schemeBits[scheme];
    const rows = 3;
    const cols = 64;
    const codes = Uint8Array.from({ length: (rows * cols * bits) / 8 }, () => rng.nextU32() & 255);
    const w = {
      scheme,
      rows,
      cols,
      groupSize: 32,
      groupRows: 1,
      codes,
      scales: new Float32Array(rows * 2).fill(0.5),
      offsets: new Float32Array(rows * 2).fill(-1),
    };
    const layout = deviceLayout("w", w);
    const words = new Uint32Array(layout.codes.buffer);
    for (let k = 0; k < rows * cols; k++) {
      const expected = (codes[Math.floor((k * bits) / 8)] >> ((k * bits) % 8)) & ((1 << bits) - 1);
      assert.equal(kernelCode(words, bits, k), expected, `code ${k}`);
    }
    // Scales and offsets become f16 pairs: 0.5 = 0x3800, -1 = 0xbc00.
    assert.deepEqual(Array.from(new Uint16Array(layout.scales.buffer).slice(0, 2)), [0x3800, 0xbc00]);
  });
}

test("weights the GPU kernels cannot read are refused with a way out", () => {
  const w = {
    scheme: "int4" as const,
    rows: 2,
    cols: 64,
    groupSize: 16,
    groupRows: 1,
    codes: new Uint8Array(64),
    scales: new Float32Array(8),
    offsets: new Float32Array(8),
  };
  assert.throws(() => deviceLayout("layer.w", w), /layer\.w: int4 .*group of a multiple of 32.*--device cpu/);
});
