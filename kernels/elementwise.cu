// Small row-wise operations of the forward pass.

// One row of a bf16 table into float32 `dst`, by the whole block. Rows of a multiple of 8 values
// move 16 bytes a load, several at once: the row is a cold read from device memory, and a load at
// a time made the one-row embed 8.4 µs of an 8B decode step (H100, session 12's timeline).
__device__ __forceinline__ void gather_bf16_row(const bf16_t* __restrict__ src, float* __restrict__ dst, int cols) {
  const int n8 = cols % 8 == 0 ? cols / 8 : 0;
#pragma unroll 4
  for (int i = threadIdx.x; i < n8; i += blockDim.x) {
    const uint4 w = reinterpret_cast<const uint4*>(src)[i];
    reinterpret_cast<float4*>(dst)[2 * i] = bf16x4_to_f32(uint2{w.x, w.y});
    reinterpret_cast<float4*>(dst)[2 * i + 1] = bf16x4_to_f32(uint2{w.z, w.w});
  }
  for (int i = 8 * n8 + threadIdx.x; i < cols; i += blockDim.x) dst[i] = bf16_to_f32(src[i]);
}

// y[m] = table[tokens[m]] (bf16 → f32); one block per row.
extern "C" __global__ void embed(const bf16_t* __restrict__ table, const int* __restrict__ tokens,
                                 float* __restrict__ y, int cols) {
  pdl_start();
  gather_bf16_row(table + (size_t)tokens[blockIdx.x] * cols, y + (size_t)blockIdx.x * cols, cols);
}

// y[r] = x[rows[r]]; one block per output row, 16 bytes a load where rows allow.
extern "C" __global__ void gather_rows(const float* __restrict__ x, const int* __restrict__ rows,
                                       float* __restrict__ y, int cols) {
  pdl_start();
  const float* src = x + (size_t)rows[blockIdx.x] * cols;
  float* dst = y + (size_t)blockIdx.x * cols;
  const int n4 = cols % 4 == 0 ? cols / 4 : 0;
#pragma unroll 4
  for (int i = threadIdx.x; i < n4; i += blockDim.x)
    reinterpret_cast<float4*>(dst)[i] = reinterpret_cast<const float4*>(src)[i];
  for (int i = 4 * n4 + threadIdx.x; i < cols; i += blockDim.x) dst[i] = src[i];
}

// y[r] = [a[r] | b[r]]; one block per row.
extern "C" __global__ void concat_cols(const float* __restrict__ a, const float* __restrict__ b,
                                       float* __restrict__ y, int ca, int cb) {
  pdl_start();
  const int r = blockIdx.x;
  for (int i = threadIdx.x; i < ca + cb; i += blockDim.x)
    y[(size_t)r * (ca + cb) + i] = i < ca ? a[(size_t)r * ca + i] : b[(size_t)r * cb + i - ca];
}

// Normal random bf16 values (mean, std) from a counter-based hash: benchmark weights made on the
// GPU, reproducible from the seed, never zeros.
__device__ __forceinline__ u32 hash32(u32 x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}
extern "C" __global__ void fill_random_bf16(bf16_t* __restrict__ out, unsigned long long n, u32 seed,
                                            float mean, float std) {
  pdl_start();
  for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
       i += (unsigned long long)gridDim.x * blockDim.x) {
    const u32 a = hash32((u32)i * 2u + hash32(seed) + (u32)(i >> 31));
    const u32 b = hash32(a ^ 0x9e3779b9u);
    const float u1 = ((a >> 8) + 1) * (1.0f / 16777217.0f), u2 = (b >> 8) * (1.0f / 16777216.0f);
    const float v = mean + std * sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
    const u32 bits = __float_as_uint(v);
    out[i] = (bf16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);  // round to nearest even
  }
}

// x rounded to int8 per block of 32 (quantize32) for the integer-weight GEMV, where the kernel
// that made x did not do it already. grid (rows, ceil(K / 256)), 256 threads: a warp
// per block. K % 32 == 0.
extern "C" __global__ void quantize_x(const float* __restrict__ x, signed char* __restrict__ q,
                                      float2* __restrict__ qs, int K) {
  pdl_start();
  const int block = blockIdx.y * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (block * 32 >= K) return;
  const size_t i = (size_t)blockIdx.x * K + block * 32 + lane;
  quantize32(x[i], q, qs, i);
}

// x · FP8_X_SCALE as half for the fp8-weight GEMV, where the kernel that made x did not write it.
extern "C" __global__ void half_x(const float* __restrict__ x, unsigned short* __restrict__ h, int n) {
  pdl_start();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) h[i] = f32_to_h(x[i] * FP8_X_SCALE);
}

// Random 32-bit words under a mask (codes of random quantized weights).
extern "C" __global__ void fill_random_u32(u32* __restrict__ out, unsigned long long n, u32 seed, u32 mask) {
  pdl_start();
  for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
       i += (unsigned long long)gridDim.x * blockDim.x)
    out[i] = hash32((u32)i * 2u + hash32(seed) + (u32)(i >> 31)) & mask;
}

// Index of each row's largest value (ties → lowest index; 0 for a row with nothing above -inf, as
// on the CPU, never an index past the row). A row of logits is up to 1 MB: gridDim.y blocks share
// it, each reducing its part 16 bytes a load, ARGMAX_LOADS loads at once, and the last of a row's
// blocks to finish (a counter per row, `done`) merges their candidates (`parts`) and sets the
// counter back to 0 for the next launch. One block of 1024 threads a row took 8.9 µs for an 8B
// vocabulary row (Nsight Compute, H100): one multiprocessor's loads.
#define ARGMAX_LOADS 4
#define ARGMAX_THREADS 256

// The one-row step after a greedy token: `rows` is a decode step's rows as packStep lays them out
// (step-layout.ts: [token | position | slot | output row | block table of `table_words` | fresh]),
// `out` its token. The position moves on by one, the slot follows from the block table (which the host has
// already extended where the position needs it), and the row's keys start fresh at its position.
// This spares the host an upload of the rows between two steps (about 10 µs on an H100).
__device__ void advance_step(int* rows, int table_words, int block_size) {
  const int position = rows[1] + 1;
  rows[1] = position;
  rows[2] = rows[4 + position / block_size] * block_size + position % block_size;
  rows[4 + table_words] = position;
}

// With `advance` (the next step's rows, of one row; see advance_step), the row's id is also that
// step's token and the rest of its rows move on by one position. With `table`, the block that
// decides a row also writes that token's row of the embedding table (bf16, `hidden` values) to
// `embedded`: the next step then starts at its first layer (about 4 µs of an 8B decode step on an
// H100 went to a graph's embed kernel, from its start to the next kernel's).
extern "C" __global__ void __launch_bounds__(ARGMAX_THREADS) argmax_rows(const float* __restrict__ x, int* out,
                                                                       int cols, float2* __restrict__ parts,
                                                                       int* __restrict__ done, int* advance,
                                                                       int table_words, int block_size,
                                                                       const bf16_t* __restrict__ table,
                                                                       float* __restrict__ embedded, int hidden) {
  pdl_start();
  const int row = blockIdx.x, part = blockIdx.y, nparts = gridDim.y;
  const float* r = x + (size_t)row * cols;
  const bool vec = cols % 4 == 0;  // float4 loads (rows 16-byte aligned), else one float a load
  const int units = vec ? cols / 4 : cols, per = (units + nparts - 1) / nparts;
  const int begin = part * per, end = min(units, begin + per);
  float best = -INFINITY;
  int idx = 0;
  // A thread's indices only grow, so `>` keeps its lowest index of a tie.
  for (int base = begin; base < end; base += ARGMAX_LOADS * ARGMAX_THREADS) {
    float4 v[ARGMAX_LOADS];
#pragma unroll
    for (int j = 0; j < ARGMAX_LOADS; j++) {
      const int i = base + j * ARGMAX_THREADS + threadIdx.x;
      v[j] = float4{-INFINITY, -INFINITY, -INFINITY, -INFINITY};
      if (i < end) {
        if (vec) v[j] = reinterpret_cast<const float4*>(r)[i];
        else v[j].x = r[i];
      }
    }
#pragma unroll
    for (int j = 0; j < ARGMAX_LOADS; j++) {
      const int i = base + j * ARGMAX_THREADS + threadIdx.x;
      const float e[4] = {v[j].x, v[j].y, v[j].z, v[j].w};
#pragma unroll
      for (int c = 0; c < 4; c++)
        if (e[c] > best) best = e[c], idx = vec ? 4 * i + c : i;
    }
  }
  block_argmax(best, idx);
  if (nparts > 1) {
    __shared__ bool last;
    if (threadIdx.x == 0) {
      parts[(size_t)row * nparts + part] = float2{best, __int_as_float(idx)};
      __threadfence();  // the candidate is visible before the count says so
      last = atomicAdd(&done[row], 1) == nparts - 1;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    // Every warp merges the candidates (at most 64), so every thread has the row's id.
    best = -INFINITY, idx = 0x7fffffff;
    for (int p = threadIdx.x & 31; p < nparts; p += 32) {
      const float2 c = __ldcg(&parts[(size_t)row * nparts + p]);
      const int ci = __float_as_int(c.y);
      if (c.x > best || (c.x == best && ci < idx)) best = c.x, idx = ci;
    }
    warp_argmax(best, idx);
  }
  if (threadIdx.x == 0) {
    out[row] = idx;
    if (nparts > 1) done[row] = 0;
    if (advance) advance_step(advance, table_words, block_size);
  }
  if (table) gather_bf16_row(table + (size_t)idx * hidden, embedded + (size_t)row * hidden, hidden);
}

// float32 → bf16 (round to nearest even), for tensor-core matrix products.
extern "C" __global__ void to_bf16(const float* __restrict__ x, bf16_t* __restrict__ y, int n) {
  pdl_start();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    const u32 bits = __float_as_uint(x[i]);
    y[i] = (bf16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
  }
}

// y[m, n] += bias[n] (bf16); one thread per element.
extern "C" __global__ void add_bias(float* __restrict__ y, const bf16_t* __restrict__ bias, int cols, int n) {
  pdl_start();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] += bf16_to_f32(bias[i % cols]);
}

// y = silu(g) * u, elementwise (prefill's MLP, after two matrix products).
extern "C" __global__ void silu_mul(const float* __restrict__ g, const float* __restrict__ u,
                                    float* __restrict__ y, int n) {
  pdl_start();
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = silu(g[i]) * u[i];
}
