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
    for (let r = 0; r < count; r++) {
      const row = r * n;
      for (let i = 0; i < n; i++) {
        const xi = x[row + i];
        if (xi === 0) continue;
        const out = i * n;
        for (let j = i; j < n; j++) sum[out + j] += xi * x[row + j];
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
