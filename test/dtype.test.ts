import { test } from "node:test";
import assert from "node:assert/strict";
import { seededRandom } from "./random.js";
import {
  dtypeBytes,
  float32ToBf16Bits,
  float32ToF16Bits,
  isDType,
  toFloat32,
  type DType,
} from "../src/model/dtype.js";
import { TachyonError } from "../src/errors.js";

/** Decodes 16-bit patterns (little-endian) of `dtype`. */
function decode16(dtype: DType, patterns: number[]): Float32Array {
  return toFloat32(new Uint8Array(new Uint16Array(patterns).buffer), dtype);
}

function decode8(dtype: DType, patterns: number[]): Float32Array {
  return toFloat32(new Uint8Array(patterns), dtype);
}

/** The float32 with these bits. */
function f32(bits: number): number {
  return new Float32Array(new Uint32Array([bits]).buffer)[0];
}

const rng = seededRandom;

test("dtypeBytes and isDType", () => {
  assert.equal(dtypeBytes("F64"), 8);
  assert.equal(dtypeBytes("BF16"), 2);
  assert.equal(dtypeBytes("F8_E4M3"), 1);
  assert.equal(dtypeBytes("I32"), 4);
  assert.equal(dtypeBytes("BOOL"), 1);
  assert.ok(isDType("F8_E5M2"));
  assert.ok(!isDType("f32"));
  assert.ok(!isDType("toString"));
  assert.ok(!isDType("__proto__"));
});

test("F16 known bit patterns", () => {
  const cases: [number, number][] = [
    [0x3c00, 1],
    [0xc100, -2.5],
    [0x7bff, 65504],
    [0xfbff, -65504],
    [0x3555, 0.333251953125],
    [0x0400, 2 ** -14], // smallest normal
    [0x0001, 2 ** -24], // smallest subnormal
    [0x03ff, 1023 * 2 ** -24], // largest subnormal
    [0x8001, -(2 ** -24)],
    [0x7c00, Infinity],
    [0xfc00, -Infinity],
    [0x0000, 0],
  ];
  const got = decode16(
    "F16",
    cases.map((c) => c[0]),
  );
  cases.forEach(([bits, want], i) => assert.equal(got[i], want, `0x${bits.toString(16)}`));
  assert.ok(Object.is(decode16("F16", [0x8000])[0], -0));
  for (const nan of [0x7e00, 0x7c01, 0xfe00, 0x7fff]) assert.ok(Number.isNaN(decode16("F16", [nan])[0]));
});

test("BF16 known bit patterns", () => {
  const cases: [number, number][] = [
    [0x3f80, 1],
    [0xc020, -2.5],
    [0x4049, 3.140625],
    [0x7f7f, f32(0x7f7f0000)],
    [0x0001, f32(0x00010000)], // subnormal
    [0x7f80, Infinity],
    [0xff80, -Infinity],
  ];
  const got = decode16(
    "BF16",
    cases.map((c) => c[0]),
  );
  cases.forEach(([bits, want], i) => assert.equal(got[i], want, `0x${bits.toString(16)}`));
  assert.ok(Number.isNaN(decode16("BF16", [0x7fc0])[0]));
});

test("F8_E4M3 (e4m3fn) known bit patterns", () => {
  const cases: [number, number][] = [
    [0x38, 1],
    [0xc4, -3],
    [0x7e, 448], // max: no infinities in the fn variant
    [0xfe, -448],
    [0x78, 256], // top exponent still holds numbers
    [0x08, 2 ** -6], // smallest normal
    [0x01, 2 ** -9], // smallest subnormal
    [0x07, 7 * 2 ** -9],
    [0x00, 0],
  ];
  const got = decode8(
    "F8_E4M3",
    cases.map((c) => c[0]),
  );
  cases.forEach(([bits, want], i) => assert.equal(got[i], want, `0x${bits.toString(16)}`));
  assert.ok(Object.is(decode8("F8_E4M3", [0x80])[0], -0));
  const nans = decode8("F8_E4M3", [0x7f, 0xff]);
  assert.ok(Number.isNaN(nans[0]) && Number.isNaN(nans[1]));
});

test("F8_E4M3 is monotonic and symmetric over all finite codes", () => {
  const all = decode8(
    "F8_E4M3",
    Array.from({ length: 256 }, (_, i) => i),
  );
  for (let i = 1; i < 0x7f; i++) assert.ok(all[i] > all[i - 1], `code 0x${i.toString(16)}`);
  for (let i = 0; i < 0x7f; i++) assert.ok(Object.is(all[i | 0x80], -all[i]));
});

test("F8_E5M2 known bit patterns", () => {
  const cases: [number, number][] = [
    [0x3c, 1],
    [0xc1, -2.5],
    [0x7b, 57344],
    [0x04, 2 ** -14],
    [0x01, 2 ** -16],
    [0x7c, Infinity],
    [0xfc, -Infinity],
  ];
  const got = decode8(
    "F8_E5M2",
    cases.map((c) => c[0]),
  );
  cases.forEach(([bits, want], i) => assert.equal(got[i], want, `0x${bits.toString(16)}`));
  assert.ok(Number.isNaN(decode8("F8_E5M2", [0x7d])[0]));
});

test("F32 and F64 convert from unaligned bytes without aliasing them", () => {
  const values = [1, -2.5, 3.25, 1e-30];
  for (const [dtype, Arr] of [
    ["F32", Float32Array],
    ["F64", Float64Array],
  ] as const) {
    const raw = new Uint8Array(new Arr(values).buffer);
    const shifted = new Uint8Array(raw.byteLength + 3);
    shifted.set(raw, 3);
    const view = shifted.subarray(3);
    const got = toFloat32(view, dtype);
    assert.deepEqual([...got], values.map(Math.fround));
    view.fill(0);
    assert.equal(got[0], 1, "result must not alias the input");
  }
});

test("BF16 and F16 convert from unaligned bytes and Buffers", () => {
  const raw = Buffer.from([0xff, 0x80, 0x3f, 0x20, 0xc0]);
  assert.deepEqual([...toFloat32(raw.subarray(1), "BF16")], [1, -2.5]);
  const f16 = Buffer.from([0x00, 0x00, 0x3c, 0x00, 0xc1]);
  assert.deepEqual([...toFloat32(f16.subarray(1), "F16")], [1, -2.5]);
});

test("toFloat32 fills a given output array", () => {
  const out = new Float32Array(2);
  const got = toFloat32(new Uint8Array([0x80, 0x3f, 0x20, 0xc0]), "BF16", out);
  assert.equal(got, out);
  assert.deepEqual([...out], [1, -2.5]);
  assert.throws(() => toFloat32(new Uint8Array(4), "BF16", new Float32Array(3)));
  assert.throws(() => toFloat32(new Uint8Array(3), "F16"));
});

test("toFloat32 rejects integer dtypes with a TachyonError", () => {
  assert.throws(
    () => toFloat32(new Uint8Array(4), "I32"),
    (e: unknown) => e instanceof TachyonError && /cannot use I32/.test(e.message),
  );
});

test("float32ToBf16Bits rounds to nearest, ties to even", () => {
  const cases: [number, number][] = [
    [0x3f800000, 0x3f80], // exact
    [0x3f808000, 0x3f80], // tie, even below
    [0x3f818000, 0x3f82], // tie, even above
    [0x3f808001, 0x3f81], // just above the tie
    [0x3f807fff, 0x3f80], // just below the tie
    [0xbf818000, 0xbf82], // negative tie
    [0x7f7fffff, 0x7f80], // rounds up to Inf
    [0x7f800000, 0x7f80],
    [0x00008000, 0x0000], // subnormal tie to even zero
    [0x80000000, 0x8000],
  ];
  for (const [input, want] of cases) {
    assert.equal(float32ToBf16Bits(f32(input)), want, `0x${input.toString(16)}`);
  }
  const nan = float32ToBf16Bits(NaN);
  assert.equal(nan & 0x7f80, 0x7f80);
  assert.notEqual(nan & 0x7f, 0);
  // A NaN whose payload sits only in the dropped bits must not become Inf.
  assert.notEqual(float32ToBf16Bits(f32(0x7f800001)), 0x7f80);
});

test("float32ToBf16Bits picks the nearest BF16 for random floats", () => {
  const rand = rng(7);
  for (let i = 0; i < 20000; i++) {
    const bits = Math.floor(rand() * 2 ** 32);
    const x = f32(bits);
    if (!Number.isFinite(x) || Math.abs(x) >= f32(0x7f7f8000)) continue;
    const r = float32ToBf16Bits(x);
    // Independent check: compare the two BF16 neighbours that bracket x (toward and away from zero).
    const toward = bits >>> 16;
    const away = toward + 1;
    const dToward = Math.abs(x - f32(toward << 16));
    const dAway = Math.abs(f32(away << 16) - x);
    const want = dToward < dAway ? toward : dAway < dToward ? away : toward % 2 === 0 ? toward : away;
    assert.equal(r, want, `bits 0x${bits.toString(16)}`);
    // Exactly representable values round-trip.
    assert.equal(float32ToBf16Bits(f32(bits & 0xffff0000)), toward);
    assert.equal(decode16("BF16", [r])[0], f32(r << 16));
  }
});

test("float32ToF16Bits rounds to nearest, ties to even", () => {
  const cases: [number, number][] = [
    [1, 0x3c00],
    [-2.5, 0xc100],
    [65504, 0x7bff],
    [65519, 0x7bff], // below the midpoint to Inf
    [65520, 0x7c00], // the midpoint ties to even, which is Inf
    [1e6, 0x7c00],
    [-Infinity, 0xfc00],
    [2 ** -14, 0x0400],
    [2 ** -24, 0x0001],
    [2 ** -25, 0x0000], // tie between 0 and the smallest subnormal → even
    [1.5 * 2 ** -25, 0x0001],
    [3 * 2 ** -25, 0x0002], // tie between 1 and 2 subnormal units → even
    [1023.5 * 2 ** -24, 0x0400], // largest subnormal rounds up into the normals
    [1e-10, 0x0000],
    [1 + 2 ** -11, 0x3c00], // tie → even
    [1 + 3 * 2 ** -11, 0x3c02], // tie → even
    [1 + 2 ** -11 + 2 ** -20, 0x3c01],
  ];
  for (const [x, want] of cases) assert.equal(float32ToF16Bits(x), want, `${x}`);
  assert.equal(float32ToF16Bits(-0), 0x8000);
  const nan = float32ToF16Bits(NaN);
  assert.equal(nan & 0x7c00, 0x7c00);
  assert.notEqual(nan & 0x3ff, 0);
  assert.notEqual(float32ToF16Bits(f32(0x7f800001)), 0x7c00);
});

test("float32ToF16Bits inverts the F16 table for every non-NaN pattern", () => {
  const all = decode16(
    "F16",
    Array.from({ length: 65536 }, (_, i) => i),
  );
  for (let h = 0; h < 65536; h++) {
    if (Number.isNaN(all[h])) continue;
    assert.equal(float32ToF16Bits(all[h]), h, `0x${h.toString(16)}`);
  }
});

test("float32ToF16Bits picks the nearest F16 for random floats in range", () => {
  const rand = rng(11);
  const all = decode16(
    "F16",
    Array.from({ length: 0x7c00 }, (_, i) => i),
  );
  for (let i = 0; i < 20000; i++) {
    const x = Math.fround((rand() * 2 - 1) * 2 ** (rand() * 43 - 28));
    const h = float32ToF16Bits(x);
    const mag = h & 0x7fff;
    assert.equal(h >>> 15, x < 0 || Object.is(x, -0) ? 1 : 0);
    const err = Math.abs(Math.abs(x) - all[mag]);
    // No other finite F16 is strictly closer.
    if (mag > 0) assert.ok(Math.abs(Math.abs(x) - all[mag - 1]) >= err, `${x}`);
    if (mag + 1 < 0x7c00) assert.ok(Math.abs(Math.abs(x) - all[mag + 1]) >= err, `${x}`);
  }
});
