// Attention of each query row over its sequence's paged KV cache, for steps of fewer than 64 rows
// (decode, speculative verification, batched decode, short prompts), with the rotary embedding and
// the KV-cache write folded in: one launch per layer instead of three (rope + store, partial
// attention, combine). Each of those launches cost a few microseconds of latency per layer, about
// 0.5 ms of an 8B decode step (measured by leaving them out, docs/BENCHMARKS.md).
//
// grid (rows, kv heads, splits), launched as clusters of `splits` blocks along z (Hopper). A
// block serves all GROUP query heads of its kv head over one contiguous range of key positions
// (flash-decoding), so each key and value is read once per group. The cluster's blocks then merge
// their partial softmax results through distributed shared memory, so no second kernel and no
// global scratch are needed. Grid sizes depend only on rows, heads and splits, never on the
// context length, so a captured graph replays at any length.
//
// Keys and values of this step's own rows are not in the cache yet (other blocks write them in
// this same launch), so a row reads the keys of positions >= fresh[row] (the first position its
// sequence computes in this step) from the step's k and v, rotating those keys itself. The block
// whose range holds the row's own position writes the row's rotated key and its value to the
// cache, for later steps. With rotate == 0, q is already rotated and everything is cached
// (rope_store ran first; for steps whose fresh keys do not fit in shared memory).
//
// Within a block the range is cut into one contiguous part per warp; a warp takes 32 positions at
// a time: for q·k each lane owns one position (its key row read with independent 16-byte loads),
// then the softmax weights are broadcast and, for p·v, lanes own head dimensions (value rows read
// coalesced, VALUE_BATCH rows in flight). HEAD_DIM and GROUP are compile-time constants.

#define PER_LANE ((HEAD_DIM + 31) / 32)
#define WARPS 8
#define VALUE_BATCH 8
#define HALF (HEAD_DIM / 2)
// Fresh keys a block holds rotated in shared memory (set by the host, which routes steps with
// longer runs through rope_store; 28 KB of keys keeps the kernel within 48 KB for GROUP <= 16).
#ifndef MAX_FRESH
#define MAX_FRESH (7168 / HEAD_DIM)
#endif
// Heads whose warp results are merged at once (shared memory shared with the fresh keys).
#define MERGE_HEADS (GROUP < 4 ? GROUP : 4)
// Most blocks in a cluster (the portable cluster size).
#define MAX_SPLITS 8

// Shared-memory address of p in the cluster's block `rank`, read as a float.
__device__ __forceinline__ float load_cluster(const float* p, u32 rank) {
#if __CUDA_ARCH__ >= 900
  u32 remote;
  float v;
  asm("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(shared_addr(p)), "r"(rank));
  asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(remote));
  return v;
#else
  return *p;  // clusters of one block
#endif
}

// Every thread of every block of the cluster arrives before any continues; shared-memory writes
// before it are visible to the cluster after it.
__device__ __forceinline__ void cluster_sync() {
#if __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
#else
  __syncthreads();
#endif
}

extern "C" __global__ void __launch_bounds__(WARPS * 32) attention_decode(
    const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
    float* __restrict__ kcache, float* __restrict__ vcache, const int* __restrict__ positions,
    const int* __restrict__ fresh_from, const int* __restrict__ slots, const int* __restrict__ block_tables,
    const float* __restrict__ inv_freq, float* __restrict__ out, signed char* __restrict__ out_q,
    float2* __restrict__ out_qs, int num_kv_heads, int max_blocks, int block_size, int window, float scale,
    int rotate) {
  const int row = blockIdx.x, kv_head = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int num_heads = num_kv_heads * GROUP;
  const int pos = positions[row];
  const int fresh = rotate ? fresh_from[row] : pos + 1;
  const int first = window > 0 ? max(0, pos - window + 1) : 0;
  const int n = pos - first + 1;
  const int per_split = (n + splits - 1) / splits;
  const int begin = min(pos + 1, first + split * per_split);
  const int end = min(pos + 1, begin + per_split);
  const int* table = block_tables + (size_t)row * max_blocks;
  const size_t kv_stride = (size_t)num_kv_heads * HEAD_DIM;  // floats per row of k, v and the cache

  // Cached keys and values never depend on the previous kernel: start pulling this warp's first
  // 32 into L2 while that kernel finishes (dependent launch).
  const int per_warp = (end - begin + WARPS - 1) / WARPS;
  const int warp_begin = begin + warp * per_warp;
  const int warp_end = min(end, warp_begin + per_warp);
  {
    const int j = warp_begin + lane;
    if (j < warp_end && j < fresh) {
      const size_t at = (size_t)(table[j / block_size] * block_size + j % block_size) * kv_stride +
                        (size_t)kv_head * HEAD_DIM;
      for (int b = 0; b < HEAD_DIM * 4; b += 128) {
        asm volatile("prefetch.global.L2 [%0];" ::"l"(reinterpret_cast<const char*>(kcache + at) + b));
        asm volatile("prefetch.global.L2 [%0];" ::"l"(reinterpret_cast<const char*>(vcache + at) + b));
      }
    }
  }
  pdl_start();

  // The group's queries, rotated and pre-scaled; the fresh keys of this block's range, rotated
  // (later reused for merging the warps' results).
  __shared__ float sq[GROUP][HEAD_DIM];
  __shared__ __align__(16) union {
    float keys[MAX_FRESH][HEAD_DIM];
    struct {
      float m[WARPS][GROUP], l[WARPS][GROUP], acc[WARPS][MERGE_HEADS][HEAD_DIM];
    } warps;
  } sh;
  float(*sk)[HEAD_DIM] = sh.keys;
  const int fresh_begin = max(begin, fresh);
  const int fresh_count = max(0, end - fresh_begin);
  for (int i = threadIdx.x; i < GROUP * HALF; i += blockDim.x) {
    const int g = i / HALF, d = i % HALF;
    const float* qr = q + ((size_t)row * num_heads + kv_head * GROUP + g) * HEAD_DIM;
    float a = qr[d], b = qr[d + HALF];
    if (rotate) rope_pair(a, b, pos, inv_freq[d]);
    sq[g][d] = a * scale;
    sq[g][d + HALF] = b * scale;
  }
  for (int i = threadIdx.x; i < fresh_count * HALF; i += blockDim.x) {
    const int j = fresh_begin + i / HALF, d = i % HALF;
    const size_t src = (size_t)(row - (pos - j)) * kv_stride + (size_t)kv_head * HEAD_DIM;
    float a = k[src + d], b = k[src + d + HALF];
    rope_pair(a, b, j, inv_freq[d]);
    sk[j - fresh_begin][d] = a;
    sk[j - fresh_begin][d + HALF] = b;
    if (j == pos) {  // this row's own key and value, for the steps after this one
      const size_t dst = (size_t)slots[row] * kv_stride + (size_t)kv_head * HEAD_DIM;
      kcache[dst + d] = a;
      kcache[dst + d + HALF] = b;
      vcache[dst + d] = v[src + d];
      vcache[dst + d + HALF] = v[src + d + HALF];
    }
  }
  __syncthreads();

  float m[GROUP], l[GROUP], acc[GROUP][PER_LANE];
#pragma unroll
  for (int g = 0; g < GROUP; g++) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (int i = 0; i < PER_LANE; i++) acc[g][i] = 0.0f;
  }

  for (int tile = warp_begin; tile < warp_end; tile += 32) {
    const int j = tile + lane;
    const bool valid = j < warp_end;
    // Where this lane's key and value are: the cache, or (fresh) shared memory and the step's v.
    const float* key = sk[0];
    const float* value = v;
    if (valid && j >= fresh) {
      key = sk[j - fresh_begin];
      value = v + (size_t)(row - (pos - j)) * kv_stride + (size_t)kv_head * HEAD_DIM;
    } else if (valid) {
      const size_t at = (size_t)(table[j / block_size] * block_size + j % block_size) * kv_stride +
                        (size_t)kv_head * HEAD_DIM;
      key = kcache + at;
      value = vcache + at;
    }
    // q·k for this lane's position and every head of the group.
    float s[GROUP];
#pragma unroll
    for (int g = 0; g < GROUP; g++) s[g] = 0.0f;
    if (valid) {
      const float4* kr = reinterpret_cast<const float4*>(key);
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
    // p·v: lanes own dimensions; position t's weight and value row are broadcast from lane t.
    const int count = min(32, warp_end - tile);
    const unsigned long long vaddr = reinterpret_cast<unsigned long long>(value);
    for (int t0 = 0; t0 < count; t0 += VALUE_BATCH) {
      float vv[VALUE_BATCH][PER_LANE];
#pragma unroll
      for (int u = 0; u < VALUE_BATCH; u++) {
        const int from = (t0 + u) & 31;
        const unsigned lo = __shfl_sync(0xffffffffu, (unsigned)vaddr, from);
        const unsigned hi = __shfl_sync(0xffffffffu, (unsigned)(vaddr >> 32), from);
        const float* vr = reinterpret_cast<const float*>(((unsigned long long)hi << 32) | lo);
#pragma unroll
        for (int i = 0; i < PER_LANE; i++)
          vv[u][i] = t0 + u < count && lane + 32 * i < HEAD_DIM ? vr[lane + 32 * i] : 0.0f;
      }
#pragma unroll
      for (int g = 0; g < GROUP; g++) {
#pragma unroll
        for (int u = 0; u < VALUE_BATCH; u++) {
          const float w = __shfl_sync(0xffffffffu, p[g], (t0 + u) & 31);
#pragma unroll
          for (int i = 0; i < PER_LANE; i++) acc[g][i] += w * vv[u][i];
        }
      }
    }
  }

  // Merge the block's warps into the block's partial result: its max, sum and unnormalised
  // output per head, kept in shared memory for the cluster.
  __shared__ float part_m[GROUP], part_l[GROUP], part_acc[GROUP][HEAD_DIM];
#pragma unroll
  for (int g0 = 0; g0 < GROUP; g0 += MERGE_HEADS) {
    __syncthreads();  // every warp is done with the fresh keys, or with the previous heads
#pragma unroll
    for (int g = g0; g < g0 + MERGE_HEADS; g++) {
      if (lane == 0) {
        sh.warps.m[warp][g] = m[g];
        sh.warps.l[warp][g] = l[g];
      }
#pragma unroll
      for (int i = 0; i < PER_LANE; i++)
        if (lane + 32 * i < HEAD_DIM) sh.warps.acc[warp][g - g0][lane + 32 * i] = acc[g][i];
    }
    __syncthreads();
    for (int o = threadIdx.x; o < MERGE_HEADS * HEAD_DIM; o += blockDim.x) {
      const int g = g0 + o / HEAD_DIM, d = o % HEAD_DIM;
      float mm = -INFINITY;
#pragma unroll
      for (int w = 0; w < WARPS; w++) mm = fmaxf(mm, sh.warps.m[w][g]);
      float sum = 0.0f, value = 0.0f;
#pragma unroll
      for (int w = 0; w < WARPS; w++) {
        const float wm = sh.warps.m[w][g];
        const float f = wm == -INFINITY ? 0.0f : expf(wm - mm);
        sum += sh.warps.l[w][g] * f;
        value += sh.warps.acc[w][g - g0][d] * f;
      }
      part_acc[g][d] = value;
      if (d == 0) {
        part_m[g] = mm;
        part_l[g] = sum;
      }
    }
  }
  cluster_sync();

  // The cluster's blocks share the group's GROUP × HEAD_DIM outputs, 32 at a time per warp: each
  // merges the splits' partials of its outputs. With out_q non-null (HEAD_DIM % 32 == 0), outputs
  // are also rounded to int8 per block of 32 for an integer-weight GEMV (quantize32).
  const int outputs = GROUP * HEAD_DIM;
  for (int c = split * WARPS + warp; c * 32 < outputs; c += splits * WARPS) {
    const int o = c * 32 + lane;
    const bool live = o < outputs;
    const int g = live ? o / HEAD_DIM : 0, d = live ? o % HEAD_DIM : 0;
    // Every split's values are loaded before any is used: remote shared memory is slow to answer.
    float pm[MAX_SPLITS], pl[MAX_SPLITS], pa[MAX_SPLITS];
#pragma unroll
    for (int r = 0; r < MAX_SPLITS; r++) {
      pm[r] = r < splits ? load_cluster(&part_m[g], r) : -INFINITY;
      pl[r] = r < splits ? load_cluster(&part_l[g], r) : 0.0f;
      pa[r] = r < splits ? load_cluster(&part_acc[g][d], r) : 0.0f;
    }
    float mm = -INFINITY;
#pragma unroll
    for (int r = 0; r < MAX_SPLITS; r++) mm = fmaxf(mm, pm[r]);
    float total = 0.0f, value = 0.0f;
#pragma unroll
    for (int r = 0; r < MAX_SPLITS; r++) {
      const float f = pm[r] == -INFINITY ? 0.0f : expf(pm[r] - mm);
      total += pl[r] * f;
      value += pa[r] * f;
    }
    const size_t i = ((size_t)row * num_heads + kv_head * GROUP + g) * HEAD_DIM + d;
    if (live) out[i] = value / total;
    if (out_q) quantize32(value / total, out_q, out_qs, i);
  }
  cluster_sync();  // no block leaves while another may still read its shared memory
}
