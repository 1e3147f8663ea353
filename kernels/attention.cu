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

// Prompt-sized steps: a block serves PAIRS (query row, head) pairs — TILE_ROWS consecutive rows
// of one sequence times the GROUP heads of one kv head — and walks the keys in tiles of 32 staged
// in shared memory, so each key and value is read from L2 once per block instead of once per
// row. Within a tile a lane owns a key for q·k and a head dimension for p·v, as in decode.
// Rows of the block that belong to another sequence than its first row are done one sequence
// run at a time. Causal: row at position p sees keys [max(0, p - window + 1), p].
// Needs HEAD_DIM <= 128 (shared memory) and GROUP <= PAIRS; otherwise the host uses the decode kernel.
#define PAIRS 16
#define TILE_ROWS (PAIRS / GROUP)
#define KEYS 32
#if HEAD_DIM <= 128 && GROUP <= PAIRS

extern "C" __global__ void __launch_bounds__(WARPS * 32) attention_prefill(
    const float* __restrict__ q, const float* __restrict__ kcache, const float* __restrict__ vcache,
    const int* __restrict__ positions, const int* __restrict__ block_tables,
    const int* __restrict__ seq_first_row, float* __restrict__ out, int rows, int num_kv_heads,
    int max_blocks, int block_size, int window, float scale) {
  pdl_start();
  const int kv_head = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int num_heads = num_kv_heads * GROUP;
  const int tile_first = blockIdx.x * TILE_ROWS;
  // sk rows are padded by one word: in q·k each lane reads its own key row at the same column.
  __shared__ float sk[KEYS][HEAD_DIM + 1], sv[KEYS][HEAD_DIM], sq[PAIRS][HEAD_DIM];
  __shared__ int sslot[KEYS];

  // Runs of rows of one sequence inside this block's rows.
  for (int run = tile_first; run < min(rows, tile_first + TILE_ROWS);) {
    int run_end = run + 1;
    while (run_end < min(rows, tile_first + TILE_ROWS) && seq_first_row[run_end] == seq_first_row[run]) run_end++;
    const int* table = block_tables + (size_t)run * max_blocks;
    const int last_pos = positions[run_end - 1];
    const int key_begin = window > 0 ? max(0, positions[run] - window + 1) : 0;

    // Queries of the run's pairs, pre-scaled. Pair p = (row run + p / GROUP, head p % GROUP).
    const int pairs = (run_end - run) * GROUP;
    for (int i = threadIdx.x; i < pairs * HEAD_DIM; i += blockDim.x) {
      const int p = i / HEAD_DIM, d = i % HEAD_DIM;
      sq[p][d] = q[((size_t)(run + p / GROUP) * num_heads + kv_head * GROUP + p % GROUP) * HEAD_DIM + d] * scale;
    }
    // Each warp owns pairs warp, warp + WARPS, ...
    float m[PAIRS / WARPS], l[PAIRS / WARPS], acc[PAIRS / WARPS][PER_LANE];
#pragma unroll
    for (int k = 0; k < PAIRS / WARPS; k++) {
      m[k] = -INFINITY;
      l[k] = 0.0f;
#pragma unroll
      for (int i = 0; i < PER_LANE; i++) acc[k][i] = 0.0f;
    }

    for (int tile = key_begin; tile <= last_pos; tile += KEYS) {
      __syncthreads();  // the previous tile (and sq's writes) are done
      if (threadIdx.x < KEYS) {
        const int j = tile + threadIdx.x;
        sslot[threadIdx.x] = j <= last_pos ? table[j / block_size] * block_size + j % block_size : -1;
      }
      __syncthreads();
      for (int i = threadIdx.x; i < KEYS * HEAD_DIM; i += blockDim.x) {
        const int t = i / HEAD_DIM, d = i % HEAD_DIM;
        const int slot = sslot[t];
        const size_t off = ((size_t)(slot < 0 ? 0 : slot) * num_kv_heads + kv_head) * HEAD_DIM + d;
        sk[t][d] = slot < 0 ? 0.0f : kcache[off];
        sv[t][d] = slot < 0 ? 0.0f : vcache[off];
      }
      __syncthreads();
#pragma unroll
      for (int k = 0; k < PAIRS / WARPS; k++) {
        const int p = warp + k * WARPS;
        if (p >= pairs) break;
        const int pos = positions[run + p / GROUP];
        const int first = window > 0 ? max(0, pos - window + 1) : 0;
        const int j = tile + lane;
        const bool valid = j >= first && j <= pos;
        float s = 0.0f;
        if (valid) {
#pragma unroll 8
          for (int d = 0; d < HEAD_DIM; d++) s += sq[p][d] * sk[lane][d];
        }
        const float tile_max = warp_max(valid ? s : -INFINITY);
        if (tile_max == -INFINITY) continue;  // no visible key in this tile for this row
        const float m_new = fmaxf(m[k], tile_max);
        const float correction = expf(m[k] - m_new);
        const float w = valid ? expf(s - m_new) : 0.0f;
        l[k] = l[k] * correction + warp_sum(w);
        m[k] = m_new;
#pragma unroll
        for (int i = 0; i < PER_LANE; i++) acc[k][i] *= correction;
        for (int t = 0; t < KEYS; t++) {
          const float wt = __shfl_sync(0xffffffffu, w, t);
#pragma unroll
          for (int i = 0; i < PER_LANE; i++)
            if (lane + 32 * i < HEAD_DIM) acc[k][i] += wt * sv[t][lane + 32 * i];
        }
      }
    }
#pragma unroll
    for (int k = 0; k < PAIRS / WARPS; k++) {
      const int p = warp + k * WARPS;
      if (p >= pairs) break;
      float* o = out + ((size_t)(run + p / GROUP) * num_heads + kv_head * GROUP + p % GROUP) * HEAD_DIM;
#pragma unroll
      for (int i = 0; i < PER_LANE; i++)
        if (lane + 32 * i < HEAD_DIM) o[lane + 32 * i] = acc[k][i] / l[k];
    }
    run = run_end;
    __syncthreads();  // sq is rewritten by the next run
  }
}
#endif
