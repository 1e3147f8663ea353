// Matrix-vector products for M = 1..16 rows with weights below 16 bits, dequantized in registers.
// One source per scheme: QFMT selects it at compile time (0 int8, 1 int4, 2 int2, 3 fp8), so a
// model compiles only the scheme it uses. x and y are float32, as in gemv.cu.
//
// Weights keep the engine layout of src/quant/quantized-weight.ts (rows of codes packed along K),
// except that the host reorders the codes inside each 32-bit word (int4, int2) so that one mask
// yields two neighbouring k as a half2: the dequantization of two weights costs one LOP3 and one
// HSUB2. Products are summed in half2 over one chunk of codes (16–32 k, within one scale group),
// then scaled and added in float32. x is rounded to half per chunk, once for all the rows a warp
// handles (ROWS), and pre-scaled (XS) so a chunk's half sums stay far from half's range limit.
//
// Scales: int schemes one half2 (scale, offset) per row and group; fp8 one float per 128×128 block.

#ifndef QFMT
#define QFMT 1
#endif
#define ROWS 2  // weight rows per warp, sharing each converted chunk of x
constexpr int kQWarps = 8;

#if QFMT == 2
typedef uint2 chunk_t;  // int2: 8 bytes = 32 weights, so a chunk never spans two groups of 32
#define CHUNK_K 32
#elif QFMT == 1
typedef uint4 chunk_t;  // int4: 16 bytes = 32 weights
#define CHUNK_K 32
#else
typedef uint4 chunk_t;  // int8, fp8: 16 bytes = 16 weights
#define CHUNK_K 16
#endif
#define CHUNK_WORDS ((int)sizeof(chunk_t) / 4)

#if QFMT == 0
#define XS (1.0f / 128.0f)
#elif QFMT == 1
#define XS (1.0f / 16.0f)
#else
#define XS 1.0f
#endif

__device__ __forceinline__ u32 hsub2(u32 a, u32 b) {
  u32 r;
  asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}
__device__ __forceinline__ u32 hfma2(u32 a, u32 b, u32 c) {
  u32 r;
  asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
  return r;
}
__device__ __forceinline__ u32 f32x2_to_h2(float lo, float hi) {
  u32 r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
__device__ __forceinline__ float2 h2_to_f32x2(u32 v) {
  unsigned short lo = v & 0xffff, hi = v >> 16;
  float a, b;
  asm("cvt.f32.f16 %0, %1;" : "=f"(a) : "h"(lo));
  asm("cvt.f32.f16 %0, %1;" : "=f"(b) : "h"(hi));
  return float2{a, b};
}
__device__ __forceinline__ uint2 load_stream2(const uint2* p) {
  uint2 r;
  asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0,%1}, [%2];" : "=r"(r.x), "=r"(r.y) : "l"(p));
  return r;
}
__device__ __forceinline__ chunk_t load_chunk(const chunk_t* p) {
#if QFMT == 2
  return load_stream2(p);
#else
  return load_stream(p);
#endif
}
__device__ __forceinline__ u32 word(const chunk_t& c, int i) { return reinterpret_cast<const u32*>(&c)[i]; }

// Pair j (k = 2j, 2j + 1) of a 32-bit word of codes, as half2 of the code values.
__device__ __forceinline__ u32 code_pair(u32 w, int j) {
#if QFMT == 0
  // int8: bytes biased to unsigned, placed under 0x64 (1024 + u as half), minus 1152.
  const u32 u = w ^ 0x80808080u;
  const u32 p = __byte_perm(u, 0x64646464u, j == 0 ? 0x4140 : 0x4342);
  return hsub2(p, 0x64806480u);
#elif QFMT == 1
  // int4: nibbles reordered by the host so that mask 0x000F000F at shift 4j gives k = 2j, 2j + 1.
  return hsub2(((w >> (4 * j)) & 0x000F000Fu) | 0x64006400u, 0x64006400u);
#elif QFMT == 2
  // int2: codes reordered so that mask 0x00030003 at shift 2j gives k = 2j, 2j + 1.
  return hsub2(((w >> (2 * j)) & 0x00030003u) | 0x64006400u, 0x64006400u);
#else
  // fp8 e4m3: sign and 7 magnitude bits moved into half's places, which reads as value / 256.
  const u32 t = __byte_perm(w, 0u, j == 0 ? 0x4140 : 0x4342);  // bytes 2j, 2j+1 in each half's low byte
  return ((t & 0x00800080u) << 8) | ((t & 0x007F007Fu) << 7);
#endif
}
#define PAIRS_PER_WORD (QFMT == 1 ? 4 : QFMT == 2 ? 8 : 2)

// The half2 sum of code · (x · XS) over one chunk, for one weight row.
__device__ __forceinline__ u32 chunk_dot(const chunk_t& c, const u32 (&xh)[CHUNK_K / 2]) {
  u32 acc = 0u;
#pragma unroll
  for (int i = 0; i < CHUNK_WORDS; i++) {
    const u32 w = word(c, i);
#pragma unroll
    for (int j = 0; j < PAIRS_PER_WORD; j++) acc = hfma2(code_pair(w, j), xh[i * PAIRS_PER_WORD + j], acc);
  }
  return acc;
}

// Scale (and offset) of the group holding chunk c of row r: w = code · s + o.
__device__ __forceinline__ float2 group_scale(const void* scales, int r, int c, int K, int group) {
#if QFMT == 3
  const int blocks_per_row = (K + 127) / 128;
  return float2{reinterpret_cast<const float*>(scales)[(r / 128) * blocks_per_row + (c * CHUNK_K) / 128] * 256.0f,
                0.0f};
#else
  const int groups = K / group;
  const u32 so = reinterpret_cast<const u32*>(scales)[(size_t)r * groups + (c * CHUNK_K) / group];
  const float2 f = h2_to_f32x2(so);
  return float2{f.x / XS, f.y};  // the scale undoes x's pre-scaling
#endif
}

// acc[r][m] += row r · x[m] over this warp's chunks (every split-th, from part), reduced across the warp.
template <int M>
__device__ __forceinline__ void qdot_rows(const chunk_t* const* wr, const void* const* sc, const int* row,
                                          const float* __restrict__ x, int K, int group,
                                          int part, int split, bool valid, float (&acc)[ROWS][M]) {
  const int lane = threadIdx.x & 31;
  const int chunks = valid ? K / CHUNK_K : 0;
  const int first = lane + 32 * part, stride = 32 * split;
  chunk_t pre[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; r++) pre[r] = first < chunks ? load_chunk(wr[r] + first) : chunk_t{};
  pdl_start();
  for (int c = first; c < chunks; c += stride) {
    chunk_t cur[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
      cur[r] = pre[r];
      if (c + stride < chunks) pre[r] = load_chunk(wr[r] + c + stride);
    }
    float2 s[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; r++) s[r] = group_scale(sc[r], row[r], c, K, group);
#pragma unroll
    for (int m = 0; m < M; m++) {
      const float4* xv = reinterpret_cast<const float4*>(x + (size_t)m * K + c * CHUNK_K);
      u32 xh[CHUNK_K / 2];
      float xsum = 0.0f;
#pragma unroll
      for (int i = 0; i < CHUNK_K / 4; i++) {
        const float4 v = xv[i];
        xh[2 * i] = f32x2_to_h2(v.x * XS, v.y * XS);
        xh[2 * i + 1] = f32x2_to_h2(v.z * XS, v.w * XS);
        xsum += (v.x + v.y) + (v.z + v.w);
      }
#pragma unroll
      for (int r = 0; r < ROWS; r++) {
        const float2 d = h2_to_f32x2(chunk_dot(cur[r], xh));
        acc[r][m] += (d.x + d.y) * s[r].x + s[r].y * xsum;
      }
    }
  }
#pragma unroll
  for (int r = 0; r < ROWS; r++)
#pragma unroll
    for (int m = 0; m < M; m++) acc[r][m] = warp_sum(acc[r][m]);
}

// Adds the split warps' partial sums into the first; true for lane 0 of a row group's first warp.
template <int M>
__device__ __forceinline__ bool qcombine(float (&acc)[ROWS][M], int split) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (split == 1) return lane == 0;
  __shared__ float parts[kQWarps][ROWS][M];
  if (lane == 0)
#pragma unroll
    for (int r = 0; r < ROWS; r++)
#pragma unroll
      for (int m = 0; m < M; m++) parts[warp][r][m] = acc[r][m];
  __syncthreads();
  if (lane != 0 || warp % split != 0) return false;
  for (int s = 1; s < split; s++)
#pragma unroll
    for (int r = 0; r < ROWS; r++)
#pragma unroll
      for (int m = 0; m < M; m++) acc[r][m] += parts[warp + s][r][m];
  return true;
}

// Up to three products sharing x (q, k, v), output rows numbered across them; each warp group
// takes ROWS consecutive rows of one product (a product's row count is rounded up to ROWS).
struct QSegments {
  const chunk_t *w0, *w1, *w2;
  const void *s0, *s1, *s2;
  const bf16_t *b0, *b1, *b2;
  float *y0, *y1, *y2;
  int n0, n1, n2;
};

template <int M>
__device__ __forceinline__ void qgemv(const QSegments& s, const float* __restrict__ x, int K, int group,
                                      int split) {
  const int warp = threadIdx.x >> 5;
  int first = (blockIdx.x * (kQWarps / split) + warp / split) * ROWS;
  const int g0 = (s.n0 + ROWS - 1) / ROWS * ROWS, g1 = (s.n1 + ROWS - 1) / ROWS * ROWS;
  const chunk_t* w = s.w0;
  const void* sc = s.s0;
  const bf16_t* bias = s.b0;
  float* y = s.y0;
  int n = s.n0;
  if (first >= g0) {
    first -= g0;
    w = s.w1, sc = s.s1, bias = s.b1, y = s.y1, n = s.n1;
    if (first >= g1) {
      first -= g1;
      w = s.w2, sc = s.s2, bias = s.b2, y = s.y2, n = s.n2;
    }
  }
  const bool valid = first < n;  // past the last row: still takes part in the block's barrier
  const chunk_t* wr[ROWS];
  const void* scs[ROWS];
  int rows[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; r++) {
    rows[r] = valid ? min(first + r, n - 1) : 0;
    wr[r] = w + (size_t)rows[r] * (K / CHUNK_K);
    scs[r] = sc;
  }
  float acc[ROWS][M];
#pragma unroll
  for (int r = 0; r < ROWS; r++)
#pragma unroll
    for (int m = 0; m < M; m++) acc[r][m] = 0.0f;
  qdot_rows<M>(wr, scs, rows, x, K, group, warp % split, split, valid, acc);
  if (qcombine<M>(acc, split) && valid) {
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
      if (first + r >= n) break;
      const float b = bias ? bf16_to_f32(bias[first + r]) : 0.0f;
#pragma unroll
      for (int m = 0; m < M; m++) y[(size_t)m * n + first + r] = acc[r][m] + b;
    }
  }
}

// silu(x·Wg + bg) * (x·Wu + bu) for quantized gate and up (ROWS = 2: a gate row and its up row).
template <int M>
__device__ __forceinline__ void qgate_up(const chunk_t* wg, const chunk_t* wu, const void* sg, const void* su,
                                         const bf16_t* bg, const bf16_t* bu, const float* __restrict__ x,
                                         float* __restrict__ y, int N, int K, int group, int split) {
  const int warp = threadIdx.x >> 5;
  const int row = blockIdx.x * (kQWarps / split) + warp / split;
  const bool valid = row < N;
  const int r0 = valid ? row : 0;
  const chunk_t* wr[ROWS] = {wg + (size_t)r0 * (K / CHUNK_K), wu + (size_t)r0 * (K / CHUNK_K)};
  const void* scs[ROWS] = {sg, su};
  const int rows[ROWS] = {r0, r0};
  float acc[ROWS][M];
#pragma unroll
  for (int m = 0; m < M; m++) acc[0][m] = acc[1][m] = 0.0f;
  qdot_rows<M>(wr, scs, rows, x, K, group, warp % split, split, valid, acc);
  if (qcombine<M>(acc, split) && valid) {
    const float gb = bg ? bf16_to_f32(bg[row]) : 0.0f, ub = bu ? bf16_to_f32(bu[row]) : 0.0f;
#pragma unroll
    for (int m = 0; m < M; m++) {
      const float a = acc[0][m] + gb;
      y[(size_t)m * N + row] = a / (1.0f + expf(-a)) * (acc[1][m] + ub);
    }
  }
}

// Dequantizes a whole weight to bf16 (prompt-sized steps multiply it on tensor cores).
extern "C" __global__ void dequantize_bf16(const chunk_t* __restrict__ w, const void* __restrict__ scales,
                                           bf16_t* __restrict__ out, int N, int K, int group) {
  pdl_start();
  const int chunks = K / CHUNK_K;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (size_t)N * chunks;
       i += (size_t)gridDim.x * blockDim.x) {
    const int r = i / chunks, c = i % chunks;
    const chunk_t ch = w[i];
    const float2 s = group_scale(scales, r, c, K, group);
    bf16_t* o = out + (size_t)r * K + c * CHUNK_K;
#pragma unroll
    for (int wd = 0; wd < CHUNK_WORDS; wd++) {
#pragma unroll
      for (int j = 0; j < PAIRS_PER_WORD; j++) {
        const float2 v = h2_to_f32x2(code_pair(word(ch, wd), j));
        const int k = (wd * PAIRS_PER_WORD + j) * 2;
        const u32 b = pack_bf16x2(v.x * XS * s.x + s.y, v.y * XS * s.x + s.y);
        o[k] = (bf16_t)(b & 0xffff);
        o[k + 1] = (bf16_t)(b >> 16);
      }
    }
  }
}

#define QGEMV(M)                                                                                          \
  extern "C" __global__ void __launch_bounds__(256) qgemv_m##M(QSegments s, const float* x, int K, int group, \
                                                               int split) {                               \
    qgemv<M>(s, x, K, group, split);                                                                      \
  }                                                                                                       \
  extern "C" __global__ void __launch_bounds__(256) qgate_up_m##M(                                        \
      const chunk_t* wg, const chunk_t* wu, const void* sg, const void* su, const bf16_t* bg,             \
      const bf16_t* bu, const float* x, float* y, int N, int K, int group, int split) {                   \
    qgate_up<M>(wg, wu, sg, su, bg, bu, x, y, N, K, group, split);                                        \
  }
QGEMV(1)
QGEMV(2)
QGEMV(3)
QGEMV(4)
QGEMV(5)
QGEMV(6)
QGEMV(7)
QGEMV(8)
QGEMV(9)
QGEMV(10)
QGEMV(11)
QGEMV(12)
QGEMV(13)
QGEMV(14)
QGEMV(15)
QGEMV(16)
