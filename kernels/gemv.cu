// Matrix-vector products for M = 1..16 rows: W is bf16 [N, K] row-major, x and y float32.
// Batch-1 decode is bound by reading W once, so one warp owns one output row and streams it with
// 16-byte loads, several in flight per lane; the M rows of x (small, hot in L1/L2) are read
// alongside, so a verify step of M rows costs about one weight read. Requires K % 8 == 0.

// acc[m] += dot(W row, x[m]) over this lane's share of K (not yet reduced across the warp).
template <int M>
__device__ __forceinline__ void dot_rows(const uint4* __restrict__ wr, const float* __restrict__ x, int K,
                                         float (&acc)[M]) {
  const int lane = threadIdx.x & 31;
  const int chunks = K >> 3;
#pragma unroll 4
  for (int c = lane; c < chunks; c += 32) {
    const uint4 p = load_stream(wr + c);
    const float wv[8] = {bf16lo(p.x), bf16hi(p.x), bf16lo(p.y), bf16hi(p.y),
                         bf16lo(p.z), bf16hi(p.z), bf16lo(p.w), bf16hi(p.w)};
#pragma unroll
    for (int m = 0; m < M; m++) {
      const float4* xv = reinterpret_cast<const float4*>(x + (size_t)m * K) + 2 * c;
      const float4 a = xv[0], b = xv[1];
      acc[m] += wv[0] * a.x + wv[1] * a.y + wv[2] * a.z + wv[3] * a.w + wv[4] * b.x + wv[5] * b.y +
                wv[6] * b.z + wv[7] * b.w;
    }
  }
#pragma unroll
  for (int m = 0; m < M; m++) acc[m] = warp_sum(acc[m]);
}

// Up to three products sharing x (q, k and v; or a single one): output rows are numbered across
// the segments, so one launch covers all three weights.
struct Segments {
  const uint4* w[3];
  const bf16_t* bias[3];
  float* y[3];
  int n[3];
};

template <int M>
__device__ __forceinline__ void gemv(const Segments& s, const float* __restrict__ x, int K) {
  int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int seg = 0;
  while (seg < 3 && row >= s.n[seg]) row -= s.n[seg++];
  if (seg == 3) return;
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; m++) acc[m] = 0.0f;
  dot_rows<M>(s.w[seg] + (size_t)row * (K >> 3), x, K, acc);
  if ((threadIdx.x & 31) == 0) {
    const float b = s.bias[seg] ? bf16_to_f32(s.bias[seg][row]) : 0.0f;
#pragma unroll
    for (int m = 0; m < M; m++) s.y[seg][(size_t)m * s.n[seg] + row] = acc[m] + b;
  }
}

// silu(x·Wg + bg) * (x·Wu + bu): the MLP's two input projections and its activation in one pass.
template <int M>
__device__ __forceinline__ void gate_up(const uint4* __restrict__ wg, const uint4* __restrict__ wu,
                                        const bf16_t* __restrict__ bg, const bf16_t* __restrict__ bu,
                                        const float* __restrict__ x, float* __restrict__ y, int N, int K) {
  const int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  if (row >= N) return;
  float g[M], u[M];
#pragma unroll
  for (int m = 0; m < M; m++) g[m] = u[m] = 0.0f;
  dot_rows<M>(wg + (size_t)row * (K >> 3), x, K, g);
  dot_rows<M>(wu + (size_t)row * (K >> 3), x, K, u);
  if ((threadIdx.x & 31) == 0) {
    const float gb = bg ? bf16_to_f32(bg[row]) : 0.0f, ub = bu ? bf16_to_f32(bu[row]) : 0.0f;
#pragma unroll
    for (int m = 0; m < M; m++) {
      const float a = g[m] + gb;
      y[(size_t)m * N + row] = a / (1.0f + expf(-a)) * (u[m] + ub);
    }
  }
}

#define GEMV(M)                                                                                     \
  extern "C" __global__ void __launch_bounds__(256) gemv_bf16_m##M(Segments s, const float* x, int K) { \
    gemv<M>(s, x, K);                                                                               \
  }                                                                                                 \
  extern "C" __global__ void __launch_bounds__(256) gate_up_bf16_m##M(                             \
      const uint4* wg, const uint4* wu, const bf16_t* bg, const bf16_t* bu, const float* x, float* y, \
      int N, int K) {                                                                               \
    gate_up<M>(wg, wu, bg, bu, x, y, N, K);                                                         \
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
