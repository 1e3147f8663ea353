// Attention of each query row over its sequence's paged KV cache (flash-decoding). The keys of
// a row are split into `splits` contiguous ranges, one block per (row, kv head, range); the
// block serves all GROUP query heads that share the kv head, so each key and value is read once
// per group. attention_combine merges the ranges. Grid sizes depend only on rows, heads and
// splits, never on the context length, so a captured graph replays at any length.
//
// The block's range is cut into one contiguous part per warp; a warp takes 32 positions at a time:
// for q·k each lane owns one position (its key row read with independent 16-byte loads), then the
// softmax weights are broadcast and, for p·v, lanes own head dimensions (value rows read
// coalesced, VALUE_BATCH rows in flight). HEAD_DIM and GROUP are compile-time constants.

#define PER_LANE ((HEAD_DIM + 31) / 32)
#define WARPS 4
#define VALUE_BATCH 8

// Partial results: max[rows, heads, splits], sum[...], acc[rows, heads, splits, HEAD_DIM].
extern "C" __global__ void __launch_bounds__(WARPS * 32) attention_partial(
    const float* __restrict__ q, const float* __restrict__ kcache, const float* __restrict__ vcache,
    const int* __restrict__ positions, const int* __restrict__ block_tables, float* __restrict__ part_max,
    float* __restrict__ part_sum, float* __restrict__ part_acc, int num_kv_heads, int max_blocks,
    int block_size, int window, int splits, float scale) {
  pdl_start();
  const int row = blockIdx.x, kv_head = blockIdx.y, split = blockIdx.z;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int num_heads = num_kv_heads * GROUP;
  const int pos = positions[row];
  const int first = window > 0 ? max(0, pos - window + 1) : 0;
  const int n = pos - first + 1;
  const int per_split = (n + splits - 1) / splits;
  const int begin = first + split * per_split;
  const int end = min(pos + 1, begin + per_split);
  const int* table = block_tables + (size_t)row * max_blocks;

  // The group's queries, pre-scaled, in shared memory: every lane reads all of them.
  __shared__ float sq[GROUP][HEAD_DIM];
  for (int i = threadIdx.x; i < GROUP * HEAD_DIM; i += blockDim.x)
    sq[i / HEAD_DIM][i % HEAD_DIM] = q[((size_t)row * num_heads + kv_head * GROUP) * HEAD_DIM + i] * scale;
  __syncthreads();

  float m[GROUP], l[GROUP], acc[GROUP][PER_LANE];
#pragma unroll
  for (int g = 0; g < GROUP; g++) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (int i = 0; i < PER_LANE; i++) acc[g][i] = 0.0f;
  }

  const int per_warp = (end - begin + WARPS - 1) / WARPS;
  const int warp_begin = begin + warp * per_warp;
  const int warp_end = min(end, warp_begin + per_warp);
  for (int tile = warp_begin; tile < warp_end; tile += 32) {
    const int j = tile + lane;
    const bool valid = j < warp_end;
    const int slot = valid ? table[j / block_size] * block_size + j % block_size : 0;
    // q·k for this lane's position and every head of the group.
    float s[GROUP];
#pragma unroll
    for (int g = 0; g < GROUP; g++) s[g] = 0.0f;
    if (valid) {
      const float4* kr = reinterpret_cast<const float4*>(kcache + ((size_t)slot * num_kv_heads + kv_head) * HEAD_DIM);
#pragma unroll
      for (int d4 = 0; d4 < HEAD_DIM / 4; d4++) {
        const float4 k4 = kr[d4];
#pragma unroll
        for (int g = 0; g < GROUP; g++)
          s[g] += sq[g][4 * d4] * k4.x + sq[g][4 * d4 + 1] * k4.y + sq[g][4 * d4 + 2] * k4.z + sq[g][4 * d4 + 3] * k4.w;
      }
    }
    // Online softmax over the tile, per head.
    float p[GROUP];
#pragma unroll
    for (int g = 0; g < GROUP; g++) {
      const float tile_max = warp_max(valid ? s[g] : -INFINITY);
      const float m_new = fmaxf(m[g], tile_max);
      const float correction = expf(m[g] - m_new);
      p[g] = valid ? expf(s[g] - m_new) : 0.0f;
      l[g] = l[g] * correction + warp_sum(p[g]);
#pragma unroll
      for (int i = 0; i < PER_LANE; i++) acc[g][i] *= correction;
      m[g] = m_new;
    }
    // p·v: lanes own dimensions; position t's weight is broadcast from lane t.
    const int count = min(32, warp_end - tile);
    for (int t0 = 0; t0 < count; t0 += VALUE_BATCH) {
      float v[VALUE_BATCH][PER_LANE];
#pragma unroll
      for (int u = 0; u < VALUE_BATCH; u++) {
        const int vslot = __shfl_sync(0xffffffffu, slot, (t0 + u) & 31);
        const float* vr = vcache + ((size_t)vslot * num_kv_heads + kv_head) * HEAD_DIM;
#pragma unroll
        for (int i = 0; i < PER_LANE; i++)
          v[u][i] = t0 + u < count && lane + 32 * i < HEAD_DIM ? vr[lane + 32 * i] : 0.0f;
      }
#pragma unroll
      for (int g = 0; g < GROUP; g++) {
#pragma unroll
        for (int u = 0; u < VALUE_BATCH; u++) {
          const float w = __shfl_sync(0xffffffffu, p[g], (t0 + u) & 31);
#pragma unroll
          for (int i = 0; i < PER_LANE; i++) acc[g][i] += w * v[u][i];
        }
      }
    }
  }

  // Merge the block's warps, one head at a time.
  __shared__ float sm[WARPS], sl[WARPS], sacc[WARPS][PER_LANE * 32];
#pragma unroll
  for (int g = 0; g < GROUP; g++) {
    __syncthreads();
    if (lane == 0) {
      sm[warp] = m[g];
      sl[warp] = l[g];
    }
#pragma unroll
    for (int i = 0; i < PER_LANE; i++) sacc[warp][lane + 32 * i] = acc[g][i];
    __syncthreads();
    if (warp == 0) {
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
      const size_t p = ((size_t)row * num_heads + kv_head * GROUP + g) * splits + split;
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
  }
}

// out[row, head] = sum over splits of acc·exp(max - M) / sum over splits of sum·exp(max - M).
// grid (rows, heads), HEAD_DIM threads. With q non-null (HEAD_DIM % 32 == 0), out is also rounded
// to int8 per block of 32 for an integer-weight GEMV (quantize32).
extern "C" __global__ void attention_combine(const float* __restrict__ part_max,
                                             const float* __restrict__ part_sum,
                                             const float* __restrict__ part_acc, float* __restrict__ out,
                                             int num_heads, int splits, signed char* __restrict__ q,
                                             float2* __restrict__ qs) {
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
  const size_t i = ((size_t)row * num_heads + head) * HEAD_DIM + d;
  out[i] = value / total;
  if (q) quantize32(out[i], q, qs, i);
}
