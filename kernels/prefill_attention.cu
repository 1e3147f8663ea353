// Causal attention for prompt-sized steps on tensor cores (flash-attention 2 style, mma.sync
// m16n8k16 with bf16 operands and float32 accumulation). The decode kernel would re-read every
// earlier key once per query row; here a block takes a tile of 64 consecutive rows of one
// sequence for one query head, so each key is read once per tile.
//
// Tiles are made on the host (prepareStep): rows of one sequence at consecutive positions, at
// most 64 per tile, described by (first row, row count). Four warps take 16 rows each. A warp
// keeps its queries as mma A-fragments in registers, scores 64 keys at a time (S = Q·Kᵀ), runs
// the online softmax on the accumulator fragments, and reuses them directly as the A-fragments
// of P·V. Keys and values come from the paged float32 cache with coalesced loads and are rounded
// to bf16 into shared memory, rows padded against bank conflicts; value fragments are read
// transposed by ldmatrix. The host uses this kernel only when HEAD_DIM is a multiple of 16 and at
// most 128 (the tiles fit in static shared memory).

#define PA_ROWS 64                     // query rows per block
#define PA_KEYS 64                     // keys per shared-memory tile
#define PA_KSTRIDE (HEAD_DIM + 8)      // bf16 per key row in shared memory

// Four 8×8 bf16 matrices from shared memory, transposed: lanes 8i..8i+7 give matrix i's row addresses.
__device__ __forceinline__ void ldmatrix_x4_trans(u32 (&r)[4], const bf16_t* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_addr(row)));
}

__device__ __forceinline__ void mma_bf16(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

#if HEAD_DIM % 16 == 0 && HEAD_DIM <= 128
// grid (tiles, heads), 128 threads. tiles: [first row, row count] pairs. out: [rows, heads * HEAD_DIM].
extern "C" __global__ void __launch_bounds__(128) prefill_attention(
    const float* __restrict__ q, const float* __restrict__ kcache, const float* __restrict__ vcache,
    const int* __restrict__ positions, const int* __restrict__ block_tables, const int* __restrict__ tiles,
    float* __restrict__ out, int num_kv_heads, int max_blocks, int block_size, int window, float scale) {
  __shared__ __align__(16) bf16_t sk[PA_KEYS * PA_KSTRIDE];
  __shared__ __align__(16) bf16_t sv[PA_KEYS * PA_KSTRIDE];
  pdl_start();

  const int head = blockIdx.y, kv_head = head / GROUP;
  const int num_heads = num_kv_heads * GROUP;
  const int tile_first = tiles[2 * blockIdx.x], tile_rows = tiles[2 * blockIdx.x + 1];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t4 = lane & 3;  // mma fragment coordinates
  const int* table = block_tables + (size_t)tile_first * max_blocks;
  const int pos0 = positions[tile_first];
  const int key_begin = window > 0 ? max(0, pos0 - window + 1) : 0;
  const int key_end = positions[tile_first + tile_rows - 1] + 1;

  // This thread's two rows (g and g + 8 of the warp's 16); positions are consecutive in a tile.
  const int warp_row = warp * 16;
  const int r0 = warp_row + g, r1 = r0 + 8;
  const int p0 = pos0 + r0, p1 = pos0 + r1;
  const int lo0 = window > 0 ? p0 - window + 1 : 0, lo1 = window > 0 ? p1 - window + 1 : 0;
  const int warp_rows = min(16, tile_rows - warp_row);
  const int warp_last = pos0 + warp_row + max(warp_rows, 1) - 1;
  const int warp_first = window > 0 ? pos0 + warp_row - window + 1 : 0;

  // Queries → A fragments (pre-scaled, bf16), HEAD_DIM / 16 of them.
  u32 qa[HEAD_DIM / 16][4];
  {
    const float* q0 = q + ((size_t)(tile_first + r0) * num_heads + head) * HEAD_DIM;
    const float* q1 = q + ((size_t)(tile_first + r1) * num_heads + head) * HEAD_DIM;
    const bool v0 = r0 < tile_rows, v1 = r1 < tile_rows;
#pragma unroll
    for (int kk = 0; kk < HEAD_DIM / 16; kk++) {
      const int c = kk * 16 + 2 * t4;
      const float2 a = v0 ? *reinterpret_cast<const float2*>(q0 + c) : float2{0.f, 0.f};
      const float2 b = v1 ? *reinterpret_cast<const float2*>(q1 + c) : float2{0.f, 0.f};
      const float2 c2 = v0 ? *reinterpret_cast<const float2*>(q0 + c + 8) : float2{0.f, 0.f};
      const float2 d = v1 ? *reinterpret_cast<const float2*>(q1 + c + 8) : float2{0.f, 0.f};
      qa[kk][0] = pack_bf16x2(a.x * scale, a.y * scale);
      qa[kk][1] = pack_bf16x2(b.x * scale, b.y * scale);
      qa[kk][2] = pack_bf16x2(c2.x * scale, c2.y * scale);
      qa[kk][3] = pack_bf16x2(d.x * scale, d.y * scale);
    }
  }

  float o[HEAD_DIM / 8][4];
#pragma unroll
  for (int n = 0; n < HEAD_DIM / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;

  for (int tile = key_begin; tile < key_end; tile += PA_KEYS) {
    // Stage 64 keys and values as bf16, [key][dim]; past the end: zeros.
    __syncthreads();
    for (int i = threadIdx.x; i < PA_KEYS * HEAD_DIM / 4; i += blockDim.x) {
      const int key = i / (HEAD_DIM / 4), d = (i % (HEAD_DIM / 4)) * 4;
      const int j = tile + key;
      float4 k4 = {0.f, 0.f, 0.f, 0.f}, v4 = {0.f, 0.f, 0.f, 0.f};
      if (j < key_end) {
        const size_t slot = (size_t)table[j / block_size] * block_size + j % block_size;
        const size_t at = (slot * num_kv_heads + kv_head) * HEAD_DIM + d;
        k4 = *reinterpret_cast<const float4*>(kcache + at);
        v4 = *reinterpret_cast<const float4*>(vcache + at);
      }
      *reinterpret_cast<uint2*>(sk + key * PA_KSTRIDE + d) = uint2{pack_bf16x2(k4.x, k4.y), pack_bf16x2(k4.z, k4.w)};
      *reinterpret_cast<uint2*>(sv + key * PA_KSTRIDE + d) = uint2{pack_bf16x2(v4.x, v4.y), pack_bf16x2(v4.z, v4.w)};
    }
    __syncthreads();
    // A warp whose rows see none of these keys only helps with the staging.
    if (warp_rows <= 0 || tile > warp_last || tile + PA_KEYS <= warp_first) continue;

    // S = Q·Kᵀ for 16 rows × 64 keys: 8 fragments of 8 keys.
    float s[PA_KEYS / 8][4];
#pragma unroll
    for (int n = 0; n < PA_KEYS / 8; n++) {
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
      const bf16_t* kr = sk + (n * 8 + g) * PA_KSTRIDE + 2 * t4;
#pragma unroll
      for (int kk = 0; kk < HEAD_DIM / 16; kk++) {
        const u32 b0 = *reinterpret_cast<const u32*>(kr + kk * 16);
        const u32 b1 = *reinterpret_cast<const u32*>(kr + kk * 16 + 8);
        mma_bf16(s[n], qa[kk], b0, b1);
      }
    }
    // Causal (and window) mask, then the online softmax of rows r0 (s[.][0..1]) and r1 (s[.][2..3]).
    float tmax0 = -INFINITY, tmax1 = -INFINITY;
#pragma unroll
    for (int n = 0; n < PA_KEYS / 8; n++) {
#pragma unroll
      for (int e = 0; e < 2; e++) {
        const int j = tile + n * 8 + 2 * t4 + e;
        if (j > p0 || j < lo0) s[n][e] = -INFINITY;
        if (j > p1 || j < lo1) s[n][2 + e] = -INFINITY;
        tmax0 = fmaxf(tmax0, s[n][e]);
        tmax1 = fmaxf(tmax1, s[n][2 + e]);
      }
    }
#pragma unroll
    for (int o2 = 1; o2 < 4; o2 <<= 1) {
      tmax0 = fmaxf(tmax0, __shfl_xor_sync(0xffffffffu, tmax0, o2));
      tmax1 = fmaxf(tmax1, __shfl_xor_sync(0xffffffffu, tmax1, o2));
    }
    const float n0 = fmaxf(m0, tmax0), n1 = fmaxf(m1, tmax1);
    // A row that has seen no key yet keeps max -inf; subtracting 0 then gives exp(-inf) = 0.
    const float b0 = n0 == -INFINITY ? 0.f : n0, b1 = n1 == -INFINITY ? 0.f : n1;
    const float c0 = __expf(m0 - b0), c1 = __expf(m1 - b1);
    m0 = n0, m1 = n1;
    float sum0 = 0.f, sum1 = 0.f;
#pragma unroll
    for (int n = 0; n < PA_KEYS / 8; n++) {
      s[n][0] = __expf(s[n][0] - b0), s[n][1] = __expf(s[n][1] - b0);
      s[n][2] = __expf(s[n][2] - b1), s[n][3] = __expf(s[n][3] - b1);
      sum0 += s[n][0] + s[n][1];
      sum1 += s[n][2] + s[n][3];
    }
    l0 = l0 * c0 + sum0;  // per-thread partial sums; the 4 threads of a row add up at the end
    l1 = l1 * c1 + sum1;
#pragma unroll
    for (int n = 0; n < HEAD_DIM / 8; n++) o[n][0] *= c0, o[n][1] *= c0, o[n][2] *= c1, o[n][3] *= c1;

    // O += P·V: the score fragments of keys 16kk..16kk+15 are the A-fragment of step kk.
#pragma unroll
    for (int kk = 0; kk < PA_KEYS / 16; kk++) {
      const u32 pa[4] = {pack_bf16x2(s[2 * kk][0], s[2 * kk][1]), pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                         pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                         pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
      // Lanes 0-15 address keys kk*16 + 0..15 at dims n*8.., lanes 16-31 the same keys at dims n*8+8..
      const bf16_t* vrow = sv + (kk * 16 + (lane & 15)) * PA_KSTRIDE + (lane >> 4) * 8;
#pragma unroll
      for (int n = 0; n < HEAD_DIM / 8; n += 2) {
        u32 vb[4];
        ldmatrix_x4_trans(vb, vrow + n * 8);
        mma_bf16(o[n], pa, vb[0], vb[1]);
        mma_bf16(o[n + 1], pa, vb[2], vb[3]);
      }
    }
  }

#pragma unroll
  for (int o2 = 1; o2 < 4; o2 <<= 1) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, o2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, o2);
  }
  const float inv0 = 1.f / l0, inv1 = 1.f / l1;
  float* out0 = out + ((size_t)(tile_first + r0) * num_heads + head) * HEAD_DIM + 2 * t4;
  float* out1 = out + ((size_t)(tile_first + r1) * num_heads + head) * HEAD_DIM + 2 * t4;
#pragma unroll
  for (int n = 0; n < HEAD_DIM / 8; n++) {
    if (r0 < tile_rows) *reinterpret_cast<float2*>(out0 + n * 8) = float2{o[n][0] * inv0, o[n][1] * inv0};
    if (r1 < tile_rows) *reinterpret_cast<float2*>(out1 + n * 8) = float2{o[n][2] * inv1, o[n][3] * inv1};
  }
}
#endif
