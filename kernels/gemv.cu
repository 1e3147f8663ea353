// Matrix-vector products for M = 1..16 rows: W is bf16 [N, K] row-major, x and y float32.
// Batch-1 decode is bound by reading W once, so warps stream weight rows with 16-byte loads,
// several in flight per lane; the M rows of x (small, hot in L1/L2) are read alongside, so a
// verify step of M rows costs about one weight read. Requires K % 8 == 0.
//
// `split` warps (1, 2 or 4) share one output row, each taking every split-th 32-chunk stripe of K,
// when a matrix has too few rows to fill the GPU with one warp per row; their sums meet in shared
// memory.

// Weight chunks each lane loads before pdl_wait(), and the main loop's unroll (loads in flight).
#ifndef GEMV_PREFETCH
#define GEMV_PREFETCH 2
#endif
#ifndef GEMV_UNROLL
#define GEMV_UNROLL 8
#endif
#define PREFETCH GEMV_PREFETCH
constexpr int kUnroll = GEMV_UNROLL;  // #pragma unroll takes a constant, not a macro
constexpr int kWarps = 8;             // warps per block (256 threads)

// acc[r][m] += dot(W row r, x[m]) over this warp's stripes of K, for ROWS weight rows at once
// (1: a plain product; 2: gate and up), reduced across the warp. The first PREFETCH chunks of
// each row are loaded before pdl_wait(): weights never depend on the previous kernel.
template <int M, int ROWS>
__device__ __forceinline__ void dot_rows(const uint4* const (&wr)[ROWS], const float* __restrict__ x, int K,
                                         int part, int split, bool valid, float (&acc)[ROWS][M]) {
  const int lane = threadIdx.x & 31;
  const int chunks = valid ? K >> 3 : 0;
  const int first = lane + 32 * part, stride = 32 * split;
  uint4 pre[ROWS][PREFETCH];
#pragma unroll
  for (int j = 0; j < PREFETCH; j++)
#pragma unroll
    for (int r = 0; r < ROWS; r++)
      pre[r][j] = first + stride * j < chunks ? load_stream(wr[r] + first + stride * j) : uint4{0u, 0u, 0u, 0u};
  pdl_start();
  auto consume = [&](const uint4 (&p)[ROWS], int c) {
#pragma unroll
    for (int m = 0; m < M; m++) {
      const float4* xv = reinterpret_cast<const float4*>(x + (size_t)m * K) + 2 * c;
      const float4 a = xv[0], b = xv[1];
#pragma unroll
      for (int r = 0; r < ROWS; r++) {
        acc[r][m] += bf16lo(p[r].x) * a.x + bf16hi(p[r].x) * a.y + bf16lo(p[r].y) * a.z +
                     bf16hi(p[r].y) * a.w + bf16lo(p[r].z) * b.x + bf16hi(p[r].z) * b.y +
                     bf16lo(p[r].w) * b.z + bf16hi(p[r].w) * b.w;
      }
    }
  };
#pragma unroll
  for (int j = 0; j < PREFETCH; j++) {
    if (first + stride * j < chunks) {
      uint4 p[ROWS];
#pragma unroll
      for (int r = 0; r < ROWS; r++) p[r] = pre[r][j];
      consume(p, first + stride * j);
    }
  }
#pragma unroll kUnroll
  for (int c = first + stride * PREFETCH; c < chunks; c += stride) {
    uint4 p[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; r++) p[r] = load_stream(wr[r] + c);
    consume(p, c);
  }
#pragma unroll
  for (int r = 0; r < ROWS; r++)
#pragma unroll
    for (int m = 0; m < M; m++) acc[r][m] = warp_sum(acc[r][m]);
}

// Up to three products sharing x (q, k and v; or a single one): output rows are numbered across
// the segments, so one launch covers all three weights. Fields are scalars, not arrays: a
// run-time index into a kernel parameter array would copy it to local memory.
struct Segments {
  const uint4 *w0, *w1, *w2;
  const bf16_t *b0, *b1, *b2;
  float *y0, *y1, *y2;
  int n0, n1, n2;
};

// y = x·Wᵀ + bias (+ res: a single product's residual stream, same layout as y).
template <int M>
__device__ __forceinline__ void gemv(const Segments& s, const float* __restrict__ x, const float* __restrict__ res,
                                     int K, int split) {
  const int warp = threadIdx.x >> 5;
  int row = blockIdx.x * (kWarps / split) + warp / split;
  const uint4* w = s.w0;
  const bf16_t* bias = nullptr;
  float* y = nullptr;
  int n = 0;
  bool valid = true;
  if (row < s.n0) {
    w = s.w0, bias = s.b0, y = s.y0, n = s.n0;
  } else if ((row -= s.n0) < s.n1) {
    w = s.w1, bias = s.b1, y = s.y1, n = s.n1;
  } else if ((row -= s.n1) < s.n2) {
    w = s.w2, bias = s.b2, y = s.y2, n = s.n2;
  } else {
    valid = false;  // past the last row: still takes part in the block's barrier
    row = 0;
  }
  float acc[1][M];
#pragma unroll
  for (int m = 0; m < M; m++) acc[0][m] = 0.0f;
  const uint4* const wr[1] = {w + (size_t)row * (K >> 3)};
  dot_rows<M, 1>(wr, x, K, warp % split, split, valid, acc);
  if (combine_parts<M, 1, kWarps>(acc, split) && valid) {
    const float b = bias ? bf16_to_f32(bias[row]) : 0.0f;
#pragma unroll
    for (int m = 0; m < M; m++) {
      const size_t i = (size_t)m * n + row;
      y[i] = acc[0][m] + b + (res ? res[i] : 0.0f);
    }
  }
}

// silu(x·Wg + bg) * (x·Wu + bu): the MLP's two input projections and its activation in one pass.
template <int M>
__device__ __forceinline__ void gate_up(const uint4* __restrict__ wg, const uint4* __restrict__ wu,
                                        const bf16_t* __restrict__ bg, const bf16_t* __restrict__ bu,
                                        const float* __restrict__ x, float* __restrict__ y, int N, int K,
                                        int split) {
  const int warp = threadIdx.x >> 5;
  const int row = blockIdx.x * (kWarps / split) + warp / split;
  const bool valid = row < N;
  const int r0 = valid ? row : 0;
  float acc[2][M];
#pragma unroll
  for (int m = 0; m < M; m++) acc[0][m] = acc[1][m] = 0.0f;
  const uint4* const wr[2] = {wg + (size_t)r0 * (K >> 3), wu + (size_t)r0 * (K >> 3)};
  dot_rows<M, 2>(wr, x, K, warp % split, split, valid, acc);
  if (combine_parts<M, 2, kWarps>(acc, split) && valid) {
    const float gb = bg ? bf16_to_f32(bg[row]) : 0.0f, ub = bu ? bf16_to_f32(bu[row]) : 0.0f;
#pragma unroll
    for (int m = 0; m < M; m++) {
      const float a = acc[0][m] + gb;
      y[(size_t)m * N + row] = silu(a) * (acc[1][m] + ub);
    }
  }
}

#define GEMV(M)                                                                                     \
  extern "C" __global__ void __launch_bounds__(256) gemv_bf16_m##M(Segments s, const float* x,         \
                                                                   const float* res, int K, int split) { \
    gemv<M>(s, x, res, K, split);                                                                   \
  }                                                                                                 \
  extern "C" __global__ void __launch_bounds__(256) gate_up_bf16_m##M(                             \
      const uint4* wg, const uint4* wu, const bf16_t* bg, const bf16_t* bu, const float* x, float* y, \
      int N, int K, int split) {                                                                    \
    gate_up<M>(wg, wu, bg, bu, x, y, N, K, split);                                                  \
  }
GEMV(1)
GEMV(2)
GEMV(3)
GEMV(4)
GEMV(5)
GEMV(6)
GEMV(7)
GEMV(8)
GEMV(9)
GEMV(10)
GEMV(11)
GEMV(12)
GEMV(13)
GEMV(14)
GEMV(15)
GEMV(16)
