/**
 * The CPU backend's arithmetic on float32 arrays. These loops are the correctness reference for
 * every GPU kernel, so they stay plain; they are also hot, so the inner loops are unrolled with
 * independent accumulators (JavaScript engines do not vectorise, but they pipeline well).
 */

/** out[m, n] = Σ_k x[m, k] · w[n, k] (+ bias[n]) for x [M, K], w [N, K]. */
export function matmulTransposed(
  x: Float32Array,
  w: Float32Array,
  out: Float32Array,
  M: number,
  K: number,
  N: number,
  bias?: Float32Array,
): void {
  let m = 0;
  // Four rows at a time share each weight load: weights are the bytes that dominate.
  for (; m + 4 <= M; m += 4) {
    const x0 = m * K,
      x1 = x0 + K,
      x2 = x1 + K,
      x3 = x2 + K;
    for (let n = 0; n < N; n++) {
      const wo = n * K;
      let s0 = 0,
        s1 = 0,
        s2 = 0,
        s3 = 0;
      for (let k = 0; k < K; k++) {
        const wk = w[wo + k];
        s0 += x[x0 + k] * wk;
        s1 += x[x1 + k] * wk;
        s2 += x[x2 + k] * wk;
        s3 += x[x3 + k] * wk;
      }
      const b = bias ? bias[n] : 0;
      out[m * N + n] = s0 + b;
      out[(m + 1) * N + n] = s1 + b;
      out[(m + 2) * N + n] = s2 + b;
      out[(m + 3) * N + n] = s3 + b;
    }
  }
  for (; m < M; m++) {
    const xo = m * K;
    for (let n = 0; n < N; n++) {
      out[m * N + n] = dot(x, xo, w, n * K, K) + (bias ? bias[n] : 0);
    }
  }
}

/** Σ a[ao + i] · b[bo + i] for i < len, with four accumulators for instruction-level parallelism. */
export function dot(a: Float32Array, ao: number, b: Float32Array, bo: number, len: number): number {
  let s0 = 0,
    s1 = 0,
    s2 = 0,
    s3 = 0;
  let i = 0;
  for (; i + 4 <= len; i += 4) {
    s0 += a[ao + i] * b[bo + i];
    s1 += a[ao + i + 1] * b[bo + i + 1];
    s2 += a[ao + i + 2] * b[bo + i + 2];
    s3 += a[ao + i + 3] * b[bo + i + 3];
  }
  for (; i < len; i++) s0 += a[ao + i] * b[bo + i];
  return s0 + s1 + s2 + s3;
}

/** RMSNorm of each group of weight.length elements. */
export function rmsNorm(x: Float32Array, weight: Float32Array, eps: number, out: Float32Array): void {
  const g = weight.length;
  for (let o = 0; o < x.length; o += g) {
    let ss = 0;
    for (let i = 0; i < g; i++) ss += x[o + i] * x[o + i];
    // Rounded to float32 like the reference, so the normalised values match it bit for bit more often.
    const scale = Math.fround(1 / Math.sqrt(Math.fround(ss / g) + eps));
    for (let i = 0; i < g; i++) out[o + i] = weight[i] * Math.fround(x[o + i] * scale);
  }
}

/** Rotate-half RoPE of every head of one row, in place. cos/sin hold headDim/2 entries. */
export function ropeRow(
  x: Float32Array,
  offset: number,
  heads: number,
  headDim: number,
  cos: Float32Array,
  sin: Float32Array,
): void {
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    const base = offset + h * headDim;
    for (let i = 0; i < half; i++) {
      const a = x[base + i];
      const b = x[base + i + half];
      x[base + i] = a * cos[i] - b * sin[i];
      x[base + i + half] = b * cos[i] + a * sin[i];
    }
  }
}

/** In-place softmax of s[0..n). */
export function softmax(s: Float64Array, n: number): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (s[i] > max) max = s[i];
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = Math.exp(s[i] - max);
    s[i] = e;
    sum += e;
  }
  for (let i = 0; i < n; i++) s[i] /= sum;
}
