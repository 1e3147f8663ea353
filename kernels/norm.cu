// RMSNorm of each group of `group` floats (a whole row, or one attention head): one block per
// group. y = w * (x / sqrt(mean(x^2) + eps)), w bf16. With q non-null (group % 32 == 0), y is
// also rounded to int8 per block of 32 for an integer-weight GEMV (quantize32).
extern "C" __global__ void rmsnorm(const float* __restrict__ x, const bf16_t* __restrict__ w,
                                   float* __restrict__ y, int group, float eps, signed char* __restrict__ q,
                                   float2* __restrict__ qs) {
  pdl_start();
  const float* xr = x + (size_t)blockIdx.x * group;
  float* yr = y + (size_t)blockIdx.x * group;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < group; i += blockDim.x) ss += xr[i] * xr[i];
  const float scale = rsqrtf(block_sum(ss) / group + eps);
  for (int i = threadIdx.x; i < group; i += blockDim.x) {
    yr[i] = bf16_to_f32(w[i]) * (xr[i] * scale);
    if (q) quantize32(yr[i], q, qs, (size_t)blockIdx.x * group + i);
  }
}

// sum = x + delta; normed = rmsnorm(sum): the residual add fused with the next block's norm.
// One block per row; q as in rmsnorm.
extern "C" __global__ void add_rmsnorm(const float* __restrict__ x, const float* __restrict__ delta,
                                       const bf16_t* __restrict__ w, float* __restrict__ sum,
                                       float* __restrict__ normed, int cols, float eps, signed char* __restrict__ q,
                                       float2* __restrict__ qs) {
  pdl_start();
  const size_t base = (size_t)blockIdx.x * cols;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) {
    const float v = x[base + i] + delta[base + i];
    sum[base + i] = v;
    ss += v * v;
  }
  const float scale = rsqrtf(block_sum(ss) / cols + eps);
  for (int i = threadIdx.x; i < cols; i += blockDim.x) {
    normed[base + i] = bf16_to_f32(w[i]) * (sum[base + i] * scale);
    if (q) quantize32(normed[base + i], q, qs, base + i);
  }
}
