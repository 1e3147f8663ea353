/**
 * A linear layer's input statistics for GPTQ: H = XᵀX / rows over every input row x the layer
 * saw during calibration (the Hessian of its squared output error, up to a factor 2).
 */
export class Hessian {
  /** Upper triangle of Σ xᵀx, row-major [size, size]. */
  private readonly sum: Float64Array;
  rows = 0;

  constructor(readonly size: number) {
    this.sum = new Float64Array(size * size);
  }

  /** Adds the rows of a row-major [count, size] matrix. */
  add(x: Float32Array, count: number): void {
    const n = this.size;
    const sum = this.sum;
    // Four rows per sweep: the K² sums are read and written a quarter as often.
    let r = 0;
    for (; r + 4 <= count; r += 4) {
      const a = r * n;
      const b = a + n;
      const c = b + n;
      const d = c + n;
      for (let i = 0; i < n; i++) {
        const ai = x[a + i];
        const bi = x[b + i];
        const ci = x[c + i];
        const di = x[d + i];
        const out = i * n;
        for (let j = i; j < n; j++)
          sum[out + j] += ai * x[a + j] + bi * x[b + j] + ci * x[c + j] + di * x[d + j];
      }
    }
    for (; r < count; r++) {
      const a = r * n;
      for (let i = 0; i < n; i++) {
        const ai = x[a + i];
        const out = i * n;
        for (let j = i; j < n; j++) sum[out + j] += ai * x[a + j];
      }
    }
    this.rows += count;
  }

  /** The full symmetric mean matrix. */
  matrix(): Float64Array {
    const n = this.size;
    const h = new Float64Array(n * n);
    const scale = this.rows > 0 ? 1 / this.rows : 0;
    for (let i = 0; i < n; i++) {
      for (let j = i; j < n; j++) h[i * n + j] = h[j * n + i] = this.sum[i * n + j] * scale;
    }
    return h;
  }
}
