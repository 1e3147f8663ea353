// Matrix-vector products for M = 1..16 rows with weights below 16 bits, dequantized in registers;
// for steps of more rows than the crossover, products on the tensor cores (qmma, at the end).
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
// One-row products folding their norm in (q/k/v), which read x from shared memory rather than
// from L2 in their loop. Two chunks in flight measured better there (H100 8B, session 18,
// alternating with one: int2-g32 614 → 630 tok/s, int4 533 → 538, q/k/v 7.88 → 7.61 µs a layer),
// while every one-row GEMV at two lost (int4 537 → 489: o and down slower).
#ifndef QDEPTH_NORM
#define QDEPTH_NORM (QDEPTH_SMALL > 2 ? QDEPTH_SMALL : 2)
#endif
// Chunks in flight for a product of M rows, folding its norm in or not.
__host__ __device__ constexpr int qdepth(int M, bool norm) { return norm ? QDEPTH_NORM : M <= QSMALL_M ? QDEPTH_SMALL : QDEPTH; }
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

// Codes per 32-bit word, and per quad of four (k = 4q .. 4q + 3 of a chunk) that one word holds.
#define QUADS_PER_WORD (QFMT == 1 ? 2 : QFMT == 2 ? 4 : 1)

// Quad q's four codes as signed bytes, DOT_SCALE · (code - CENTRE), from the word holding it (the
// host's order).
__device__ __forceinline__ int quad_codes(u32 w, int q) {
#if QFMT == 1
  // int4 word i holds k = 8i + b in the low nibble of byte b and k = 8i + 4 + b in the high one.
  return (int)(((q & 1 ? w : w << 4) & 0xF0F0F0F0u) ^ 0x80808080u);
#elif QFMT == 2
  // int2 word i holds k = 16i + 4s + b in bits 2s..2s+1 of byte b.
  return (int)(((w << (6 - 2 * (q & 3))) & 0xC0C0C0C0u) ^ 0x80808080u);
#else
  return (int)w;  // int8: bytes in k order
#endif
}
__device__ __forceinline__ int code_quad(const chunk_t& c, int q) { return quad_codes(word(c, q / QUADS_PER_WORD), q); }

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

// Where the stored scale of row r's group holding k is: integer schemes a half2 (scale, offset),
// fp8 a float per 128×128 block. A row's groups follow each other.
__device__ __forceinline__ const u32* scale_at(const void* scales, int r, int k, int K, int group) {
#if QFMT == 3
  return reinterpret_cast<const u32*>(scales) + ((r / 128) * ((K + 127) / 128) + k / 128);
#else
  return reinterpret_cast<const u32*>(scales) + ((size_t)r * (K / group) + k / group);
#endif
}
// A stored scale as (scale, offset) for code_quad's (or fp8_pair's) values.
__device__ __forceinline__ float2 decode_scale(u32 v) {
#if QFMT == 3
  return float2{__uint_as_float(v) / FP8_X_SCALE, 0.0f};
#else
  const float2 f = h2_to_f32x2(v);
  // w = DOT_SCALE · (code - CENTRE) · s / DOT_SCALE + (o + CENTRE · s)
  return float2{f.x * (1.0f / DOT_SCALE), f.y + CENTRE * f.x};
#endif
}
// Scale and offset of the group holding chunk c of row r.
__device__ __forceinline__ float2 group_scale(const void* scales, int r, int c, int K, int group) {
  return decode_scale(*scale_at(scales, r, c * CHUNK_K, K, group));
}

// x as the kernels read it: for the integer schemes int8 rows with one (scale, sum) per block of
// 32 (quantize_x), or for qmma x itself as half where its producer made that (h); for fp8,
// x · FP8_X_SCALE as half (half_x).
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
// kernels), followed there by the kernel's L2 prefetch (`l2`, prefetch_l2). Every thread calls
// input.before_wait() beside those first loads, and input.after_wait(), which gives x, right after
// the wait.
template <int M, int depth, typename Input>
__device__ __forceinline__ void qdot_rows(const chunk_t* const* wr, const void* const* sc, const int* row,
                                          Input& input, const L2Ranges& l2, int K, int group, int part, int split,
                                          bool valid, float (&acc)[ROWS][M]) {
  const int lane = threadIdx.x & 31;
  const int chunks = valid ? K / CHUNK_K : 0;
  const int first = lane + 32 * part, stride = 32 * split;
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
  input.before_wait();
  prefetch_l2(l2);
  pdl_start();
  const XRows x = input.after_wait();
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

// The RMSNorm a q/k/v product folds in, so that no norm kernel runs before it: its input rows
// (float32, K each), weight and eps (rmsnorm in norm.cu).
struct NormIn {
  const float* x;
  const bf16_t* w;
  float eps;
};

// float4s of a row each thread loads at once when a product folds a norm in: rows of up to
// 1024 · FOLD_SLOTS values (checked by the host).
#define FOLD_SLOTS 4

// x rows for the products, made by every block from the norm's input in its shared memory
// (M · K · 1.25 bytes for the integer schemes, M · K · 2 for fp8; K % 128 == 0, 256 threads).
// The block's loads of x are L2 hits that replace the norm kernel's launch, its pass over x and
// the products' reads of its output. Those hits queue behind the weight stream, so each thread
// issues all of a row's loads at once, and the norm weight is loaded before the wait.
//
// Integer schemes round v = x · w to int8 per block of 32 without the norm's 1 / rms: a block's
// codes do not change when all of its values are scaled, and its (scale, sum) scale with them,
// so every sum the GEMV forms is the normed one times rms, and after[m] = 1 / rms takes it back
// at the end. fp8 multiplies in half, which unnormed values (a residual stream reaches
// thousands) could overflow: it reduces each row's squares first and writes v / rms ·
// FP8_X_SCALE, and after[m] = 1.
template <int M>
struct NormFold {
  const NormIn& n;
  int K;
  float (&after)[M];
  uint2 w[FOLD_SLOTS];

  __device__ __forceinline__ void before_wait() {
#pragma unroll
    for (int s = 0; s < FOLD_SLOTS; s++)
      if (const int i4 = threadIdx.x + 256 * s; i4 < K / 4) w[s] = reinterpret_cast<const uint2*>(n.w)[i4];
  }

  __device__ __forceinline__ XRows after_wait() {
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ float squares[kQWarps][M];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n4 = K / 4;
#pragma unroll
    for (int m = 0; m < M; m++) {
      const float4* xm = reinterpret_cast<const float4*>(n.x + (size_t)m * K);
      float4 v[FOLD_SLOTS];
      float ss = 0.0f;
#pragma unroll
      for (int s = 0; s < FOLD_SLOTS; s++)
        if (const int i4 = threadIdx.x + 256 * s; i4 < n4) v[s] = xm[i4];
#pragma unroll
      for (int s = 0; s < FOLD_SLOTS; s++)
        if (threadIdx.x + 256 * s < n4) ss += sum_squares(v[s]);
      ss = warp_sum(ss);
      if (lane == 0) squares[warp][m] = ss;
#if QFMT == 3
      // The row's 1 / rms before its half values: one block-wide sum per row.
      __syncthreads();
      ss = 0.0f;
#pragma unroll
      for (int i = 0; i < kQWarps; i++) ss += squares[i][m];
      const float k = rsqrtf(ss / K + n.eps) * FP8_X_SCALE;
      uint2* h = reinterpret_cast<uint2*>(smem) + (size_t)m * n4;
#pragma unroll
      for (int s = 0; s < FOLD_SLOTS; s++) {
        const int i4 = threadIdx.x + 256 * s;
        if (i4 >= n4) break;
        const float4 g = bf16x4_to_f32(w[s]);
        h[i4] = uint2{f32x2_to_h2(v[s].x * g.x * k, v[s].y * g.y * k), f32x2_to_h2(v[s].z * g.z * k, v[s].w * g.w * k)};
      }
      after[m] = 1.0f;
#else
      signed char* q = reinterpret_cast<signed char*>(smem) + (size_t)m * K;
      float2* qs = reinterpret_cast<float2*>(smem + (size_t)M * K) + (size_t)m * (K / 32);
#pragma unroll
      for (int s = 0; s < FOLD_SLOTS; s++) {
        const int i4 = threadIdx.x + 256 * s;
        if (256 * s >= n4) break;  // uniform; K % 128 == 0 keeps whole warps live
        const float4 g = bf16x4_to_f32(w[s]);
        quantize8x4(float4{v[s].x * g.x, v[s].y * g.y, v[s].z * g.z, v[s].w * g.w}, i4 < n4, q, qs, 4 * i4);
      }
#endif
    }
    __syncthreads();
#if QFMT == 3
    return XRows{nullptr, nullptr, reinterpret_cast<const u32*>(smem)};
#else
#pragma unroll
    for (int m = 0; m < M; m++) {
      float ss = 0.0f;
#pragma unroll
      for (int i = 0; i < kQWarps; i++) ss += squares[i][m];
      after[m] = rsqrtf(ss / K + n.eps);
    }
    return XRows{reinterpret_cast<const int*>(smem), reinterpret_cast<const float2*>(smem + (size_t)M * K), nullptr};
#endif
  }
};

// x as an earlier kernel made it.
struct GivenX {
  const XRows& x;
  __device__ __forceinline__ void before_wait() {}
  __device__ __forceinline__ XRows after_wait() { return x; }
};

// A product's x (X: GivenX, or NormFold, whose after[m] then scales the sums), and what the
// warp's outputs add at the end (`prior`: a residual stream's values for the lanes that write, 0
// elsewhere), read right after the wait rather than left to the end.
template <int M, typename X>
struct ProductInput {
  X x;
  const float* res;  // [M, n], or null
  int n, first;      // the warp's first output row of n
  bool writes;
  float (&prior)[ROWS][M];

  __device__ __forceinline__ void before_wait() { x.before_wait(); }
  __device__ __forceinline__ XRows after_wait() {
#pragma unroll
    for (int r = 0; r < ROWS; r++)
#pragma unroll
      for (int m = 0; m < M; m++)
        prior[r][m] = res && writes && first + r < n ? res[(size_t)m * n + first + r] : 0.0f;
    return x.after_wait();
  }
};

// Up to three products sharing x (q, k, v), output rows numbered across them; each warp group
// takes ROWS consecutive rows of one product (a product's row count is rounded up to ROWS).
struct QSegments {
  const chunk_t *w0, *w1, *w2;
  const void *s0, *s1, *s2;
  const bf16_t *b0, *b1, *b2;
  float *y0, *y1, *y2;
  int n0, n1, n2;
};

struct QSegment {
  const chunk_t* w;
  const void* sc;
  const bf16_t* bias;
  float* y;
  int n;
};

// The product holding row `first` of the rows numbered across the segments, each product's rows
// rounded up to a multiple of `unit`; `first` becomes the row within it.
__device__ __forceinline__ QSegment find_segment(const QSegments& s, int& first, int unit) {
  const int g0 = (s.n0 + unit - 1) / unit * unit, g1 = (s.n1 + unit - 1) / unit * unit;
  if (first < g0) return {s.w0, s.s0, s.b0, s.y0, s.n0};
  first -= g0;
  if (first < g1) return {s.w1, s.s1, s.b1, s.y1, s.n1};
  first -= g1;
  return {s.w2, s.s2, s.b2, s.y2, s.n2};
}

// y = x·Wᵀ + bias (+ res: a single product's residual stream, same layout as y); with NORM, x is
// made from the norm's input (NormFold), and `x` is not read.
template <int M, bool NORM>
__device__ __forceinline__ void qgemv(const QSegments& s, const XRows& x, const NormIn& norm, const float* res, int K,
                                      int group, int split, const L2Ranges& l2) {
  const int warp = threadIdx.x >> 5;
  int first = (blockIdx.x * (kQWarps / split) + warp / split) * ROWS;
  const QSegment seg = find_segment(s, first, ROWS);
  const chunk_t* w = seg.w;
  const void* sc = seg.sc;
  const int n = seg.n;
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
  float acc[ROWS][M], after[M], prior[ROWS][M];
#pragma unroll
  for (int m = 0; m < M; m++) {
    after[m] = 1.0f;
#pragma unroll
    for (int r = 0; r < ROWS; r++) acc[r][m] = 0.0f;
  }
  const bool writes = valid && (threadIdx.x & 31) == 0 && warp % split == 0;
  if constexpr (NORM) {
    ProductInput<M, NormFold<M>> input{{norm, K, after}, res, n, first, writes, prior};
    qdot_rows<M, qdepth(M, true)>(wr, scs, rows, input, l2, K, group, warp % split, split, valid, acc);
  } else {
    ProductInput<M, GivenX> input{{x}, res, n, first, writes, prior};
    qdot_rows<M, qdepth(M, false)>(wr, scs, rows, input, l2, K, group, warp % split, split, valid, acc);
  }
  if (combine_parts<M, ROWS, kQWarps>(acc, split) && valid) {
    // The output's segment found again rather than kept from the start: its pointers live across
    // the loop cost int8's GEMV two registers, and a block per multiprocessor (65 against 63).
    int first = (blockIdx.x * (kQWarps / split) + warp / split) * ROWS;
    const QSegment seg = find_segment(s, first, ROWS);
    const bf16_t* bias = seg.bias;
    float* y = seg.y;
    const int n = seg.n;
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
      if (first + r >= n) break;
      const float b = bias ? bf16_to_f32(bias[first + r]) : 0.0f;
#pragma unroll
      for (int m = 0; m < M; m++) y[(size_t)m * n + first + r] = acc[r][m] * after[m] + b + prior[r][m];
    }
  }
}

// silu(x·Wg + bg) * (x·Wu + bu) for quantized gate and up (ROWS = 2: a gate row and its up row).
template <int M>
__device__ __forceinline__ void qgate_up(const chunk_t* wg, const chunk_t* wu, const void* sg, const void* su,
                                         const bf16_t* bg, const bf16_t* bu, const XRows& x,
                                         float* __restrict__ y, unsigned short* __restrict__ yh, int N, int K,
                                         int group, int split, const L2Ranges& l2) {
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
  GivenX input{x};
  qdot_rows<M, qdepth(M, false)>(wr, scs, rows, input, l2, K, group, warp % split, split, valid, acc);
  if (combine_parts<M, ROWS, kQWarps>(acc, split) && valid) {
    const float gb = bg ? bf16_to_f32(bg[row]) : 0.0f, ub = bu ? bf16_to_f32(bu[row]) : 0.0f;
#pragma unroll
    for (int m = 0; m < M; m++) {
      const float a = acc[0][m] + gb;
      const float out = silu(a) * (acc[1][m] + ub);
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
  extern "C" __global__ void __launch_bounds__(256, QMINBLOCKS) qgemv_m##M(                            \
      QSegments s, const int* xq, const float2* xqs, const u32* xh, const float* res, int K, int group, \
      int split, L2Ranges l2) {                                                                        \
    qgemv<M, false>(s, XRows{xq, xqs, xh}, NormIn{}, res, K, group, split, l2);                        \
  }                                                                                                    \
  extern "C" __global__ void __launch_bounds__(256, QMINBLOCKS) qgate_up_m##M(                         \
      const chunk_t* wg, const chunk_t* wu, const void* sg, const void* su, const bf16_t* bg,          \
      const bf16_t* bu, const int* xq, const float2* xqs, const u32* xh, float* y, unsigned short* yh, \
      int N, int K, int group, int split, L2Ranges l2) {                                               \
    qgate_up<M>(wg, wu, sg, su, bg, bu, XRows{xq, xqs, xh}, y, yh, N, K, group, split, l2);            \
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

// The same products of the norm of x (NormFold), for one-row steps (foldsNorm in cuda-backend.ts).
#define QGEMV_NORM(M)                                                                                  \
  extern "C" __global__ void __launch_bounds__(256, QMINBLOCKS) qgemv_norm_m##M(                       \
      QSegments s, const float* nx, const bf16_t* nw, float eps, const float* res, int K, int group,   \
      int split, L2Ranges l2) {                                                                        \
    qgemv<M, true>(s, XRows{}, NormIn{nx, nw, eps}, res, K, group, split, l2);                         \
  }
QGEMV_NORM(1)

// ---- One-row gate·up with its norm folded in and its output rounded for down ----
//
// Two small kernels ran around every one-row gate·up: the norm before it (3.9 µs a layer in the
// 8B int4 timeline) and quantize_x after it (2.8 µs), which rounds its output per block of 32 for
// down. Folding the norm into the usual gate·up lost (session 11): each of its 1792 blocks made
// all of x. Rounding the output there lost too (session 13): a block of 32 outputs spans several
// thread blocks, which had to meet.
//
// Here a thread block owns 32 consecutive gate/up row pairs, one block of 32 of down's input, so
// it rounds its own outputs. Thread t owns the 32 k of K from 32 (t % S) (S = K / 32 threads,
// a stream; the FOLD_THREADS / S streams take rows stream, stream + FOLD_THREADS / S, ...). So a
// thread makes only its own block of 32 of x, once, in registers: it reads those 32 values of the
// norm's input and rounds x · γ to int8 without the 1 / rms, which scales the sums at the end (as
// in NormFold: a block of 32's codes do not change under a common factor). Its weight loads run
// FOLD_DEPTH rows ahead, the first ones issued before pdl_wait(). Blocks of 128 threads keep 8B's
// 448 blocks resident at once (4 a multiprocessor, at most 128 registers, which the launch bounds
// hold it to), with registers for the ring. Measured (session 17): at 3 a multiprocessor (int4
// given more registers) int4 fell from 525 to 468 tok/s; held to 5 (96 registers, spilling) to
// make room beside the previous product's last blocks, 507.
//
// A thread's partial sums of FOLD_BATCH rows are summed across its warp at once (reduce_scatter:
// 16 shuffles for 8 row pairs instead of 80), and the warps of each stream meet in shared memory
// at the end, where warp 0 finishes the block's 32 rows, one a lane. Integer schemes only; the
// host sends steps here when S is 32, 64 or 128 and 32 divides N (foldsGateUp).
#if QFMT != 3
// Rows each thread's loads run ahead. Measured on the H100 (8B, session 17): 4 against 2 took int4
// from 511 to 524 tok/s and int2-g32 from 551 to 602; int8 keeps 2, whose 4 takes 167 registers,
// three blocks a multiprocessor, and its 448 blocks no longer fit at once.
#ifndef FOLD_DEPTH
#define FOLD_DEPTH (QFMT == 0 ? 2 : 4)
#endif
#define FOLD_BATCH 8
#define FOLD_ROWS 32
#define UNIT_CHUNKS (32 / CHUNK_K)  // chunks of a row in a thread's 32 k
// Rows after the ring whose bytes each thread pulls into L2 right after its wait: the next 128
// of each of gate and up (int4 8 rows, int8 4, int2 16). Between the wait and the ring's first
// refill every block reads x and rounds it, and the memory would idle. Measured on the H100 (8B,
// session 18, alternating runs): int4-g128 526 → 537 tok/s with 4 rows, 538 with 8; int2-g32 603
// → 610 with 4, 613 with 8; int8 337 → 339 with 4, 329 with 8. Issued before the wait instead
// (beside o's last blocks) they gained nothing (int4 527.5 with 4 rows). Prefetching one row
// further at every fetch as well lost (int4 511).
#ifndef FOLD_NEXT
#define FOLD_NEXT (128 / (UNIT_CHUNKS * (int)sizeof(chunk_t)))
#endif
#define FOLD_THREADS 128
static_assert(FOLD_BATCH % FOLD_DEPTH == 0, "a batch of rows holds whole turns of the ring");

extern "C" __global__ void __launch_bounds__(FOLD_THREADS, 4) qgate_up_fold_m1(
    const chunk_t* __restrict__ wg, const chunk_t* __restrict__ wu, const void* sg, const void* su,
    const bf16_t* bg, const bf16_t* bu, const float* __restrict__ nx, const bf16_t* __restrict__ nw, float eps,
    float* __restrict__ y, signed char* __restrict__ yq, float2* __restrict__ yqs, int K, int group) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int units = K / 32, streams = FOLD_THREADS / units, stream = threadIdx.x / units, u = threadIdx.x % units;
  const int items = FOLD_ROWS / streams;  // rows of this thread, a multiple of FOLD_BATCH
  const int row0 = blockIdx.x * FOLD_ROWS + stream;
  const size_t step = (size_t)streams * (K / CHUNK_K);  // chunks from one of this thread's rows to the next
  const chunk_t* g_at = wg + (size_t)row0 * (K / CHUNK_K) + u * UNIT_CHUNKS;
  const chunk_t* u_at = wu + (size_t)row0 * (K / CHUNK_K) + u * UNIT_CHUNKS;
  chunk_t ring[FOLD_DEPTH][2][UNIT_CHUNKS];
  u32 ring_s[FOLD_DEPTH][2];  // as stored: decoded where used (see fetch)
  const auto fetch = [&](int d, int i) {
#pragma unroll
    for (int j = 0; j < UNIT_CHUNKS; j++) {
      ring[d][0][j] = load_chunk(g_at + i * step + j);
      ring[d][1][j] = load_chunk(u_at + i * step + j);
    }
    const int r = row0 + i * streams;
    // Decoded here, the conversion would wait for the load inside the branch that skips fetches
    // past the last row: an L2 round trip every fetch (gate·up 30.5 against 27.2 µs).
    ring_s[d][0] = *scale_at(sg, r, 32 * u, K, group);
    ring_s[d][1] = *scale_at(su, r, 32 * u, K, group);
  };
#pragma unroll
  for (int d = 0; d < FOLD_DEPTH; d++) fetch(d, d);
  uint4 gamma[4];  // γ of this thread's 32 k, as bf16
#pragma unroll
  for (int i = 0; i < 4; i++) gamma[i] = reinterpret_cast<const uint4*>(nw + 32 * u)[i];
  pdl_start();
  // The FOLD_NEXT rows after the ring pulled into L2 while x arrives (see FOLD_NEXT).
#pragma unroll
  for (int j = 0; j < FOLD_NEXT; j++)
    if (const int i = FOLD_DEPTH + j; i < items)
#pragma unroll
      for (int c = 0; c < UNIT_CHUNKS; c++) prefetch_line(g_at + i * step + c), prefetch_line(u_at + i * step + c);

  // This thread's block of 32 of x · γ, rounded to int8.
  int xq[8];
  float2 xs;
  float squares = 0.0f;
  {
    float v[32];
    const float4* xp = reinterpret_cast<const float4*>(nx + 32 * u);
#pragma unroll
    for (int i = 0; i < 8; i++) {
      const float4 x = xp[i], g = bf16x4_to_f32(reinterpret_cast<const uint2*>(gamma)[i]);
      squares += sum_squares(x);
      v[4 * i] = x.x * g.x, v[4 * i + 1] = x.y * g.y, v[4 * i + 2] = x.z * g.z, v[4 * i + 3] = x.w * g.w;
    }
    float amax = 0.0f, sum = 0.0f;
#pragma unroll
    for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(v[i])), sum += v[i];
    const float s = amax / 127.0f;
#pragma unroll
    for (int w = 0; w < 8; w++) xq[w] = (int)int8_codes4(float4{v[4 * w], v[4 * w + 1], v[4 * w + 2], v[4 * w + 3]}, amax, s);
    xs = float2{s, sum};
  }

  __shared__ float sums[FOLD_THREADS / 32][FOLD_ROWS][2];
  for (int i0 = 0; i0 < items; i0 += FOLD_BATCH) {
    float part[2 * FOLD_BATCH];
#pragma unroll
    for (int b = 0; b < FOLD_BATCH; b++) {
      const int i = i0 + b, d = b % FOLD_DEPTH;
      chunk_t w[2][UNIT_CHUNKS];
      float2 ws[2];
#pragma unroll
      for (int r = 0; r < 2; r++) {
        ws[r] = decode_scale(ring_s[d][r]);
#pragma unroll
        for (int j = 0; j < UNIT_CHUNKS; j++) w[r][j] = ring[d][r][j];
      }
      if (i + FOLD_DEPTH < items) fetch(d, i + FOLD_DEPTH);
#pragma unroll
      for (int r = 0; r < 2; r++) {
        int dot = 0;
#pragma unroll
        for (int j = 0; j < UNIT_CHUNKS; j++)
#pragma unroll
          for (int q = 0; q < CHUNK_K / 4; q++) dot = __dp4a(code_quad(w[r][j], q), xq[j * CHUNK_K / 4 + q], dot);
        part[2 * b + r] = (float)dot * xs.x * ws[r].x + ws[r].y * xs.y;
      }
    }
    // Lane L ends with value L % 16 (row i0 + L / 2, gate or up) summed over its half-warp.
    reduce_scatter<FOLD_BATCH>(part, lane);
    const float total = part[0] + __shfl_xor_sync(0xffffffffu, part[0], 16);
    if (lane < 2 * FOLD_BATCH) sums[warp][i0 + lane / 2][lane % 2] = total;
  }

  const float ss = block_sum(stream == 0 ? squares : 0.0f);  // its barriers also publish `sums`
  if (warp != 0) return;
  const int st = lane % streams, i = lane / streams, row = blockIdx.x * FOLD_ROWS + lane;
  const int warps = units / 32;  // of a stream
  float g = 0.0f, up = 0.0f;
  for (int w = st * warps; w < (st + 1) * warps; w++) g += sums[w][i][0], up += sums[w][i][1];
  const float after = rsqrtf(ss / K + eps);
  const float a = g * after + (bg ? bf16_to_f32(bg[row]) : 0.0f);
  const float out = silu(a) * (up * after + (bu ? bf16_to_f32(bu[row]) : 0.0f));
  y[row] = out;
  if (yq) quantize32(out, yq, yqs, row);
}
#endif

// ---- Steps of 2 to 16 rows on the tensor cores (sm_80 and later) ----
//
// The loop above multiplies each weight once per row of x, so a step of M rows costs about M
// times the instructions of one row. Here the tensor cores multiply each loaded weight with up to
// 16 rows of x at once, in half precision with float32 sums (m16n8k16 mmas), reading the same
// codes in the same layout as the GEMV.
//
// A warp owns a tile of 16 weight rows (gate·up: 8 gate rows and the same 8 up rows) and streams
// it through one slice of K; a block's 8 warps own 8 tiles and share the slice of x, which the
// block converts once to half into shared memory. In a step, lane (g, t) = (lane / 4, lane % 4)
// loads one whole chunk (16 bytes: int4 32 k, int8 and fp8 16; int2 8 bytes, 32 k) of rows g and
// g + 8: the four lanes t read 64 contiguous bytes of each row (int2 32). The codes become half in
// registers (word_pairs), centred for the integer schemes. int4, int2 and int8 in groups finer
// than a step scale and offset each pair in registers before its mma, so groups may differ between
// the lanes of one mma. fp8 (whose e4m3 times a block scale could leave half's range) and int8 in
// groups of whole steps instead sum the bare codes times x, and apply each group's scale (and
// offset, times the group's sum of x) to the float32 sums once a group (see qmma).
//
// The mma's k order is free as long as the weights (A) and x (B) agree: mma j of a step takes
// the lane's pairs 2j and 2j + 1, which hold the k that word_pairs decodes together, and x is
// staged with the same pairs (stage_x): (0, 2) and (1, 3) of every 4 consecutive k for the
// integer schemes, (0, 1) and (2, 3) for fp8.
//
// K is cut into gridDim.z slices (the host's qmmaSliceK, 1024) run by as many blocks, which keeps
// enough blocks for short products. Their float32 sums meet by mail on Hopper where the slices
// form a cluster (SliceMail), otherwise through global memory (gather_slices). A block loops over
// row blocks of its slice (gridDim.x ≤ row_blocks), its ring of loads running on from one into
// the next.
//
// Measured on the H100 (8B, session 16 of docs/BENCHMARKS.md), steps of 8 / 16 rows: int4 3.40 /
// 3.91 ms, int8 4.58 / 5.04, fp8 4.43 / 4.80, against one-row steps on the GEMV of 2.0, 3.0 and
// 2.9. So a verify step still costs well above its bytes: its products run near 1 TB/s, each
// warp latency-bound (Nsight Compute: 0.48 instructions a cycle per scheduler, four warps each,
// the stalls spread over loads, fixed-latency waits and barriers). One-row steps forced onto this
// kernel with parts of it left out (session 15) put the cost in three places that do not overlap
// with the weight stream: the decode and mmas (gate·up 39.4 -> 30.2 µs without them), the slices'
// meeting (-> 21.8) and x's staging (-> 18.0). Looping blocks, lanes taking 2 or 4 chunks side by
// side, an integer tensor-core variant (session 14) and slices meeting per warp without block
// barriers (session 16) did not change that.
// Weights brought into shared memory by the tensor memory accelerator, many stages ahead (session
// 21, branch experiment/qmma-tma), were slower still. With the meeting and x's staging left out
// the kernel streams about 2.2 TB/s. That is about what its instructions per weight allow at the
// issue rate measured. Fewer instructions per weight come first (scale and offset applied to the
// float32 sums once per group, x fragments shared by more tiles), before a deeper copy engine.
// Session 22 timed each product inside a verify step's graph (int4, 16 rows, µs a layer): gate·up
// 41.7, down 26.7, o 13.8, q/k/v 12.7, against 32.4 / 19.9 / 11.5 / 10.9 with the slices' meeting
// left out. The slices of gate·up, o and q/k/v (4 of 1024) now meet by mail: 35.7 / 12.5 / 12.1;
// down's 14 slices still meet through global memory (8 slices of 1792 by mail, and clusters of 14,
// were slower). Session 25 ran integer schemes on the integer tensor cores again (x as two signed
// bytes, branch experiment/qmma-int-pair): the loop's instructions fell by a fifth (int4, 8 rows:
// 428 -> 325 for two steps) and the steps were no faster; the fixed cost per block is what counts.

#define MMA_WARPS 8
// Half2 pairs of one weight row a lane holds per step, per word of codes, and the 16-byte
// pieces of staged x they meet per tile of 8 x rows.
#define MMA_PAIRS (CHUNK_K / 2)
#define WORD_PAIRS (MMA_PAIRS / CHUNK_WORDS)
#define X_PIECES (MMA_PAIRS / 4)
// k of one warp step: four lanes, a chunk each.
#define MMA_STEP_K (4 * CHUNK_K)
// Steps each lane keeps in flight (codes and scales; the first issued before pdl_wait). Measured
// on the H100 (8B, steps of 6 / 8 / 12 / 16 rows, session 16): 2 beats 4 by 5-7% for int4
// (16 rows 4.15 -> 3.97 ms), 2-4% for int8 and int2, level for fp8; 1 and 3 lose.
#ifndef QMMA_DEPTH
#define QMMA_DEPTH 2
#endif
// Blocks per multiprocessor the register allocation must allow: 3 (80 registers) lost to 2 in the
// same run, both with a ring of 2 (int4 16 rows 4.33 against 3.97 ms).
#ifndef QMMA_MINBLOCKS
#define QMMA_MINBLOCKS 2
#endif
// 16-byte pieces of x each thread loads at once while staging x.
#define X_BATCH 8

__device__ __forceinline__ u32 hsub2(u32 a, u32 b) {
  u32 r;
  asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}

// (a & b) | c in one LOP3. Written as C, with b and c both constants, the compiler emits two (an
// instruction takes one immediate): 64 of the 133 LOP3s in two steps of qmma's int4 loop were
// these ORs (session 24 of docs/BENCHMARKS.md: 8-row int4 steps 3.02 -> 2.90 ms, int2 2.85 -> 2.73).
__device__ __forceinline__ u32 and_or(u32 a, u32 b, u32 c) {
  u32 r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
  return r;
}

// Word w of a chunk's codes as WORD_PAIRS half2 values, code - CENTRE (exact) for the integer
// schemes. Codes or'ed into the mantissa of 1024 (0x6400) read as 1024 + code · 2^b, b their bit
// position in the half; one subtraction (or multiply-add) leaves code - CENTRE. Pair p holds
// k = 4 (p / 2) + p % 2 and that k + 2 of the word's k (integer schemes; fp8 k = 2p, 2p + 1).
__device__ __forceinline__ void word_pairs(u32 w, u32 (&p)[WORD_PAIRS]) {
#if QFMT == 1
  // Low nibbles of bytes 0, 2 are k 0, 2; of bytes 1, 3 (w >> 8) k 1, 3; high nibbles k + 4.
  const u32 v = w >> 8;
  p[0] = hsub2(and_or(w, 0x000F000Fu, 0x64006400u), 0x64086408u);                // - 1032
  p[1] = hsub2(and_or(v, 0x000F000Fu, 0x64006400u), 0x64086408u);
  p[2] = hfma2(and_or(w, 0x00F000F0u, 0x64006400u), 0x2C002C00u, 0xD480D480u);  // / 16 - 72
  p[3] = hfma2(and_or(v, 0x00F000F0u, 0x64006400u), 0x2C002C00u, 0xD480D480u);
#elif QFMT == 2
  // Bits 2s, 2s + 1 of bytes 0, 2 are k 4s, 4s + 2; of bytes 1, 3 k 4s + 1, 4s + 3: 1024 + code · 4^s.
  const u32 v = w >> 8;
  const u32 mul[4] = {0x3C003C00u, 0x34003400u, 0x2C002C00u, 0x24002400u};  // 4^-s
  const u32 sub[4] = {0xE402E402u, 0xDC08DC08u, 0xD420D420u, 0xCC80CC80u};  // -(1024 · 4^-s + 2)
#pragma unroll
  for (int s = 0; s < 4; s++) {
    p[2 * s] = hfma2(and_or(w, 0x00030003u << 2 * s, 0x64006400u), mul[s], sub[s]);
    p[2 * s + 1] = hfma2(and_or(v, 0x00030003u << 2 * s, 0x64006400u), mul[s], sub[s]);
  }
#elif QFMT == 0
  // Signed bytes k 0..3, made unsigned (+128) and placed under 0x64: 1024 + 128 + code.
  const u32 u = w ^ 0x80808080u;
  p[0] = hsub2(__byte_perm(u, 0x64646464u, 0x4240), 0x64806480u);
  p[1] = hsub2(__byte_perm(u, 0x64646464u, 0x4341), 0x64806480u);
#else
  p[0] = fp8_pair(w, 0), p[1] = fp8_pair(w, 1);
#endif
}

// The block's slice of x (k0 .. k0 + steps · MMA_STEP_K of every row) as half in shared memory,
// in the order the lanes read it: for step s, x tile i (rows 8i .. 8i + 7), piece q and lane
// (g, t), the 16 bytes at ((s · NT + i) · X_PIECES + q) · 32 + lane hold pairs 4q .. 4q + 3 of
// lane t's chunk for row 8i + g (zero for rows past M). Integer schemes read x's plain half copy
// where its producer made one (x.h: qmma_gate_up's output for down), its pairs reordered, and
// otherwise x's int8 copy: code times its block's scale, rounded to half once. Each thread issues
// a batch of X_BATCH loads before it converts any: they are L2 hits queued behind the weight
// stream.
template <int NT>
__device__ __forceinline__ void stage_x(uint4* __restrict__ xs, float* __restrict__ group_sums, const XRows& x, int M,
                                        int K, int k0, int steps, int shift) {
  const int n = steps * NT * X_PIECES * 32;
  for (int base = threadIdx.x; base < n; base += 256 * X_BATCH) {
    uint4 h[X_BATCH];
#if QFMT != 3
    uint2 c[X_BATCH];
    float sc[X_BATCH];
#endif
#pragma unroll
    for (int j = 0; j < X_BATCH; j++) {
      const int e = base + 256 * j;
      const int lane = e & 31, q = (e >> 5) % X_PIECES, i = (e >> 5) / X_PIECES % NT, s = (e >> 5) / X_PIECES / NT;
      const int m = 8 * i + (lane >> 2);
      const bool live = e < n && m < M;
      const size_t k = (size_t)m * K + k0 + s * MMA_STEP_K + (lane & 3) * CHUNK_K + 8 * q;
#if QFMT == 3
      h[j] = live ? *reinterpret_cast<const uint4*>(x.h + k / 2) : uint4{0u, 0u, 0u, 0u};  // pairs in order
#else
      if (x.h) {
        h[j] = live ? *reinterpret_cast<const uint4*>(x.h + k / 2) : uint4{0u, 0u, 0u, 0u};
        continue;
      }
      c[j] = live ? *reinterpret_cast<const uint2*>(reinterpret_cast<const signed char*>(x.q) + k) : uint2{0u, 0u};
      sc[j] = live ? x.qs[k / 32].x : 0.0f;
#endif
    }
#pragma unroll
    for (int j = 0; j < X_BATCH; j++) {
      const int e = base + 256 * j;
      if (e >= n) break;
#if QFMT == 3
      xs[e] = h[j];
#else
      if (x.h) {  // k 0..7 in order to the pairs (0, 2), (1, 3), (4, 6), (5, 7)
        xs[e] = uint4{__byte_perm(h[j].x, h[j].y, 0x5410), __byte_perm(h[j].x, h[j].y, 0x7632),
                      __byte_perm(h[j].z, h[j].w, 0x5410), __byte_perm(h[j].z, h[j].w, 0x7632)};
        continue;
      }
      float v[8];
#pragma unroll
      for (int b = 0; b < 8; b++) v[b] = (float)(signed char)((b < 4 ? c[j].x : c[j].y) >> (8 * (b & 3))) * sc[j];
      xs[e] = uint4{f32x2_to_h2(v[0], v[2]), f32x2_to_h2(v[1], v[3]), f32x2_to_h2(v[4], v[6]), f32x2_to_h2(v[5], v[7])};
#endif
    }
  }
#if QFMT != 3
  // Where scales apply to the sums (qmma_blocks), x's sum per row over each group's part r of the
  // slice (groups of 1 << shift k), which the weights' offsets meet: entry r · 8 · NT + m, summed
  // by a warp from quantize_x's block sums, a lane a block of 32 (and every 32nd after it), or
  // from x's half copy, a lane 8 values at a time.
  if (group_sums == nullptr) return;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, end = k0 + steps * MMA_STEP_K;
  const int first = k0 >> shift, parts = ((end - 1) >> shift) - first + 1;
  for (int e = warp; e < parts * NT * 8; e += 8) {
    const int r = e / (NT * 8), m = e % (NT * 8);
    const int hi = m < M ? min(end, (first + r + 1) << shift) : 0;
    float sum = 0.0f;
    if (x.h)
      for (int k = max(k0, (first + r) << shift) + 8 * lane; k < hi; k += 8 * 32) {
        const uint4 v = *reinterpret_cast<const uint4*>(x.h + ((size_t)m * K + k) / 2);
        const float2 a = h2_to_f32x2(v.x), b = h2_to_f32x2(v.y), c = h2_to_f32x2(v.z), d = h2_to_f32x2(v.w);
        sum += ((a.x + a.y) + (b.x + b.y)) + ((c.x + c.y) + (d.x + d.y));
      }
    else
      for (int k = max(k0, (first + r) << shift) + 32 * lane; k < hi; k += 32 * 32)
        sum += x.qs[((size_t)m * K + k) / 32].y;
    sum = warp_sum(sum);
    if (lane == 0) group_sums[e] = sum;
  }
#endif
}

// One step of a lane's weight stream: the chunks of rows g and g + 8 and their stored scales.
struct MmaStage {
  chunk_t w[2];
  u32 s[2];
};

__device__ __forceinline__ void mma_f16(float (&c)[4], const u32 (&a)[4], u32 b0, u32 b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// A stored scale as (scale, offset) of word_pairs' values: for the integer schemes
// w = s · code + o = s · (code - CENTRE) + (o + CENTRE · s); fp8 (block scale, 0), x being staged
// times FP8_X_SCALE.
__device__ __forceinline__ float2 mma_scale(u32 v) {
#if QFMT == 3
  return decode_scale(v);
#else
  const float2 f = h2_to_f32x2(v);
  return float2{f.x, f.y + CENTRE * f.x};
#endif
}

// sums[i] += the step's products of the tile with x tile i: lane (g, t) gets weight rows g
// (elements 0, 1) and g + 8 (2, 3) with x rows 8i + 2t and 8i + 2t + 1. SCALED: each weight pair
// is scaled and offset before its mma; otherwise the sums are of the bare (centred) codes.
template <int NT, bool SCALED>
__device__ __forceinline__ void mma_step(const MmaStage& st, const uint4* __restrict__ xp, float (&sums)[NT][4]) {
  u32 xv[NT][MMA_PAIRS];
#pragma unroll
  for (int i = 0; i < NT; i++)
#pragma unroll
    for (int q = 0; q < X_PIECES; q++) {
      const uint4 v = xp[(i * X_PIECES + q) * 32];
      xv[i][4 * q] = v.x, xv[i][4 * q + 1] = v.y, xv[i][4 * q + 2] = v.z, xv[i][4 * q + 3] = v.w;
    }
  // Each row's (scale, offset) for its centred codes, as half2 pairs.
  u32 sc[2], off[2];
  if (SCALED)
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const float o = mma_scale(st.s[r]).y;
      sc[r] = __byte_perm(st.s[r], 0u, 0x1010);
      off[r] = f32x2_to_h2(o, o);
    }
#pragma unroll
  for (int w = 0; w < CHUNK_WORDS; w++) {
    u32 a[WORD_PAIRS], b[WORD_PAIRS];
    word_pairs(word(st.w[0], w), a);
    word_pairs(word(st.w[1], w), b);
    if (SCALED)
#pragma unroll
      for (int p = 0; p < WORD_PAIRS; p++) a[p] = hfma2(a[p], sc[0], off[0]), b[p] = hfma2(b[p], sc[1], off[1]);
#pragma unroll
    for (int j = 0; j < WORD_PAIRS / 2; j++) {
      const u32 frag[4] = {a[2 * j], b[2 * j], a[2 * j + 1], b[2 * j + 1]};
      const int p = w * WORD_PAIRS + 2 * j;
#pragma unroll
      for (int i = 0; i < NT; i++) mma_f16(sums[i], frag, xv[i][p], xv[i][p + 1]);
    }
  }
}

// Where a lane's two rows of one warp tile start (codes, stored scales), and whether the tile lies
// in the product: the lanes of a tile past it still stage x and meet the block's barriers.
struct MmaRows {
  const chunk_t* w[2];
  const u32* s[2];
  bool live;
};

// Rows rows[r] of codes[r] (tile rows g + 8r), each with `groups` scale entries (fp8: each row of
// 128×128 blocks).
__device__ __forceinline__ MmaRows mma_rows(const chunk_t* const (&codes)[2], const void* const (&scales)[2],
                                            const int (&rows)[2], bool live, int K, int groups) {
  MmaRows m;
  m.live = live;
#pragma unroll
  for (int r = 0; r < 2; r++) {
    m.w[r] = codes[r] + (size_t)rows[r] * (K / CHUNK_K);
    m.s[r] = reinterpret_cast<const u32*>(scales[r]) +
             (size_t)(QFMT == 3 ? rows[r] / 128 : rows[r]) * groups;
  }
  return m;
}

// Without mail, with gridDim.z slices: row block rb's sums of this block's slice go to
// `partials`, and the last of the row block's gridDim.z blocks to arrive replaces every lane's
// sums with the slices' total (added in slice order) and resets the row block's counter; true for
// the block that then writes the outputs. Every thread calls it. Only thread 0 fences, after the
// barrier that orders every thread's stores before it (a release cumulative over the block), so
// the other warps' loads for the next row block stay in flight.
template <int NT>
__device__ __forceinline__ bool gather_slices(float (&acc)[NT][4], float* __restrict__ partials, int* counters,
                                              int rb, int row_blocks, int M) {
  if (gridDim.z == 1) return true;
  float4* const mine = reinterpret_cast<float4*>(partials) + ((size_t)rb * blockDim.x + threadIdx.x) * NT;
  const size_t slice_stride = (size_t)row_blocks * blockDim.x * NT;
  // Only sums of x rows below M travel: lane t holds x rows 8i + 2t and 8i + 2t + 1.
  const int t = threadIdx.x & 3;
#pragma unroll
  for (int i = 0; i < NT; i++)
    if (8 * i + 2 * t < M)
      __stcg(mine + blockIdx.z * slice_stride + i, float4{acc[i][0], acc[i][1], acc[i][2], acc[i][3]});
  __shared__ bool last;
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    last = atomicAdd(counters + rb, 1) == (int)gridDim.z - 1;
    if (last) counters[rb] = 0;
    __threadfence();
  }
  __syncthreads();
  if (!last) return false;
#pragma unroll
  for (int i = 0; i < NT; i++) {
    if (8 * i + 2 * t >= M) continue;
    float4 v = float4{0.0f, 0.0f, 0.0f, 0.0f};
    for (int s = 0; s < (int)gridDim.z; s++) {
      const float4 p = __ldcg(mine + s * slice_stride + i);
      v.x += p.x, v.y += p.y, v.z += p.z, v.w += p.w;
    }
    acc[i][0] = v.x, acc[i][1] = v.y, acc[i][2] = v.z, acc[i][3] = v.w;
  }
  return true;
}

// Sums a warp's lanes hold for x rows below M (lane t: rows 8i + 2t and 8i + 2t + 1 of x tile i), as
// float4s.
template <int NT>
__device__ __forceinline__ int live_sums(int M) {
  int n = 0;
#pragma unroll
  for (int i = 0; i < NT; i++) n += 8 * min(4, max(0, (M - 8 * i + 1) / 2));
  return n;
}

// On Hopper the slices of a row block run as one cluster (gridDim.z blocks along z) and meet by
// mail (Mailbox, common.cuh): warp w's tile of every row block is finished by the cluster's block w %
// slices, its owner. The other blocks' warps w send it their float32 sums (live x rows only) into
// its shared memory and go on to their next row block at once: no block barrier, no fence, no
// global memory, and only the owner's warp waits. Each row block a block loops over (a round) has
// its own mailboxes and slots, so none is reused and no sender waits for one to be emptied. The
// owner adds the slices' sums in slice order, so the result does not depend on which came first.
// A block owns at most `owned` tiles of a row block (slices ≤ 8, the portable cluster size).
template <int NT>
struct SliceMail {
  float4* slots;              // [round][owned tile][slice][NT][lane]
  unsigned long long* boxes;  // [round][owned tile]
  int slices, owned;

  // The slots and mailboxes of `rounds` row blocks, in shared memory at `at` (after x).
  __device__ __forceinline__ SliceMail(void* at, int rounds)
      : slots(reinterpret_cast<float4*>(at)),
        slices(gridDim.z),
        owned((MMA_WARPS + (int)gridDim.z - 1) / (int)gridDim.z) {
    boxes = reinterpret_cast<unsigned long long*>(slots + (size_t)rounds * owned * slices * NT * 32);
  }

  // Before the wait: thread 0 arms every mailbox for the sums the other slices send, and every
  // thread arrives at the cluster barrier that ready() waits on.
  __device__ __forceinline__ void open(int rounds, int M) const {
    if (threadIdx.x == 0)
      for (int b = 0; b < rounds * owned; b++) Mailbox{boxes + b}.arm((slices - 1) * 16 * live_sums<NT>(M));
    cluster_arrive_relaxed();
  }

  // Every block's mailboxes are armed (every thread, before its first send).
  __device__ __forceinline__ void ready() const { cluster_wait(); }

  // After round j: the sums go to the tile's owner; true for the owner's lanes, which then hold
  // the slices' total.
  __device__ __forceinline__ bool meet(float (&acc)[NT][4], int j, int M) const {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, t = lane & 3;
    const int owner = warp % slices, me = blockIdx.z, b = j * owned + warp / slices;
    float4* const slot = slots + (size_t)b * slices * NT * 32 + lane;
    const Mailbox mail{boxes + b};
    if (owner != me) {
#pragma unroll
      for (int i = 0; i < NT; i++)
        if (8 * i + 2 * t < M)
          mail.send(slot + (me * NT + i) * 32, float4{acc[i][0], acc[i][1], acc[i][2], acc[i][3]}, owner);
      return false;
    }
    mail.wait();
#pragma unroll
    for (int i = 0; i < NT; i++) {
      if (8 * i + 2 * t >= M) continue;
      float4 v = float4{0.0f, 0.0f, 0.0f, 0.0f};
      for (int r = 0; r < slices; r++) {
        const float4 p = r == me ? float4{acc[i][0], acc[i][1], acc[i][2], acc[i][3]} : slot[(r * NT + i) * 32];
        v.x += p.x, v.y += p.y, v.z += p.z, v.w += p.w;
      }
      acc[i][0] = v.x, acc[i][1] = v.y, acc[i][2] = v.z, acc[i][3] = v.w;
    }
    return true;
  }
};

// The block's row blocks of the product (blockIdx.x, + gridDim.x, …; a row block is the 8 warp
// tiles of a block) over its slice of K (blockIdx.z · slice, up to slice k). x's slice is staged
// once, and each lane's ring of loads runs on from one row block into the next, so the weight
// stream does not stop while a row block's sums meet the other slices' and are written
// (p.finish). A row block takes `padded` ring steps (its steps rounded up to the ring's depth),
// which keeps every step in the same ring slot whatever row block it belongs to. SCALED_CODES: the
// weights are scaled in registers (mma_step); otherwise once a group, on its float32 sums.
template <int NT, bool SCALED_CODES, typename Product>
__device__ __forceinline__ void qmma_blocks(const Product& p, const XRows& x, int M, int K, int group, int slice,
                                            float* partials, int* counters) {
  extern __shared__ uint4 xs[];
  const int lane = threadIdx.x & 31, t = lane & 3;
  const int k0 = blockIdx.z * slice, steps = (min(K, k0 + slice) - k0) / MMA_STEP_K;
  const int padded = (steps + QMMA_DEPTH - 1) / QMMA_DEPTH * QMMA_DEPTH;
  // The scale of k is entry k >> shift of its row: groups of a power of two, or one group a row.
  const int shift = QFMT == 3 ? 7 : group >= K ? 32 - __clz(K - 1) : 31 - __clz(group);
  const int groups = QFMT == 3 ? (K + 127) / 128 : (K + group - 1) / group;
  const int blocks = (p.row_blocks - 1 - (int)blockIdx.x) / (int)gridDim.x + 1;
  // The fetch cursor: step fs of this block's row block fj, whose rows are fr.
  int fj = 0, fs = 0;
  MmaRows fr = p.rows(blockIdx.x, K, groups);
  auto fetch_next = [&](MmaStage& st) {
    if (fj < blocks && fs < steps && fr.live) {
      const int k = k0 + fs * MMA_STEP_K + t * CHUNK_K;
#pragma unroll
      for (int r = 0; r < 2; r++) st.w[r] = load_chunk(fr.w[r] + k / CHUNK_K), st.s[r] = fr.s[r][k >> shift];
    }
    if (++fs == padded) {
      fs = 0;
      if (++fj < blocks) fr = p.rows(blockIdx.x + fj * gridDim.x, K, groups);
    }
  };
  MmaStage ring[QMMA_DEPTH];
#pragma unroll
  for (int d = 0; d < QMMA_DEPTH; d++) fetch_next(ring[d]);
  // Shared memory: x's slice, its sums by group (integer schemes; at most one a step), the mail slots.
  const int slice_steps = min(K, slice) / MMA_STEP_K;
  float* const group_sums = reinterpret_cast<float*>(xs + (size_t)slice_steps * NT * X_PIECES * 32);
#if __CUDA_ARCH__ >= 900
  // Slices meet by mail where the host launched them as a cluster and gave no scratch space.
  const bool by_mail = gridDim.z > 1 && partials == nullptr;
  const SliceMail<NT> mail(group_sums + (QFMT == 3 ? 0 : slice_steps * NT * 8), blocks);
  if (by_mail) mail.open(blocks, M);
#endif
  pdl_start();
  stage_x<NT>(xs, SCALED_CODES || QFMT == 3 ? nullptr : group_sums, x, M, K, k0, steps, shift);
  __syncthreads();
  for (int j = 0; j < blocks; j++) {
    const int rb = blockIdx.x + j * gridDim.x;
    const bool live = p.rows(rb, K, groups).live;
    float acc[NT][4], part[NT][4];  // unless SCALED_CODES, part: the current group's sums of bare codes
#pragma unroll
    for (int i = 0; i < NT; i++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[i][e] = part[i][e] = 0.0f;
    for (int s0 = 0; s0 < padded; s0 += QMMA_DEPTH) {
#pragma unroll
      for (int d = 0; d < QMMA_DEPTH; d++) {
        const int s = s0 + d;
        const MmaStage st = ring[d];
        fetch_next(ring[d]);
        if (s >= steps || !live) continue;
        const uint4* xp = xs + (size_t)s * NT * X_PIECES * 32 + lane;
        if (SCALED_CODES) {
          mma_step<NT, true>(st, xp, acc);
          continue;
        }
        mma_step<NT, false>(st, xp, part);
        if (((k0 + (s + 1) * MMA_STEP_K) & ((1 << shift) - 1)) == 0 || s == steps - 1) {
          // The group ends (or the slice): rows g and g + 8 (or gate and up) each lie in one group,
          // whose part r of the slice x rows 8i + 2t, + 1 sum to xsum.
          const float2 f[2] = {mma_scale(st.s[0]), mma_scale(st.s[1])};
          const int r = ((k0 + s * MMA_STEP_K) >> shift) - (k0 >> shift);
#pragma unroll
          for (int i = 0; i < NT; i++) {
#if QFMT != 3
            const float2 xsum = *reinterpret_cast<const float2*>(group_sums + (r * NT + i) * 8 + 2 * t);
#endif
#pragma unroll
            for (int e = 0; e < 4; e++) {
#if QFMT == 3
              acc[i][e] += part[i][e] * f[e / 2].x;
#else
              acc[i][e] += part[i][e] * f[e / 2].x + f[e / 2].y * (e & 1 ? xsum.y : xsum.x);
#endif
              part[i][e] = 0.0f;
            }
          }
        }
      }
    }
#if __CUDA_ARCH__ >= 900
    if (by_mail) {
      if (j == 0) mail.ready();
      if (live && mail.meet(acc, j, M)) p.template finish<NT>(rb, acc);
      continue;
    }
#endif
    if (gather_slices<NT>(acc, partials, counters, rb, p.row_blocks, M) && live) p.template finish<NT>(rb, acc);
  }
}

// q/k/v-style products (QSegments) of M rows: warp w of row block rb owns tile 8 rb + w (16 rows
// of one product); res as in qgemv.
struct SegmentTiles {
  const QSegments& s;
  const float* res;
  int M, row_blocks;

  // The tile's first row, within its product.
  __device__ __forceinline__ QSegment tile(int rb, int& r0) const {
    r0 = (rb * MMA_WARPS + (int)(threadIdx.x >> 5)) * 16;
    return find_segment(s, r0, 16);
  }

  __device__ __forceinline__ MmaRows rows(int rb, int K, int groups) const {
    const int g = (threadIdx.x & 31) >> 2;
    int r0;
    const QSegment seg = tile(rb, r0);
    const bool live = r0 < seg.n;
    const int rows[2] = {live ? min(r0 + g, seg.n - 1) : 0, live ? min(r0 + g + 8, seg.n - 1) : 0};
    return mma_rows({seg.w, seg.w}, {seg.sc, seg.sc}, rows, live, K, groups);
  }

  template <int NT>
  __device__ __forceinline__ void finish(int rb, const float (&acc)[NT][4]) const {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    int r0;
    const QSegment seg = tile(rb, r0);
    const int n = seg.n;
#pragma unroll
    for (int i = 0; i < NT; i++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int m = 8 * i + 2 * t + (e & 1), r = r0 + g + 8 * (e >> 1);
        if (m >= M || r >= n) continue;
        const size_t o = (size_t)m * n + r;
        seg.y[o] = acc[i][e] + (seg.bias ? bf16_to_f32(seg.bias[r]) : 0.0f) + (res ? res[o] : 0.0f);
      }
  }
};

// silu(x·Wg + bg) * (x·Wu + bu) of M rows: a warp's tile is 8 gate rows (tile rows 0..7) and the
// same 8 up rows (8..15), so each lane holds a gate sum and its up sum.
struct GateUpTiles {
  const chunk_t *wg, *wu;
  const void *sg, *su;
  const bf16_t *bg, *bu;
  float* y;
  unsigned short* yh;
  int M, N, row_blocks;

  // The lane's gate (and up) row.
  __device__ __forceinline__ int row(int rb) const {
    return (rb * MMA_WARPS + (int)(threadIdx.x >> 5)) * 8 + ((threadIdx.x & 31) >> 2);
  }

  __device__ __forceinline__ MmaRows rows(int rb, int K, int groups) const {
    const int r = row(rb), g = (threadIdx.x & 31) >> 2;
    const bool live = r - g < N;
    const int rows[2] = {live ? min(r, N - 1) : 0, live ? min(r, N - 1) : 0};
    return mma_rows({wg, wu}, {sg, su}, rows, live, K, groups);
  }

  template <int NT>
  __device__ __forceinline__ void finish(int rb, const float (&acc)[NT][4]) const {
    const int r = row(rb), t = threadIdx.x & 3;
    if (r >= N) return;
    const float gb = bg ? bf16_to_f32(bg[r]) : 0.0f, ub = bu ? bf16_to_f32(bu[r]) : 0.0f;
#pragma unroll
    for (int i = 0; i < NT; i++)
#pragma unroll
      for (int e = 0; e < 2; e++) {
        const int m = 8 * i + 2 * t + e;
        if (m >= M) continue;
        const float a = acc[i][e] + gb;
        const float out = silu(a) * (acc[i][2 + e] + ub);
        y[(size_t)m * N + r] = out;
        // For a down product on the tensor cores: fp8 weights read x · FP8_X_SCALE, integer ones x.
        if (yh) yh[(size_t)m * N + r] = f32_to_h(QFMT == 3 ? out * FP8_X_SCALE : out);
      }
  }
};

// qmma_blocks with the weights' scales on the sums (fp8; int8 in groups of whole steps), or in
// registers (int4, int2, finer int8 groups). Measured on the H100 (8B, session 24 of
// docs/BENCHMARKS.md, µs a layer in verify steps of 8 / 16 rows): int8's gate·up 49.7 -> 47.5 and
// 54.4 -> 52.6 with one scale a row, applied once a slice. int4's groups of 128 are one step
// each, and there the float work per group cost about what it saved: gate·up 30.4 -> 29.6 at 8
// rows, 35.7 -> 36.2 at 16.
template <int NT, typename Product>
__device__ __forceinline__ void qmma(const Product& p, const XRows& x, int M, int K, int group, int slice,
                                     float* partials, int* counters) {
#if QFMT == 0
  if (group >= MMA_STEP_K) return qmma_blocks<NT, false>(p, x, M, K, group, slice, partials, counters);
#endif
  qmma_blocks<NT, QFMT != 3>(p, x, M, K, group, slice, partials, counters);
}

#if __CUDA_ARCH__ >= 800
// qmma_m8 for steps of up to 8 rows (one mma tile of x rows), qmma_m16 for 9..16 (two); a grid of
// gridDim.x ≤ row_blocks blocks per slice of K.
#define QMMA(MT)                                                                                       \
  extern "C" __global__ void __launch_bounds__(256, QMMA_MINBLOCKS)                                    \
      qmma_m##MT(QSegments s, const int* xq, const float2* xqs, const u32* xh, const float* res, int M, int K, \
                 int group, int slice, int row_blocks, float* partials, int* counters) {              \
    qmma<MT / 8>(SegmentTiles{s, res, M, row_blocks}, XRows{xq, xqs, xh}, M, K, group, slice, partials,   \
                 counters);                                                                            \
  }                                                                                                    \
  extern "C" __global__ void __launch_bounds__(256, QMMA_MINBLOCKS) qmma_gate_up_m##MT(                \
      const chunk_t* wg, const chunk_t* wu, const void* sg, const void* su, const bf16_t* bg,          \
      const bf16_t* bu, const int* xq, const float2* xqs, const u32* xh, float* y, unsigned short* yh, \
      int M, int N, int K, int group, int slice, int row_blocks, float* partials, int* counters) {      \
    qmma<MT / 8>(GateUpTiles{wg, wu, sg, su, bg, bu, y, yh, M, N, row_blocks}, XRows{xq, xqs, xh}, M, K,  \
                 group, slice, partials, counters);                                                    \
  }
QMMA(8)
QMMA(16)
#endif
