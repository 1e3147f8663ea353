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
// Within a block the range is cut into one contiguous part per warp; a warp takes BATCH positions
// at a time with lanes owning head dimensions (keys and values read as coalesced rows, all of a
// batch in flight at once), sums its q·k products across lanes in one reduce-scatter, and keeps
// the online softmax per head. HEAD_DIM and GROUP are compile-time constants.

#define PER_LANE ((HEAD_DIM + 31) / 32)
#ifndef WARPS  // a block's warps (the host launches 256 threads)
#define WARPS 8
#endif
// GROUP rounded up to a power of two; positions per batch; (head, position) values per batch.
#define GROUP_P2 (GROUP <= 1 ? 1 : GROUP <= 2 ? 2 : GROUP <= 4 ? 4 : GROUP <= 8 ? 8 : GROUP <= 16 ? 16 : 32)
#define BATCH (32 / GROUP_P2 < 8 ? 32 / GROUP_P2 : 8)
#define VALUES (GROUP_P2 * BATCH)
static_assert(GROUP <= 32, "attention_decode serves at most 32 query heads per kv head");
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
// Chunks of 32 outputs (query heads × dimensions) of a kv head's group.
#define CHUNKS ((GROUP * HEAD_DIM + 31) / 32)

// The cluster's blocks meet once, by mail (Mailbox, common.cuh): each block sends its partial
// results for the outputs another block owns straight into that block's shared memory, and the
// owner merges them when all have come. Two cluster barriers did this before (publish the
// partials, then keep every block alive while the others read them): each
// `barrier.cluster.arrive.release` compiles to a GPU-wide memory barrier, which waits for the
// block's global stores, and remote loads cost a round trip. H100, 8B one-row decode at 160
// positions in a chain (bench/micro/attention-chain.cu): 6.7 → 5.9 µs a layer by mail; 5.0 with
// the merge below unrolled and branch-free and no integer division (Divisor). On Hopper every
// launch of this kernel is a cluster launch, of one block where a row's keys are not split
// (st.async and mbarriers fault outside one); before it, clusters are of one block and mail is
// plain shared-memory stores, read after a block barrier. Whether a cluster has one block is not
// asked at run time: that test alone cost 0.7 µs a layer (the one-row 8B chain, 4.9 → 5.6 µs).

// PRELOAD: each warp loads its first batch of cached keys and values into registers before
// pdl_wait(), where the previous kernel cannot have written them, so they arrive while the block
// reads its queries (H100, 8B: 8.0 → 6.4 µs a layer at 128 tokens, 15.2 → 11.8 at 1024). The
// registers they hold through the query phase (165 instead of 128 at 128-dim heads) leave room
// for one block per multiprocessor, which slows steps of many blocks, so the host uses it only
// for steps whose blocks fit in one wave (attention_decode_wave).
template <bool PRELOAD>
__device__ __forceinline__ void attend(
    const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
    float* __restrict__ kcache, float* __restrict__ vcache, const int* __restrict__ positions,
    const int* __restrict__ fresh_from, const int* __restrict__ slots, const int* __restrict__ block_tables,
    const float* __restrict__ inv_freq, float* __restrict__ out, signed char* __restrict__ out_q,
    float2* __restrict__ out_qs, unsigned short* __restrict__ out_h, int num_kv_heads, int max_blocks,
    int block_size, int window, float scale, int rotate) {
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
  const Divisor by_block(block_size);
  const size_t kv_stride = (size_t)num_kv_heads * HEAD_DIM;  // floats per row of k, v and the cache

  const int per_warp = (end - begin + WARPS - 1) / WARPS;
  const int warp_begin = begin + warp * per_warp;
  const int warp_end = min(end, warp_begin + per_warp);
  // This lane's dimensions of the keys and values of positions j0 .. j0 + BATCH - 1 that are in
  // the cache (zero for the others).
  const auto load_cached = [&](int j0, float (&kd)[BATCH][PER_LANE], float (&vd)[BATCH][PER_LANE]) {
#pragma unroll
    for (int b = 0; b < BATCH; b++) {
      const int j = j0 + b;
      const bool cached = j < warp_end && j < fresh;
      const size_t slot = cached ? table[by_block.quotient(j)] * block_size + by_block.remainder(j) : 0;
      const size_t at = cached ? slot * kv_stride + (size_t)kv_head * HEAD_DIM : 0;
#pragma unroll
      for (int i = 0; i < PER_LANE; i++) {
        const bool in = cached && lane + 32 * i < HEAD_DIM;
        kd[b][i] = in ? kcache[at + lane + 32 * i] : 0.0f;
        vd[b][i] = in ? vcache[at + lane + 32 * i] : 0.0f;
      }
    }
  };
  // The outputs (GROUP × HEAD_DIM, flat) in chunks of 32: block `split` owns chunks split,
  // split + splits, ..., and receives every split's partial of them (the unnormalised sums at
  // mail_acc[own chunk · splits + sender], each head's max and sum at mail_ml[sender][head]).
  const int outputs = GROUP * HEAD_DIM;
  const int owners = min(splits, CHUNKS);  // blocks that own a chunk
  const int owned = split < CHUNKS ? (CHUNKS - 1 - split) / splits + 1 : 0;
  const Divisor by_splits(splits);
  __shared__ float mail_acc[CHUNKS + MAX_SPLITS - 1][32];
  __shared__ float2 mail_ml[MAX_SPLITS][GROUP];
  __shared__ __align__(8) unsigned long long box;
  const Mailbox mail{&box};
  {
    u32 bytes = owned ? splits * GROUP * (u32)sizeof(float2) : 0;
    for (int lc = 0; lc < owned; lc++) bytes += splits * 4 * min(32, outputs - 32 * (split + lc * splits));
    mail.open(bytes);
  }
  // Keys and values cached by earlier steps never depend on the previous kernel: with PRELOAD the
  // first batch's are loaded into registers, and the next 32 positions are pulled into L2, while
  // that kernel finishes (dependent launch). Not with rotate == 0: then the previous kernel is
  // rope_store, which wrote this step's keys to the cache.
  const bool preload = PRELOAD && rotate;
  float kd[BATCH][PER_LANE], vd[BATCH][PER_LANE];
  if (preload) load_cached(warp_begin, kd, vd);
  {
    const int j = warp_begin + (preload ? BATCH : 0) + lane;
    if (j < warp_end && j < fresh) {
      const size_t slot = table[by_block.quotient(j)] * block_size + by_block.remainder(j);
      const size_t at = slot * kv_stride + (size_t)kv_head * HEAD_DIM;
      for (int b = 0; b < HEAD_DIM * 4; b += 128) {
        prefetch_line(reinterpret_cast<const char*>(kcache + at) + b);
        prefetch_line(reinterpret_cast<const char*>(vcache + at) + b);
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

  // Each warp walks its positions BATCH at a time with lanes owning head dimensions (lane + 32i),
  // so a warp with only a few positions (decode at short context gives each of the 64 warps of a
  // kv head about n / 64) does one batch of work, not a full 32-position tile. A batch's GROUP ×
  // BATCH dot products are summed across the warp in one reduce-scatter: lane L ends with value
  // L % VALUES, i.e. head g = (L % VALUES) / BATCH at position b = L % BATCH, and keeps that head's
  // running max and sum (m, l); the head's weights reach the other lanes by shuffles for p·v.
  float qr[GROUP][PER_LANE], acc[GROUP][PER_LANE];
#pragma unroll
  for (int g = 0; g < GROUP; g++)
#pragma unroll
    for (int i = 0; i < PER_LANE; i++) {
      qr[g][i] = lane + 32 * i < HEAD_DIM ? sq[g][lane + 32 * i] : 0.0f;
      acc[g][i] = 0.0f;
    }
  const int my_b = lane % BATCH, my_g = (lane % VALUES) / BATCH;
  float m = -INFINITY, l = 0.0f;

  for (int j0 = warp_begin; j0 < warp_end; j0 += BATCH) {
    // This batch's keys and values for this lane's dimensions, all loads issued before any use:
    // cached ones (unless preloaded), then this step's own (rotated keys in shared memory, values
    // from v).
    if (j0 != warp_begin || !preload) load_cached(j0, kd, vd);
#pragma unroll
    for (int b = 0; b < BATCH; b++) {
      const int j = j0 + b;
      if (j >= warp_end || j < fresh) continue;
      const float* value = v + (size_t)(row - (pos - j)) * kv_stride + (size_t)kv_head * HEAD_DIM;
#pragma unroll
      for (int i = 0; i < PER_LANE; i++) {
        const bool in = lane + 32 * i < HEAD_DIM;
        kd[b][i] = in ? sk[j - fresh_begin][lane + 32 * i] : 0.0f;
        vd[b][i] = in ? value[lane + 32 * i] : 0.0f;
      }
    }
    // Partial q·k of every (head, position), then the reduce-scatter across the warp.
    float part[VALUES];
#pragma unroll
    for (int x = 0; x < VALUES; x++) {
      const int g = x / BATCH, b = x % BATCH;
      float t = 0.0f;
      if (g < GROUP) {
#pragma unroll
        for (int i = 0; i < PER_LANE; i++) t += qr[g][i] * kd[b][i];
      }
      part[x] = t;
    }
    reduce_scatter<VALUES / 2>(part, lane);
    float score = part[0];
#pragma unroll
    for (int o = VALUES; o < 32; o <<= 1) score += __shfl_xor_sync(0xffffffffu, score, o);
    // Online softmax of this lane's head over the batch (lanes of one head differ in the low bits).
    const bool valid = my_g < GROUP && j0 + my_b < warp_end;
    float tile_max = valid ? score : -INFINITY;
#pragma unroll
    for (int o = 1; o < BATCH; o <<= 1) tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, o));
    const float m_new = fmaxf(m, tile_max);
    const float correction = expf(m - softmax_base(m_new));
    const float p = valid ? expf(score - m_new) : 0.0f;
    float tile_sum = p;
#pragma unroll
    for (int o = 1; o < BATCH; o <<= 1) tile_sum += __shfl_xor_sync(0xffffffffu, tile_sum, o);
    l = l * correction + tile_sum;
    m = m_new;
    // p·v for this lane's dimensions of every head.
#pragma unroll
    for (int g = 0; g < GROUP; g++) {
      const float c = __shfl_sync(0xffffffffu, correction, g * BATCH);
#pragma unroll
      for (int i = 0; i < PER_LANE; i++) acc[g][i] *= c;
#pragma unroll
      for (int b = 0; b < BATCH; b++) {
        const float w = __shfl_sync(0xffffffffu, p, g * BATCH + b);
#pragma unroll
        for (int i = 0; i < PER_LANE; i++) acc[g][i] += w * vd[b][i];
      }
    }
  }

  // Merge the block's warps into the block's partial result (its max, sum and unnormalised output
  // per head), sent as it is made to the block that owns each output (see Mailbox).
  mail.ready();
#pragma unroll
  for (int g0 = 0; g0 < GROUP; g0 += MERGE_HEADS) {
    __syncthreads();  // every warp is done with the fresh keys, or with the previous heads
#pragma unroll
    for (int g = g0; g < g0 + MERGE_HEADS && g < GROUP; g++) {  // GROUP need not be a multiple
      if (lane == g * BATCH) {  // the lane that keeps head g's max and sum
        sh.warps.m[warp][g] = m;
        sh.warps.l[warp][g] = l;
      }
#pragma unroll
      for (int i = 0; i < PER_LANE; i++)
        if (lane + 32 * i < HEAD_DIM) sh.warps.acc[warp][g - g0][lane + 32 * i] = acc[g][i];
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < (MERGE_HEADS * HEAD_DIM + WARPS * 32 - 1) / (WARPS * 32); k++) {
      const int o = threadIdx.x + k * WARPS * 32;
      if (o >= min(MERGE_HEADS, GROUP - g0) * HEAD_DIM) break;
      const int g = g0 + o / HEAD_DIM, d = o % HEAD_DIM;
      float mm = -INFINITY;
#pragma unroll
      for (int w = 0; w < WARPS; w++) mm = fmaxf(mm, sh.warps.m[w][g]);
      float sum = 0.0f, value = 0.0f;
#pragma unroll
      for (int w = 0; w < WARPS; w++) {
        const float f = expf(sh.warps.m[w][g] - softmax_base(mm));
        sum += sh.warps.l[w][g] * f;
        value += sh.warps.acc[w][g - g0][d] * f;
      }
      const int c = (g * HEAD_DIM + d) / 32, lc = by_splits.quotient(c);
      mail.send(&mail_acc[lc * splits + split][(g * HEAD_DIM + d) % 32], value, c - lc * splits);
      if (d == 0)
        for (int r = 0; r < owners; r++) mail.send(&mail_ml[split][g], float2{mm, sum}, r);
    }
  }

  // This block's chunks, a warp each: the splits' partials merged. With out_q non-null (HEAD_DIM %
  // 32 == 0), outputs are also rounded to int8 per block of 32 for an integer-weight GEMV
  // (quantize32); with out_h, written as half times FP8_X_SCALE for an fp8-weight GEMV.
  if (!owned) return;
  mail.wait();
  for (int lc = warp; lc < owned; lc += WARPS) {
    const int o = (split + lc * splits) * 32 + lane;
    const bool live = o < outputs;
    const int g = live ? o / HEAD_DIM : 0, d = live ? o % HEAD_DIM : 0;
    float mm = -INFINITY;
#pragma unroll
    for (int r = 0; r < MAX_SPLITS; r++)
      if (r < splits) mm = fmaxf(mm, mail_ml[r][g].x);
    float total = 0.0f, value = 0.0f;
#pragma unroll
    for (int r = 0; r < MAX_SPLITS; r++) {
      if (r >= splits) break;
      const float2 ml = mail_ml[r][g];
      const float f = expf(ml.x - softmax_base(mm));
      total += ml.y * f;
      value += mail_acc[lc * splits + r][lane] * f;
    }
    const size_t i = ((size_t)row * num_heads + kv_head * GROUP + g) * HEAD_DIM + d;
    if (live) out[i] = value / total;
    if (live && out_h) out_h[i] = f32_to_h(value / total * FP8_X_SCALE);
    if (out_q) quantize32(value / total, out_q, out_qs, i);
  }
}

// The two entry points: every step that does not fit in one wave, and those that do.
#define ATTENTION_ENTRY(NAME, PRELOAD)                                                                            \
  extern "C" __global__ void __launch_bounds__(WARPS * 32) NAME(                                                  \
      const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,                      \
      float* __restrict__ kcache, float* __restrict__ vcache, const int* __restrict__ positions,                  \
      const int* __restrict__ fresh_from, const int* __restrict__ slots, const int* __restrict__ block_tables,     \
      const float* __restrict__ inv_freq, float* __restrict__ out, signed char* __restrict__ out_q,               \
      float2* __restrict__ out_qs, unsigned short* __restrict__ out_h, int num_kv_heads, int max_blocks,          \
      int block_size, int window, float scale, int rotate) {                                                      \
    attend<PRELOAD>(q, k, v, kcache, vcache, positions, fresh_from, slots, block_tables, inv_freq, out, out_q,    \
                    out_qs, out_h, num_kv_heads, max_blocks, block_size, window, scale, rotate);                  \
  }
ATTENTION_ENTRY(attention_decode, false)
ATTENTION_ENTRY(attention_decode_wave, true)
