/**
 * The dense linear algebra GPTQ needs, on symmetric positive-definite n × n matrices stored
 * row-major in Float64Arrays.
 */

/** Lower-triangular L with A = L·Lᵀ (upper triangle zero), or null when A is not positive definite. */
export function cholesky(a: Float64Array, n: number): Float64Array | null {
  const l = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    const rowJ = j * n;
    let d = a[rowJ + j];
    for (let k = 0; k < j; k++) d -= l[rowJ + k] * l[rowJ + k];
    if (!(d > 0)) return null;
    const ljj = Math.sqrt(d);
    l[rowJ + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      const rowI = i * n;
      let s = a[rowI + j];
      for (let k = 0; k < j; k++) s -= l[rowI + k] * l[rowJ + k];
      l[rowI + j] = s / ljj;
    }
  }
  return l;
}

/** L⁻¹ of a lower-triangular L, row by row: row i = (e_i − Σ_{k<i} L[i][k] · row k) / L[i][i]. */
export function lowerInverse(l: Float64Array, n: number): Float64Array {
  const m = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const rowI = i * n;
    for (let k = 0; k < i; k++) {
      const f = l[rowI + k];
      if (f === 0) continue;
      const rowK = k * n;
      for (let j = 0; j <= k; j++) m[rowI + j] -= f * m[rowK + j];
    }
    const d = 1 / l[rowI + i];
    for (let j = 0; j < i; j++) m[rowI + j] *= d;
    m[rowI + i] = d;
  }
  return m;
}

/**
 * Upper-triangular U with A⁻¹ = Uᵀ·U, or null when A is not positive definite. With P the
 * order-reversing permutation and P·A·P = L·Lᵀ, A = V·Vᵀ for the upper-triangular V = P·L·P, so
 * A⁻¹ = (V⁻¹)ᵀ·V⁻¹ and U = V⁻¹ = P·L⁻¹·P: one Cholesky and one triangular inverse, no full inverse.
 */
export function inverseUpperCholesky(a: Float64Array, n: number): Float64Array | null {
  const reversed = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) reversed[i * n + j] = a[(n - 1 - i) * n + (n - 1 - j)];
  const l = cholesky(reversed, n);
  if (!l) return null;
  const m = lowerInverse(l, n);
  const u = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = i; j < n; j++) u[i * n + j] = m[(n - 1 - i) * n + (n - 1 - j)];
  return u;
}
