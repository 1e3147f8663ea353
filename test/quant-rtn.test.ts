/** Round-to-nearest quantizers: error bounds per scheme, float16 scales, codes nearest for the stored scales. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { roundToF16 } from "../src/model/dtype.js";
import { dequantize } from "../src/quant/dequantize.js";
import { unpackCodes } from "../src/quant/pack.js";
import { quantizeRtn } from "../src/quant/rtn.js";
import { freshSeed, normals } from "./quant-helpers.js";

const rows = 24;
const cols = 256;

for (const [scheme, groupSize] of [
  ["int8", 256],
  ["int8", 32],
  ["int4", 128],
  ["int4", 32],
  ["int2", 64],
  ["int2", 32],
] as const) {
  test(`${scheme}, groups of ${groupSize}: error within half a step, f16 scales, nearest codes`, () => {
    const seed = freshSeed();
    const values = normals(seed, rows * cols, 0.05);
    const w = quantizeRtn("w", values, rows, cols, { scheme, groupSize });
    assert.equal(w.scales.length, rows * (cols / groupSize));
    const back = dequantize(w);
    const bits = scheme === "int8" ? 8 : scheme === "int4" ? 4 : 2;
    const codes = unpackCodes(w.codes, bits, rows * cols);
    const groups = cols / groupSize;
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const g = r * groups + Math.floor(c / groupSize);
        const scale = w.scales[g];
        const offset = w.offsets?.[g] ?? 0;
        assert.equal(roundToF16(scale), scale, `seed ${seed}: scale is a float16 value`);
        assert.equal(roundToF16(offset), offset, `seed ${seed}: offset is a float16 value`);
        const i = r * cols + c;
        const err = Math.abs(back[i] - values[i]);
        // Half a step, plus what rounding the scale and offset to f16 can move the grid's ends.
        const bound = (scheme === "int8" ? 0.6 : 0.5 + 20 * 2 ** -11) * scale + Math.abs(offset) * 2 ** -10;
        assert.ok(err <= bound, `seed ${seed}: (${r}, ${c}) error ${err} > ${bound}`);
        const q = scheme === "int8" ? (codes[i] << 24) >> 24 : codes[i];
        const [lo, hi] = scheme === "int8" ? [-128, 127] : [0, (1 << bits) - 1];
        for (const other of [q - 1, q + 1]) {
          if (other < lo || other > hi) continue;
          const otherErr = Math.abs(Math.fround(other * scale + offset) - values[i]);
          assert.ok(
            otherErr >= err - 1e-9,
            `seed ${seed}: code ${other} is nearer than ${q} at (${r}, ${c})`,
          );
        }
      }
    }
  });
}

test("fp8: 128×128 block scales of amax / 448, error within e4m3's half step", () => {
  const seed = freshSeed();
  const r = 200; // partial blocks at the bottom and right edges
  const c = 300;
  const values = normals(seed, r * c, 0.05);
  const w = quantizeRtn("w", values, r, c, { scheme: "fp8", groupSize: 128 });
  assert.equal(w.scales.length, 2 * 3);
  assert.equal(w.groupRows, 128);
  const back = dequantize(w);
  for (let i = 0; i < values.length; i++) {
    const block = Math.floor(Math.floor(i / c) / 128) * 3 + Math.floor((i % c) / 128);
    const bound = Math.max(Math.abs(values[i]) * 2 ** -4, w.scales[block] * 2 ** -10) * (1 + 1e-6);
    assert.ok(Math.abs(back[i] - values[i]) <= bound, `seed ${seed}: index ${i}`);
  }
  let amax = 0;
  for (let i = 0; i < 128; i++)
    for (let j = 0; j < 128; j++) amax = Math.max(amax, Math.abs(values[i * c + j]));
  assert.equal(w.scales[0], Math.fround(amax / 448));
});

test("a constant group quantizes exactly (zero scale), and all-zero fp8 blocks stay zero", () => {
  const values = new Float32Array(2 * 64).fill(0.25);
  for (const scheme of ["int4", "int2", "fp8"] as const) {
    const back = dequantize(quantizeRtn("w", values, 2, 64, { scheme, groupSize: 32 }));
    assert.deepEqual(back, values, scheme);
  }
  const zeros = dequantize(quantizeRtn("w", new Float32Array(64), 1, 64, { scheme: "fp8", groupSize: 128 }));
  assert.ok(zeros.every((v) => v === 0));
});
