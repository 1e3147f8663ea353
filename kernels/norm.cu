// RMSNorm of each group of `group` floats (a whole row, or one attention head): one block per
// group. y = w * (x / sqrt(mean(x^2) + eps)), w bf16.
extern "C" __global__ void rmsnorm(const float* __restrict__ x, const bf16_t* __restrict__ w,
                                   float* __restrict__ y, int group, float eps) {
  pdl_start();
  const float* xr = x + (size_t)blockIdx.x * group;
  float* yr = y + (size_t)blockIdx.x * group;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < group; i += blockDim.x) ss += xr[i] * xr[i];
  const float scale = rsqrtf(block_sum(ss) / group + eps);
  for (int i = threadIdx.x; i < group; i += blockDim.x) yr[i] = bf16_to_f32(w[i]) * (xr[i] * scale);
}

// sum = x + delta; normed = rmsnorm(sum): the residual add fused with the next block's norm.
// One block per row.
extern "C" __global__ void add_rmsnorm(const float* __restrict__ x, const float* __restrict__ delta,
                                       const bf16_t* __restrict__ w, float* __restrict__ sum,
                                       float* __restrict__ normed, int cols, float eps) {
  pdl_start();
  const size_t base = (size_t)blockIdx.x * cols;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) {
    const float v = x[base + i] + delta[base + i];
    sum[base + i] = v;
    ss += v * v;
  }
  const float scale = rsqrtf(block_sum(ss) / cols + eps);
  for (int i = threadIdx.x; i < cols; i += blockDim.x)
    normed[base + i] = bf16_to_f32(w[i]) * (sum[base + i] * scale);
}
