// RMSNorm, y = w * (x / sqrt(mean(x^2) + eps)) with w bf16, of each group of `group` floats (a
// whole row, or one attention head): one block per group. With q non-null (group % 32 == 0), y is
// also rounded to int8 per block of 32 for an integer-weight GEMV (quantize32's rule); with h
// non-null, y · FP8_X_SCALE is also written as half for an fp8-weight GEMV.
//
// Decode steps of quantized models fold each layer's first norm into the q/k/v product instead
// (NormFold in qgemv.cu); this kernel serves the others, and the per-head q/k norms. It runs on
// the step's critical path between two weight-streaming products, so it is written for latency:
// each thread holds its values as float4s in registers (one round trip to memory, not one per
// element), the norm weight is loaded before pdl_wait(), and a block of 32 for the int8 copy is
// 8 lanes' float4s (3 shuffles, not 10).

// float4s per thread: rows of up to NORM_SLOTS * 4 * 1024 values (set and checked by the host).
#ifndef NORM_SLOTS
#define NORM_SLOTS 4
#endif

// This thread's float4 indices in its group: threadIdx.x + s * blockDim.x for s < NORM_SLOTS.
#define FOR_SLOTS(s, i4, n4)                                       \
  _Pragma("unroll") for (int s = 0; s < NORM_SLOTS; s++)            \
    if (const int i4 = threadIdx.x + s * blockDim.x; i4 < (n4))

// y = v * scale * w for this thread's float4s of the group starting at float4 `base4`, and the
// int8 copy where q is non-null, the half copy where h is.
__device__ __forceinline__ void store_normed(const float4 (&v)[NORM_SLOTS], const uint2 (&w)[NORM_SLOTS],
                                             float scale, int n4, size_t base4, float* __restrict__ y,
                                             signed char* __restrict__ q, float2* __restrict__ qs,
                                             uint2* __restrict__ h) {
#pragma unroll
  for (int s = 0; s < NORM_SLOTS; s++) {
    const int i4 = threadIdx.x + s * blockDim.x;
    if (s * blockDim.x >= n4) break;  // uniform: no thread of the block has this slot
    const bool live = i4 < n4;
    float4 o{0.0f, 0.0f, 0.0f, 0.0f};
    if (live) {
      const float4 wf = bf16x4_to_f32(w[s]);
      o = float4{wf.x * (v[s].x * scale), wf.y * (v[s].y * scale), wf.z * (v[s].z * scale), wf.w * (v[s].w * scale)};
      reinterpret_cast<float4*>(y)[base4 + i4] = o;
      if (h)
        h[base4 + i4] = uint2{f32x2_to_h2(o.x * FP8_X_SCALE, o.y * FP8_X_SCALE),
                              f32x2_to_h2(o.z * FP8_X_SCALE, o.w * FP8_X_SCALE)};
    }
    if (q) quantize8x4(o, live, q, qs, (base4 + i4) * 4);
  }
}

// y = rmsnorm(x) of each group; q, qs, h as above.
extern "C" __global__ void __launch_bounds__(1024) rmsnorm(const float* __restrict__ x, const bf16_t* __restrict__ w,
                                                           float* __restrict__ y, int group, float eps,
                                                           signed char* __restrict__ q, float2* __restrict__ qs,
                                                           uint2* __restrict__ h) {
  const int n4 = group / 4;
  uint2 wv[NORM_SLOTS];
  FOR_SLOTS(s, i4, n4) wv[s] = reinterpret_cast<const uint2*>(w)[i4];
  pdl_start();
  const size_t base4 = (size_t)blockIdx.x * n4;
  float4 v[NORM_SLOTS];
  float ss = 0.0f;
  FOR_SLOTS(s, i4, n4) {
    v[s] = reinterpret_cast<const float4*>(x)[base4 + i4];
    ss += sum_squares(v[s]);
  }
  store_normed(v, wv, rsqrtf(block_sum(ss) / group + eps), n4, base4, y, q, qs, h);
}
