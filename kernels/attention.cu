// Attention of each query row over its sequence's paged KV cache (flash-decoding). The keys of
// a row are split into `splits` contiguous ranges, one block each; a block's warps walk their
// range keeping an online softmax (running max, sum, weighted values). attention_combine merges
// the ranges. Grid sizes depend only on rows, heads and splits, never on the context length,
// so a captured graph replays at any length. HEAD_DIM is a compile-time constant.

#define PER_LANE ((HEAD_DIM + 31) / 32)
#define WARPS 4

// Partial results: max[rows, heads, splits], sum[...], acc[rows, heads, splits, HEAD_DIM].
extern "C" __global__ void __launch_bounds__(WARPS * 32) attention_partial(
    const float* __restrict__ q, const float* __restrict__ kcache, const float* __restrict__ vcache,
    const int* __restrict__ positions, const int* __restrict__ block_tables, float* __restrict__ part_max,
    float* __restrict__ part_sum, float* __restrict__ part_acc, int num_heads, int num_kv_heads,
    int max_blocks, int block_size, int window, int splits, float scale) {
  pdl_start();
  const int row = blockIdx.x, head = blockIdx.y, split = blockIdx.z;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int kv_head = head / (num_heads / num_kv_heads);
  const int pos = positions[row];
  const int first = window > 0 ? max(0, pos - window + 1) : 0;
  const int n = pos - first + 1;
  const int per_split = (n + splits - 1) / splits;
  const int begin = first + split * per_split;
  const int end = min(pos + 1, begin + per_split);
  const int* table = block_tables + (size_t)row * max_blocks;

  float qv[PER_LANE];
#pragma unroll
  for (int i = 0; i < PER_LANE; i++) {
    const int d = lane + 32 * i;
    qv[i] = d < HEAD_DIM ? q[((size_t)row * num_heads + head) * HEAD_DIM + d] * scale : 0.0f;
  }
  float m = -INFINITY, l = 0.0f, acc[PER_LANE];
#pragma unroll
  for (int i = 0; i < PER_LANE; i++) acc[i] = 0.0f;

  for (int j = begin + warp; j < end; j += WARPS) {
    const int slot = table[j / block_size] * block_size + j % block_size;
    const size_t off = ((size_t)slot * num_kv_heads + kv_head) * HEAD_DIM;
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < PER_LANE; i++) {
      const int d = lane + 32 * i;
      if (d < HEAD_DIM) s += qv[i] * kcache[off + d];
    }
    s = warp_sum(s);
    const float m_new = fmaxf(m, s);
    const float correction = expf(m - m_new);
    const float p = expf(s - m_new);
    l = l * correction + p;
#pragma unroll
    for (int i = 0; i < PER_LANE; i++) {
      const int d = lane + 32 * i;
      acc[i] = acc[i] * correction + (d < HEAD_DIM ? p * vcache[off + d] : 0.0f);
    }
    m = m_new;
  }

  // Merge the block's warps.
  __shared__ float sm[WARPS], sl[WARPS], sacc[WARPS][PER_LANE * 32];
  if (lane == 0) {
    sm[warp] = m;
    sl[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < PER_LANE; i++) sacc[warp][lane + 32 * i] = acc[i];
  __syncthreads();
  if (warp != 0) return;
  float mm = -INFINITY;
  for (int w = 0; w < WARPS; w++) mm = fmaxf(mm, sm[w]);
  float ll = 0.0f, out[PER_LANE];
#pragma unroll
  for (int i = 0; i < PER_LANE; i++) out[i] = 0.0f;
  for (int w = 0; w < WARPS; w++) {
    const float f = sm[w] == -INFINITY ? 0.0f : expf(sm[w] - mm);
    ll += sl[w] * f;
#pragma unroll
    for (int i = 0; i < PER_LANE; i++) out[i] += sacc[w][lane + 32 * i] * f;
  }
  const size_t p = ((size_t)row * num_heads + head) * splits + split;
  if (lane == 0) {
    part_max[p] = mm;
    part_sum[p] = ll;
  }
#pragma unroll
  for (int i = 0; i < PER_LANE; i++) {
    const int d = lane + 32 * i;
    if (d < HEAD_DIM) part_acc[p * HEAD_DIM + d] = out[i];
  }
}

// out[row, head] = sum over splits of acc·exp(max - M) / sum over splits of sum·exp(max - M).
// grid (rows, heads), HEAD_DIM threads.
extern "C" __global__ void attention_combine(const float* __restrict__ part_max,
                                             const float* __restrict__ part_sum,
                                             const float* __restrict__ part_acc, float* __restrict__ out,
                                             int num_heads, int splits) {
  pdl_start();
  const int row = blockIdx.x, head = blockIdx.y, d = threadIdx.x;
  const size_t base = ((size_t)row * num_heads + head) * splits;
  float mm = -INFINITY;
  for (int s = 0; s < splits; s++) mm = fmaxf(mm, part_max[base + s]);
  float total = 0.0f, value = 0.0f;
  for (int s = 0; s < splits; s++) {
    const float f = part_max[base + s] == -INFINITY ? 0.0f : expf(part_max[base + s] - mm);
    total += part_sum[base + s] * f;
    value += part_acc[(base + s) * HEAD_DIM + d] * f;
  }
  out[((size_t)row * num_heads + head) * HEAD_DIM + d] = value / total;
}
