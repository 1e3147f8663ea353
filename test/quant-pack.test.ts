/** The engine layout's building blocks: code packing, e4m3 encoding, float16 rounding, dequantize. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { roundToF16, toFloat32 } from "../src/model/dtype.js";
import { dequantize } from "../src/quant/dequantize.js";
import { encodeE4m3 } from "../src/quant/fp8.js";
import { packCodes, unpackCodes, type CodeBits } from "../src/quant/pack.js";
import type { QuantizedWeight } from "../src/quant/quantized-weight.js";
import { freshSeed, normals } from "./quant-helpers.js";
import { seededRandom } from "./random.js";

test("pack → unpack returns random codes of 8, 4 and 2 bits unchanged, lowest index in the lowest bits", () => {
  const seed = freshSeed();
  const rnd = seededRandom(seed);
  for (const bits of [8, 4, 2] as CodeBits[]) {
    const codes = Uint8Array.from({ length: 8 * 37 }, () => Math.floor(rnd() * (1 << bits)));
    const packed = packCodes(codes, bits);
    assert.equal(packed.length, (codes.length * bits) / 8);
    assert.deepEqual(unpackCodes(packed, bits, codes.length), codes, `seed ${seed}, ${bits} bits`);
    assert.equal(packed[0] & ((1 << bits) - 1), codes[0], "the first code sits in the lowest bits");
  }
});

test("e4m3 encoding: every finite byte round-trips, and random values go to the nearest code", () => {
  const all = toFloat32(
    Uint8Array.from({ length: 256 }, (_, i) => i),
    "F8_E4M3",
  );
  for (let b = 0; b < 256; b++) {
    if (Number.isNaN(all[b])) continue;
    const back = encodeE4m3(all[b]);
    assert.equal(all[back], all[b], `byte 0x${b.toString(16)}`);
  }
  const seed = freshSeed();
  const values = normals(seed, 2000, 100);
  for (const x of values) {
    const got = Math.abs(all[encodeE4m3(x)] - x);
    let best = Infinity;
    for (const v of all) if (Number.isFinite(v)) best = Math.min(best, Math.abs(v - x));
    assert.equal(got, best, `seed ${seed}: ${x}`);
  }
  assert.equal(all[encodeE4m3(1e6)], 448, "saturates instead of overflowing");
});

test("roundToF16 gives the nearest float16 value", () => {
  assert.equal(roundToF16(1 + 2 ** -11), 1, "a tie goes to the even mantissa");
  assert.equal(roundToF16(1 + 3 * 2 ** -11), 1 + 2 ** -9);
  assert.equal(roundToF16(70000), Infinity);
  const seed = freshSeed();
  for (const x of normals(seed, 500)) {
    const r = roundToF16(x);
    assert.ok(Math.abs(r - x) <= Math.abs(x) * 2 ** -11 + 2 ** -25, `seed ${seed}: ${x} → ${r}`);
    assert.equal(roundToF16(r), r);
  }
});

test("dequantize follows the layout's formulas for random codes, scales and offsets of every scheme", () => {
  const seed = freshSeed();
  const rnd = seededRandom(seed);
  const rows = 6;
  const cols = 64;
  const cases: [QuantizedWeight["scheme"], CodeBits, number, number][] = [
    ["int8", 8, 32, 1],
    ["int4", 4, 16, 1],
    ["int2", 2, 32, 1],
    ["fp8", 8, 16, 4],
  ];
  for (const [scheme, bits, groupSize, groupRows] of cases) {
    const codes = Uint8Array.from({ length: rows * cols }, () => Math.floor(rnd() * (1 << bits)));
    if (scheme === "fp8") codes.forEach((c, i) => (codes[i] = (c & 0x7f) === 0x7f ? 0x3f : c));
    const blocks = Math.ceil(rows / groupRows) * (cols / groupSize);
    const scales = Float32Array.from({ length: blocks }, () => roundToF16(rnd() + 0.1));
    const offsets =
      scheme === "int4" || scheme === "int2" ? Float32Array.from({ length: blocks }, () => -rnd()) : null;
    const w: QuantizedWeight = {
      scheme,
      rows,
      cols,
      groupSize,
      groupRows,
      codes: packCodes(codes, bits),
      scales,
      offsets,
    };
    const out = dequantize(w);
    const fp8 = toFloat32(codes, "F8_E4M3");
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const i = r * cols + c;
        const g = Math.floor(r / groupRows) * (cols / groupSize) + Math.floor(c / groupSize);
        const q = scheme === "int8" ? (codes[i] << 24) >> 24 : scheme === "fp8" ? fp8[i] : codes[i];
        const expected = Math.fround(q * scales[g] + (offsets ? offsets[g] : 0));
        assert.ok(
          Math.abs(out[i] - expected) <= 1e-6 * Math.abs(expected),
          `seed ${seed}, ${scheme} (${r}, ${c})`,
        );
      }
    }
  }
});
