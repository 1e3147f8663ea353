/**
 * GPTQ (Frantar et al., 2022): quantizes a weight one input column at a time and spreads each
 * column's rounding error over the columns not yet quantized, weighted by the inverse Hessian of
 * the layer's inputs, so the layer's output on calibration data moves as little as possible.
 *
 * Per column i (in input order; no act-order, so groups stay contiguous as the engine layout
 * needs): a group's scale and offset come from the group's already-updated weights when the group
 * starts; q = nearest code; err = (w − dequant(q)) / U[i][i]; later columns w_j −= err · U[i][j],
 * where U is the upper Cholesky factor of H⁻¹. Updates within a block of columns are immediate,
 * updates to later blocks are batched per block ("lazy batch updates").
 */
import { TachyonError } from "../errors.js";
import { inverseUpperCholesky } from "./cholesky.js";
import { groupParams, intWeight, nearestCode, type GroupParams, type IntScheme } from "./int-grid.js";
import type { QuantizedWeight } from "./quantized-weight.js";

/**
 * Upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU), row-major, after adding `dampening` × the mean
 * diagonal to H's diagonal (numerical stability; GPTQ uses 0.01). Inputs that never
 * varied (zero diagonal) get a unit diagonal; their weights never meet a nonzero input anyway.
 */
export function inverseHessianFactor(
  name: string,
  hessian: Float64Array,
  n: number,
  dampening: number,
): Float64Array {
  const h = hessian.slice();
  let meanDiag = 0;
  for (let i = 0; i < n; i++) {
    if (h[i * n + i] === 0) h[i * n + i] = 1;
    meanDiag += h[i * n + i] / n;
  }
  // A rank-deficient H (fewer calibration rows than inputs) needs more dampening: raise it until it factors.
  for (let damp = dampening * meanDiag, attempt = 0; attempt < 6; damp *= 10, attempt++) {
    const damped = h.slice();
    for (let i = 0; i < n; i++) damped[i * n + i] += damp;
    const u = inverseUpperCholesky(damped, n);
    if (u) return u;
  }
  throw new TachyonError(
    `${name}: the calibration inputs give a Hessian that is not positive definite even with strong ` +
      `dampening; give more calibration text, or use --method rtn`,
    "argument",
  );
}

/**
 * GPTQ codes of `values` (row-major [rows, cols]) given U from inverseHessianFactor; the
 * group size divides cols.
 */
export function quantizeGptq(
  name: string,
  values: Float32Array,
  rows: number,
  cols: number,
  u: Float64Array,
  scheme: IntScheme,
  groupSize: number,
): QuantizedWeight {
  // Column-major working copy: column k of the weight is w[k * rows .. (k + 1) * rows).
  const w = new Float64Array(rows * cols);
  for (let n = 0; n < rows; n++) for (let k = 0; k < cols; k++) w[k * rows + n] = values[n * cols + k];
  const groups = cols / groupSize;
  const scales = new Float32Array(rows * groups);
  const offsets = new Float32Array(rows * groups);
  const codes = new Int16Array(rows * cols);
  const params: GroupParams[] = new Array<GroupParams>(rows);
  // Whole groups per block, so a group's parameters see every update from earlier columns.
  const block = groupSize * Math.max(1, Math.floor(128 / groupSize));
  for (let b0 = 0; b0 < cols; b0 += block) {
    const b1 = Math.min(cols, b0 + block);
    const errors = new Float64Array((b1 - b0) * rows);
    for (let i = b0; i < b1; i++) {
      const col = i * rows;
      if (i % groupSize === 0) {
        const g = i / groupSize;
        for (let n = 0; n < rows; n++) {
          let min = Infinity;
          let max = -Infinity;
          for (let k = i; k < i + groupSize; k++) {
            min = Math.min(min, w[k * rows + n]);
            max = Math.max(max, w[k * rows + n]);
          }
          params[n] = groupParams(name, scheme, min, max);
          scales[n * groups + g] = params[n].scale;
          offsets[n * groups + g] = params[n].offset;
        }
      }
      const d = u[i * cols + i];
      const err = errors.subarray((i - b0) * rows, (i - b0 + 1) * rows);
      for (let n = 0; n < rows; n++) {
        const p = params[n];
        const q = nearestCode(scheme, w[col + n], p);
        codes[n * cols + i] = q;
        err[n] = (w[col + n] - (q * p.scale + p.offset)) / d;
      }
      for (let j = i + 1; j < b1; j++) subtractScaled(w, j * rows, err, u[i * cols + j], rows);
    }
    for (let j = b1; j < cols; j++) {
      for (let t = 0; t < b1 - b0; t++) {
        subtractScaled(w, j * rows, errors.subarray(t * rows, (t + 1) * rows), u[(b0 + t) * cols + j], rows);
      }
    }
  }
  return intWeight(scheme, rows, cols, groupSize, codes, scales, offsets);
}

/** w[at .. at + n) −= factor · err. */
function subtractScaled(w: Float64Array, at: number, err: Float64Array, factor: number, n: number): void {
  if (factor === 0) return;
  for (let i = 0; i < n; i++) w[at + i] -= err[i] * factor;
}
