// The weight stream of the measurement tools: a kernel that streams its block's share of n
// 16-byte words from src with tachyon's own weight loads (load_stream), kDepth loads in flight a
// thread, the first ones before griddepcontrol.wait as tachyon's GEMVs issue theirs. It writes a
// sum nobody reads, so that the loads stay. Include after kernels/common.cuh.
#pragma once

template <int kThreads, int kDepth>
__global__ void __launch_bounds__(kThreads) stream(const uint4* src, size_t n, float* sink) {
  const size_t per_block = (n + gridDim.x - 1) / gridDim.x;
  const size_t begin = blockIdx.x * per_block, end = min(n, begin + per_block);
  uint4 r[kDepth];
  size_t at = begin + threadIdx.x;
#pragma unroll
  for (int d = 0; d < kDepth; d++)
    if (at + d * kThreads < end) r[d] = load_stream(src + at + d * kThreads);
  pdl_start();
  unsigned acc = 0;
  for (; at < end; at += kDepth * kThreads) {
#pragma unroll
    for (int d = 0; d < kDepth; d++) {
      const size_t i = at + d * kThreads;
      if (i >= end) break;
      acc ^= r[d].x + r[d].y + r[d].z + r[d].w;
      if (i + kDepth * kThreads < end) r[d] = load_stream(src + i + kDepth * kThreads);
    }
  }
  if (acc == 0x12345678u) *sink = (float)acc;
}
