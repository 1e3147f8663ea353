/** GPTQ: the inverse-Hessian factor is right, and GPTQ beats round-to-nearest on a layer's output for correlated inputs. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { inverseUpperCholesky } from "../src/quant/cholesky.js";
import { dequantize } from "../src/quant/dequantize.js";
import { inverseHessianFactor, quantizeGptq } from "../src/quant/gptq.js";
import { Hessian } from "../src/quant/hessian.js";
import { quantizeRtn } from "../src/quant/rtn.js";
import { freshSeed, normals } from "./quant-helpers.js";

/** Inputs x = z·A + noise with 16 hidden factors z: strongly correlated, like real activations. */
function correlatedInputs(seed: number, count: number, k: number): Float32Array {
  const factors = 16;
  const a = normals(seed, factors * k);
  const z = normals(seed + 1, count * factors);
  const noise = normals(seed + 2, count * k, 0.05);
  const x = new Float32Array(count * k);
  for (let m = 0; m < count; m++) {
    for (let f = 0; f < factors; f++) {
      const zf = z[m * factors + f];
      for (let j = 0; j < k; j++) x[m * k + j] += zf * a[f * k + j];
    }
    for (let j = 0; j < k; j++) x[m * k + j] += noise[m * k + j];
  }
  return x;
}

/** Σ over rows of ‖x·(w − ŵ)ᵀ‖²: the layer's output error. */
function outputError(
  x: Float32Array,
  count: number,
  w: Float32Array,
  wq: Float32Array,
  n: number,
  k: number,
): number {
  let total = 0;
  for (let m = 0; m < count; m++) {
    for (let o = 0; o < n; o++) {
      let d = 0;
      for (let j = 0; j < k; j++) d += x[m * k + j] * (w[o * k + j] - wq[o * k + j]);
      total += d * d;
    }
  }
  return total;
}

test("the inverse-Hessian factor U satisfies Uᵀ·U·H = I for a random positive-definite H", () => {
  const seed = freshSeed();
  const n = 40;
  const h = new Hessian(n);
  h.add(normals(seed, 3 * n * n), 3 * n);
  const a = h.matrix();
  const u = inverseUpperCholesky(a, n)!;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < i; j++) assert.equal(u[i * n + j], 0, "U is upper triangular");
  }
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) {
        let inv = 0; // (UᵀU)[i][k]
        for (let t = 0; t <= Math.min(i, k); t++) inv += u[t * n + i] * u[t * n + k];
        s += inv * a[k * n + j];
      }
      assert.ok(Math.abs(s - (i === j ? 1 : 0)) < 1e-8, `seed ${seed}: (${i}, ${j}) = ${s}`);
    }
  }
});

for (const [scheme, groupSize] of [
  ["int4", 128],
  ["int4", 32],
  ["int2", 32],
] as const) {
  test(`GPTQ ${scheme} g${groupSize} has a lower output error than round-to-nearest on correlated inputs`, () => {
    const seed = freshSeed();
    const n = 48;
    const k = 256;
    const count = 512;
    const w = normals(seed + 3, n * k, 0.05);
    const x = correlatedInputs(seed, count, k);
    const h = new Hessian(k);
    h.add(x, count);
    const u = inverseHessianFactor("w", h.matrix(), k, 0.01);
    const gptq = outputError(x, count, w, dequantize(quantizeGptq("w", w, n, k, u, scheme, groupSize)), n, k);
    const rtn = outputError(x, count, w, dequantize(quantizeRtn("w", w, n, k, { scheme, groupSize })), n, k);
    assert.ok(gptq < 0.5 * rtn, `seed ${seed}: GPTQ ${gptq} vs RTN ${rtn}`);
  });
}

test("a Hessian with dead inputs (always zero) still factors, and GPTQ leaves no NaN", () => {
  const seed = freshSeed();
  const k = 64;
  const x = normals(seed, 100 * k);
  for (let m = 0; m < 100; m++) x[m * k + 5] = 0;
  const h = new Hessian(k);
  h.add(x, 100);
  const u = inverseHessianFactor("w", h.matrix(), k, 0.01);
  const w = dequantize(quantizeGptq("w", normals(seed + 1, 8 * k), 8, k, u, "int4", 32));
  assert.ok(w.every(Number.isFinite));
});
