// Matrix-vector products for M = 1..16 rows with weights below 16 bits, dequantized in registers.
// One source per scheme: QFMT selects it at compile time (0 int8, 1 int4, 2 int2, 3 fp8), so a
// model compiles only the scheme it uses. y is float32, as in gemv.cu.
//
// Integer schemes multiply on the integer units: x is first rounded to int8 per block of 32
// (quantize_x in elementwise.cu: a scale and the block's float sum), and dp4a adds four code·x
// products per instruction. The host reorders int4 and int2 codes inside each 32-bit word so that
// one mask (and shift) puts four consecutive k in the four bytes, centred (code_quad): a word of
// int4 codes costs two LOP3s, one shift and two dp4a for 8 weights. Per block:
// w·x = s_w·s_x·Σ code·q_x + o_w·Σx.
//
// fp8 uses half arithmetic: codes become half (exact, fp8_pair), x is read as half times
// FP8_X_SCALE (made by x's producer, or half_x in elementwise.cu), products are summed in half2
// over one chunk of 16, then scaled and added in float32.
//
// Weights keep the engine layout of src/quant/quantized-weight.ts otherwise. Scales: integer
// schemes one half2 (scale, offset) per row and group; fp8 one float per 128×128 block.

#ifndef QFMT
#define QFMT 1
#endif
#define ROWS 2  // weight rows per warp, sharing each load of x

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
// Chunks per row each lane keeps in flight: QDEPTH, and QDEPTH_SMALL in steps of at most
// QSMALL_M rows. Measured on the H100 (scripts/gpu-tune.sh): one-row steps of int8 and fp8 gain
// 3% and 2% from two (their products stream more bytes per kernel, so deeper loads pay), int4
// loses 10% and steps of 2 or more rows lose too, whose registers cost more occupancy than the
// extra loads bring.
#ifndef QDEPTH
#define QDEPTH 1
#endif
#ifndef QDEPTH_SMALL
#define QDEPTH_SMALL (QFMT == 0 || QFMT == 3 ? 2 : 1)
#endif
#ifndef QSMALL_M
#define QSMALL_M 1
#endif
// Blocks per multiprocessor the register allocation must allow (__launch_bounds__): 3 measured
// best for int8 and fp8 and for steps of 16 rows, level for int4 (scripts/gpu-tune.sh).
#ifndef QMINBLOCKS
#define QMINBLOCKS 3
#endif
__device__ __forceinline__ u32 hfma2(u32 a, u32 b, u32 c) {
  u32 r;
  asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
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

// Codes are centred before the products (int4: q - 8, int2: q - 2; the offset takes the rest): an
// error in x's rounding then scales with the code's distance from the middle, not with the code.
// Centring is free: a code moved into the top bits of its byte with its top bit flipped reads, as
// a signed byte, as DOT_SCALE · (code - CENTRE) (two's complement), so one LOP3 decodes four codes
// and the products carry a constant factor that the scale takes back.
#define CENTRE (QFMT == 1 ? 8 : QFMT == 2 ? 2 : 0)
#define DOT_SCALE (QFMT == 1 ? 16 : QFMT == 2 ? 64 : 1)

// Four consecutive codes (k = 4q .. 4q + 3 of the chunk) as signed bytes, DOT_SCALE · (code -
// CENTRE), from the host's order.
__device__ __forceinline__ int code_quad(const chunk_t& c, int q) {
#if QFMT == 0
  return (int)word(c, q);  // int8: bytes in k order
#elif QFMT == 1
  // int4 word i holds k = 8i + b in the low nibble of byte b and k = 8i + 4 + b in the high one.
  const u32 w = word(c, q >> 1);
  return (int)(((q & 1 ? w : w << 4) & 0xF0F0F0F0u) ^ 0x80808080u);
#elif QFMT == 2
  // int2 word i holds k = 16i + 4s + b in bits 2s..2s+1 of byte b.
  return (int)(((word(c, q >> 2) << (6 - 2 * (q & 3))) & 0xC0C0C0C0u) ^ 0x80808080u);
#else
  return 0;
#endif
}

// fp8 e4m3 codes 2j, 2j + 1 of a word as half2 (exact). Ada and Hopper convert in hardware;
// before them, sign and magnitude bits moved into half's places read as value / 256, which one
// exact multiply by 256 corrects.
__device__ __forceinline__ u32 fp8_pair(u32 w, int j) {
#if __CUDA_ARCH__ >= 890
  u32 h;
  const unsigned short p = j == 0 ? (unsigned short)(w & 0xffff) : (unsigned short)(w >> 16);
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h) : "h"(p));
  return h;
#else
  const u32 t = __byte_perm(w, 0u, j == 0 ? 0x4140 : 0x4342);  // bytes 2j, 2j+1 in each half's low byte
  return hfma2(((t & 0x00800080u) << 8) | ((t & 0x007F007Fu) << 7), 0x5C005C00u, 0u);  // 0x5C00 = 256
#endif
}

// Scale and offset of the group holding chunk c of row r, for code_quad's (or fp8_pair's) values.
__device__ __forceinline__ float2 group_scale(const void* scales, int r, int c, int K, int group) {
#if QFMT == 3
  const int blocks_per_row = (K + 127) / 128;
  return float2{reinterpret_cast<const float*>(scales)[(r / 128) * blocks_per_row + (c * CHUNK_K) / 128] / FP8_X_SCALE,
                0.0f};
#else
  const int groups = K / group;
  const float2 f = h2_to_f32x2(reinterpret_cast<const u32*>(scales)[(size_t)r * groups + (c * CHUNK_K) / group]);
  // w = DOT_SCALE · (code - CENTRE) · s / DOT_SCALE + (o + CENTRE · s)
  return float2{f.x * (1.0f / DOT_SCALE), f.y + CENTRE * f.x};
#endif
}

// x as the kernels read it: for the integer schemes int8 rows with one (scale, sum) per block of
// 32 (quantize_x); for fp8, x · FP8_X_SCALE as half (half_x).
struct XRows {
  const int* q;
  const float2* qs;
  const u32* h;
};

// acc[r][m] += (chunk c of row r) · x[m], the chunks w[r] with scales s[r].
template <int M>
__device__ __forceinline__ void chunk_products(const chunk_t (&w)[ROWS], const float2 (&s)[ROWS], const XRows& x,
                                               int K, int c, float (&acc)[ROWS][M]) {
#pragma unroll
  for (int m = 0; m < M; m++) {
#if QFMT == 3
    u32 xh[CHUNK_K / 2];
    const uint4* xv = reinterpret_cast<const uint4*>(x.h + ((size_t)m * K + c * CHUNK_K) / 2);
#pragma unroll
    for (int i = 0; i < CHUNK_K / 8; i++) {
      const uint4 v = xv[i];
      xh[4 * i] = v.x, xh[4 * i + 1] = v.y, xh[4 * i + 2] = v.z, xh[4 * i + 3] = v.w;
    }
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
      u32 dot = 0u;
#pragma unroll
      for (int i = 0; i < CHUNK_WORDS; i++)
#pragma unroll
        for (int j = 0; j < 2; j++) dot = hfma2(fp8_pair(word(w[r], i), j), xh[2 * i + j], dot);
      const float2 f = h2_to_f32x2(dot);
      acc[r][m] += (f.x + f.y) * s[r].x;
    }
#else
    const int4* xv = reinterpret_cast<const int4*>(x.q + ((size_t)m * K + c * CHUNK_K) / 4);
    int xq[CHUNK_K / 4];
#pragma unroll
    for (int i = 0; i < CHUNK_K / 16; i++) {
      const int4 v = xv[i];
      xq[4 * i] = v.x, xq[4 * i + 1] = v.y, xq[4 * i + 2] = v.z, xq[4 * i + 3] = v.w;
    }
    const float2 xs = x.qs[((size_t)m * K + c * CHUNK_K) / 32];
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
      int dot = 0;
#pragma unroll
      for (int q = 0; q < CHUNK_K / 4; q++) dot = __dp4a(code_quad(w[r], q), xq[q], dot);
      acc[r][m] += (float)dot * xs.x * s[r].x + s[r].y * xs.y;
    }
#endif
  }
}

// acc[r][m] += row r · x[m] over this warp's chunks (every split-th, from part), reduced across the warp.
// A software pipeline `depth` chunks deep: each chunk's load (with its scale) is issued `depth`
// chunks before its use, the first ones before pdl_wait() (weights are never written by earlier
// kernels).
template <int M>
__device__ __forceinline__ void qdot_rows(const chunk_t* const* wr, const void* const* sc, const int* row,
                                          const XRows& x, int K, int group, int part, int split, bool valid,
                                          float (&acc)[ROWS][M]) {
  const int lane = threadIdx.x & 31;
  const int chunks = valid ? K / CHUNK_K : 0;
  const int first = lane + 32 * part, stride = 32 * split;
  constexpr int depth = M <= QSMALL_M ? QDEPTH_SMALL : QDEPTH;
  chunk_t pre[depth][ROWS];
  float2 pre_s[depth][ROWS];
  auto fetch = [&](int d, int c) {
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
      pre[d][r] = load_chunk(wr[r] + c);
      pre_s[d][r] = group_scale(sc[r], row[r], c, K, group);
    }
  };
#pragma unroll
  for (int d = 0; d < depth; d++)
    if (first + d * stride < chunks) fetch(d, first + d * stride);
  pdl_start();
  for (int c0 = first; c0 < chunks; c0 += depth * stride) {
#pragma unroll
    for (int d = 0; d < depth; d++) {
      const int c = c0 + d * stride;
      if (c >= chunks) break;
      chunk_t w[ROWS];
      float2 s[ROWS];
#pragma unroll
      for (int r = 0; r < ROWS; r++) w[r] = pre[d][r], s[r] = pre_s[d][r];
      if (c + depth * stride < chunks) fetch(d, c + depth * stride);
      chunk_products<M>(w, s, x, K, c, acc);
    }
  }
#pragma unroll
  for (int r = 0; r < ROWS; r++)
#pragma unroll
    for (int m = 0; m < M; m++) acc[r][m] = warp_sum(acc[r][m]);
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
__device__ __forceinline__ void qgemv(const QSegments& s, const XRows& x, int K, int group, int split) {
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
  if (combine_parts<M, ROWS, kQWarps>(acc, split) && valid) {
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
                                         const bf16_t* bg, const bf16_t* bu, const XRows& x,
                                         float* __restrict__ y, unsigned short* __restrict__ yh, int N, int K,
                                         int group, int split) {
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
  if (combine_parts<M, ROWS, kQWarps>(acc, split) && valid) {
    const float gb = bg ? bf16_to_f32(bg[row]) : 0.0f, ub = bu ? bf16_to_f32(bu[row]) : 0.0f;
#pragma unroll
    for (int m = 0; m < M; m++) {
      const float a = acc[0][m] + gb;
      const float out = a / (1.0f + expf(-a)) * (acc[1][m] + ub);
      y[(size_t)m * N + row] = out;
      if (yh) yh[(size_t)m * N + row] = f32_to_h(out * FP8_X_SCALE);  // for an fp8 down product
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
    float v[CHUNK_K];
#if QFMT == 3
#pragma unroll
    for (int j = 0; j < CHUNK_K / 2; j++) {
      const float2 f = h2_to_f32x2(fp8_pair(word(ch, j / 2), j % 2));
      v[2 * j] = f.x * (s.x * FP8_X_SCALE), v[2 * j + 1] = f.y * (s.x * FP8_X_SCALE);
    }
#else
#pragma unroll
    for (int q = 0; q < CHUNK_K / 4; q++) {
      const int codes = code_quad(ch, q);
#pragma unroll
      for (int b = 0; b < 4; b++) v[4 * q + b] = (float)(signed char)(codes >> (8 * b)) * s.x + s.y;
    }
#endif
    u32* o = reinterpret_cast<u32*>(out + (size_t)r * K + c * CHUNK_K);
#pragma unroll
    for (int k = 0; k < CHUNK_K; k += 2) o[k / 2] = pack_bf16x2(v[k], v[k + 1]);
  }
}

#define QGEMV(M)                                                                                       \
  extern "C" __global__ void __launch_bounds__(256, QMINBLOCKS)                                        \
      qgemv_m##M(QSegments s, const int* xq, const float2* xqs, const u32* xh, int K, int group, int split) { \
    qgemv<M>(s, XRows{xq, xqs, xh}, K, group, split);                                                  \
  }                                                                                                    \
  extern "C" __global__ void __launch_bounds__(256, QMINBLOCKS) qgate_up_m##M(                         \
      const chunk_t* wg, const chunk_t* wu, const void* sg, const void* su, const bf16_t* bg,          \
      const bf16_t* bu, const int* xq, const float2* xqs, const u32* xh, float* y, unsigned short* yh, \
      int N, int K, int group, int split) {                                                            \
    qgate_up<M>(wg, wu, sg, su, bg, bu, XRows{xq, xqs, xh}, y, yh, N, K, group, split);                \
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
