// Rotary embedding, "rotate half" layout: element i of a head pairs with element i + HEAD_DIM/2.
// grid (rows, heads), HEAD_DIM/2 threads. The angle is computed in float32 like the reference.
extern "C" __global__ void rope(const float* __restrict__ x, float* __restrict__ y,
                                const int* __restrict__ positions, const float* __restrict__ inv_freq,
                                int row_width) {
  const int half = HEAD_DIM / 2;
  const int i = threadIdx.x;
  const size_t base = (size_t)blockIdx.x * row_width + blockIdx.y * HEAD_DIM;
  const float angle = (float)positions[blockIdx.x] * inv_freq[i];
  float s, c;
  sincosf(angle, &s, &c);
  const float a = x[base + i], b = x[base + i + half];
  y[base + i] = a * c - b * s;
  y[base + i + half] = b * c + a * s;
}
