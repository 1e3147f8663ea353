// Shared helpers for tachyon's kernels. Prepended to every kernel source before compilation
// (no system headers: NVRTC compiles these without a toolkit include path).
#pragma once

#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

typedef unsigned short bf16_t;
typedef unsigned int u32;

// bfloat16 is the top half of a float32: widening is a shift.
__device__ __forceinline__ float bf16_to_f32(bf16_t v) { return __uint_as_float(((u32)v) << 16); }
__device__ __forceinline__ float bf16lo(u32 v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float bf16hi(u32 v) { return __uint_as_float(v & 0xffff0000u); }

// Two floats rounded to bf16 and packed, lo in the low half.
__device__ __forceinline__ u32 pack_bf16x2(float lo, float hi) {
  u32 r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

// Two floats rounded to half and packed, lo in the low half.
__device__ __forceinline__ u32 f32x2_to_h2(float lo, float hi) {
  u32 r;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
__device__ __forceinline__ unsigned short f32_to_h(float v) {
  unsigned short r;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(v));
  return r;
}
// fp8-weight products multiply in half precision with x / 256, so that products with e4m3 codes
// (up to 448) stay within half's range (kernels/qgemv.cu): a chunk's 16 products reach 65504 only
// if inputs of about ±2300 meet the largest codes, all of one sign. The kernels that make the input of
// such a product also write this scaled half copy of their output, so the product reads 2 bytes
// per value instead of 4 and converts nothing.
#define FP8_X_SCALE (1.0f / 256.0f)

// Programmatic dependent launch (Hopper): kernels are launched before their predecessor ends.
// Each kernel calls pdl_wait() before reading anything an earlier kernel wrote (weights may be
// read before it), and pdl_launch_dependents() to let the next kernel start its own prologue.
#ifdef TIMELINE
// Measurement tool (TACHYON_TIMELINE=1, src/backends/cuda/timeline.ts), compiled only when on:
// thread 0 of each kernel's first block records when it reached pdl_wait() and when it passed it
// (global nanoseconds), and the kernel's block count. Kernels pass their waits in launch order,
// so the records come in that order; one kernel's pass to the next one's is what the kernel
// costs inside the graph. The host points `timeline` at [count, then TIMELINE records of 3].
__device__ unsigned long long* timeline;
__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
#endif
__device__ __forceinline__ void pdl_wait() {
#ifdef TIMELINE
  const unsigned long long arrive = global_ns();
#endif
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
#ifdef TIMELINE
  if (timeline && (threadIdx.x | threadIdx.y | threadIdx.z | blockIdx.x | blockIdx.y | blockIdx.z) == 0) {
    const unsigned long long leave = global_ns(), i = atomicAdd(timeline, 1ull);
    if (i < TIMELINE) {
      timeline[1 + 3 * i] = arrive;
      timeline[2 + 3 * i] = leave;
      timeline[3 + 3 * i] = (unsigned long long)gridDim.x * gridDim.y * gridDim.z;
    }
  }
#endif
}
__device__ __forceinline__ void pdl_launch_dependents() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}
// The usual start of a kernel that has nothing to prefetch.
__device__ __forceinline__ void pdl_start() {
  pdl_wait();
  pdl_launch_dependents();
}

// One line of global memory pulled into L2, nothing held.
__device__ __forceinline__ void prefetch_line(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// The first bytes of a GEMV's weights, pulled into L2 by the kernel itself before its wait: its
// blocks of the first wave start while the kernel before it (a norm, quantize_x, attention, or a
// product's last blocks) leaves the memory idle, but each lane's registers hold only a chunk or
// two of its own rows. Up to four ranges (codes and scales of up to two weights); the first
// `blocks` blocks (all resident at once) issue them, each thread every threads-th piece of
// L2_PIECE bytes, line by line. Measured on the H100 (8B int4, docs/BENCHMARKS.md session 12):
// 2 MB per product gained 1.4%, 8 MB lost 1%; Hopper's bulk prefetch (cp.async.bulk.prefetch)
// of the same bytes lost 2% at 2 MB and 17% at 8 MB (the kernels beside it waited on it).
#define L2_RANGES 4
#define L2_PIECE 512
struct L2Ranges {
  const char* p[L2_RANGES];
  unsigned long long n[L2_RANGES];  // bytes
  int blocks;
};
__device__ __forceinline__ void prefetch_l2(const L2Ranges& r) {
  if ((int)blockIdx.x >= r.blocks) return;
  const unsigned long long thread = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x,
                           threads = (unsigned long long)r.blocks * blockDim.x;
#pragma unroll
  for (int i = 0; i < L2_RANGES; i++)
    for (unsigned long long o = thread * L2_PIECE; o < r.n[i]; o += threads * L2_PIECE)
      for (unsigned long long b = o; b < o + L2_PIECE && b < r.n[i]; b += 128)
        prefetch_line(r.p[i] + b);
}

// Rotary embedding of one pair (a, b) = (x[i], x[i + HEAD_DIM/2]) of a head at position pos
// ("rotate half"). Rounded op by op (no fused multiply-add), so every kernel that rotates a key
// gets the same bits: a key rotated on the fly must equal the one later read from the cache.
__device__ __forceinline__ void rope_pair(float& a, float& b, int pos, float inv_freq) {
  float s, c;
  sincosf((float)pos * inv_freq, &s, &c);
  const float x = a, y = b;
  a = __fsub_rn(__fmul_rn(x, c), __fmul_rn(y, s));
  b = __fadd_rn(__fmul_rn(y, c), __fmul_rn(x, s));
}

// Division by a divisor known only at run time (a launch argument), by one multiply: exact for
// n · d < 2^32. Integer division is a software sequence of about twenty instructions, a cost
// that counts in the short kernels that divide per element.
struct Divisor {
  u32 d, inverse;  // ceil(2^32 / d); unused for d = 1
  __device__ __forceinline__ explicit Divisor(u32 divisor) : d(divisor), inverse(divisor > 1 ? 0xffffffffu / divisor + 1 : 0) {}
  __device__ __forceinline__ u32 quotient(u32 n) const { return d > 1 ? __umulhi(n, inverse) : n; }
  __device__ __forceinline__ u32 remainder(u32 n) const { return n - quotient(n) * d; }
};

// The running maximum an online softmax subtracts before exp: -inf (nothing seen yet) counts as
// 0, so that exp(m - base) of an empty part is 0 rather than NaN, without a branch.
__device__ __forceinline__ float softmax_base(float m) { return m == -INFINITY ? 0.0f : m; }

// The shared-memory address (state space offset) of a generic pointer into shared memory.
__device__ __forceinline__ u32 shared_addr(const void* p) {
  u32 a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}

// The two halves of a cluster barrier (Hopper; no-ops before it): every thread arrives, with no
// ordering of its memory accesses, and later waits for all of the cluster's threads to arrive.
__device__ __forceinline__ void cluster_arrive_relaxed() {
#if __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
#endif
}
__device__ __forceinline__ void cluster_wait() {
#if __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.wait.aligned;" ::: "memory");
#endif
}
// Where blocks of a thread-block cluster (Hopper) send each other partial results: a mailbox is an
// mbarrier in the receiving block's shared memory that counts the bytes sent to it. Senders store
// straight into the receiver's shared memory (st.async), which completes the bytes on its mbarrier;
// the receiver waits until all it expects have landed. No sender waits, and nothing goes through
// global memory. Every block keeps its mailboxes at the same offsets, so a sender names them by its
// own addresses. Before Hopper there are no clusters: send() is a plain store, for kernels whose
// blocks are clusters of one, and wait() a block barrier.
struct Mailbox {
  unsigned long long* box;

  // Set for `bytes` (one thread, before any block of the cluster may send: see open()).
  __device__ __forceinline__ void arm(u32 bytes) const {
#if __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(shared_addr(box)) : "memory");
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    // The arrival and the expected bytes in one step: bytes that land first leave the count
    // negative, and the phase cannot complete before this arrival.
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(shared_addr(box)), "r"(bytes)
                 : "memory");
#endif
  }

  // Before the wait: thread 0 arms the block's one mailbox, and every thread arrives (relaxed) at
  // the cluster barrier that ready() waits on, so that no block sends before every mailbox is
  // armed. That is the only cluster-wide meeting, and off the critical path.
  __device__ __forceinline__ void open(u32 bytes) const {
    if (threadIdx.x == 0) arm(bytes);
    cluster_arrive_relaxed();
  }

  // Every block's mailboxes are armed (each thread calls this once, before its first send).
  __device__ __forceinline__ void ready() const { cluster_wait(); }

  // v (one float, two or four) to `slot` in the shared memory of the cluster's block `rank`,
  // counted on its copy of this mailbox.
  template <typename T>
  __device__ __forceinline__ void send(T* slot, T v, u32 rank) const {
#if __CUDA_ARCH__ >= 900
    u32 to, at;
    asm("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(to) : "r"(shared_addr(slot)), "r"(rank));
    asm("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(at) : "r"(shared_addr(box)), "r"(rank));
    if constexpr (sizeof(T) == 16)
      asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.f32 [%0], {%1, %2, %3, %4}, [%5];" ::"r"(
                       to),
                   "f"(v.x), "f"(v.y), "f"(v.z), "f"(v.w), "r"(at)
                   : "memory");
    else if constexpr (sizeof(T) == 8)
      asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v2.f32 [%0], {%1, %2}, [%3];" ::"r"(to),
                   "f"(v.x), "f"(v.y), "r"(at)
                   : "memory");
    else
      asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.f32 [%0], %1, [%2];" ::"r"(to), "f"(v),
                   "r"(at)
                   : "memory");
#else
    *slot = v;
#endif
  }

  // Until every byte arm() expected has landed (Hopper: any thread, for itself; before it, every
  // thread of the block).
  __device__ __forceinline__ void wait() const {
#if __CUDA_ARCH__ >= 900
    asm volatile(
        "{\n\t.reg .pred done;\n"
        "MAIL_WAIT_%=:\n\t"
        "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 done, [%0], 0;\n\t"
        "@!done bra MAIL_WAIT_%=;\n}" ::"r"(shared_addr(box))
        : "memory");
#else
    __syncthreads();
#endif
  }
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// One level of a warp's reduce-scatter of part[0 .. 2O): lanes with bit O set keep the upper half,
// the others the lower, each adding its partner's copy; then the next level on part[0 .. O). After
// the last, lane L holds the warp's sum of value L % (2 × the first O).
template <int O>
__device__ __forceinline__ void reduce_scatter(float* part, int lane) {
  const bool upper = lane & O;
#pragma unroll
  for (int x = 0; x < O; x++) {
    const float keep = upper ? part[x + O] : part[x], give = upper ? part[x] : part[x + O];
    part[x] = keep + __shfl_xor_sync(0xffffffffu, give, O);
  }
  if constexpr (O > 1) reduce_scatter<O / 2>(part, lane);
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // partial may still be read from a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  float t = lane < warps ? partial[lane] : 0.0f;
  return warp_sum(t);
}

// v's int8 code in a block of largest magnitude amax, s = amax / 127 (0 for an all-zero block):
// the one rounding rule of every kernel that makes int8 activations for the integer GEMVs.
__device__ __forceinline__ int int8_code(float v, float amax, float s) {
  return amax > 0.0f ? __float2int_rn(v / s) : 0;
}
// Four values' codes packed in k order, as the GEMVs read them.
__device__ __forceinline__ u32 int8_codes4(float4 v, float amax, float s) {
  const auto b = [&](float x) { return (u32)(int8_code(x, amax, s) & 0xff); };
  return b(v.x) | b(v.y) << 8 | b(v.z) << 16 | b(v.w) << 24;
}
// SiLU(a) = a · sigmoid(a), the gate of gated MLPs.
__device__ __forceinline__ float silu(float a) { return a / (1.0f + expf(-a)); }

// Rounds a block of 32 values held one per lane (element i of lane, i % 32 == lane) to int8 for
// the integer-weight GEMV: q = round(v / s), s = max |v| / 127, and (s, sum of v) for the block.
// Every lane of the warp must call it.
__device__ __forceinline__ void quantize32(float v, signed char* __restrict__ q, float2* __restrict__ qs,
                                           size_t i) {
  const float amax = warp_max(fabsf(v)), sum = warp_sum(v);
  const float s = amax / 127.0f;
  q[i] = (signed char)int8_code(v, amax, s);
  if ((threadIdx.x & 31) == 0) qs[i / 32] = float2{s, sum};
}

__device__ __forceinline__ float4 bf16x4_to_f32(uint2 w) {
  return float4{bf16lo(w.x), bf16hi(w.x), bf16lo(w.y), bf16hi(w.y)};
}
__device__ __forceinline__ float sum_squares(float4 v) { return v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w; }

// The 32 values held as float4s by 8 consecutive lanes, from element i (i % 32 == 0 for the first
// of them), rounded to int8: q = round(v / s), s = max |v| / 127, and (s, sum of v) for the block.
// Every lane of the warp must call it; `live` lanes store.
__device__ __forceinline__ void quantize8x4(float4 v, bool live, signed char* __restrict__ q,
                                            float2* __restrict__ qs, size_t i) {
  float amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
  float sum = (v.x + v.y) + (v.z + v.w);
#pragma unroll
  for (int o = 1; o < 8; o <<= 1) {
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    sum += __shfl_xor_sync(0xffffffffu, sum, o);
  }
  if (!live) return;
  const float s = amax / 127.0f;
  *reinterpret_cast<u32*>(q + i) = int8_codes4(v, amax, s);
  if (i % 32 == 0) qs[i / 32] = float2{s, sum};
}

// GEMV epilogue (WARPS warps per block): adds the `split` warps' partial sums of a group of R rows
// into the first of them; true for the thread that then holds the rows' results (lane 0 of the
// group's first warp). Every thread must call it.
template <int M, int R, int WARPS>
__device__ __forceinline__ bool combine_parts(float (&acc)[R][M], int split) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (split == 1) return lane == 0;
  __shared__ float parts[WARPS][R][M];
  if (lane == 0)
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
      for (int m = 0; m < M; m++) parts[warp][r][m] = acc[r][m];
  __syncthreads();
  if (lane != 0 || warp % split != 0) return false;
  for (int s = 1; s < split; s++)
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
      for (int m = 0; m < M; m++) acc[r][m] += parts[warp + s][r][m];
  return true;
}

// Block-wide argmax of (value, index) pairs, ties to the lower index; every thread gets it.
__device__ __forceinline__ void warp_argmax(float& best, int& idx) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
    if (ov > best || (ov == best && oi < idx)) {
      best = ov;
      idx = oi;
    }
  }
}
__device__ __forceinline__ void block_argmax(float& best, int& idx) {
  __shared__ float sv[32];
  __shared__ int si[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  warp_argmax(best, idx);
  __syncthreads();
  if (lane == 0) {
    sv[warp] = best;
    si[warp] = idx;
  }
  __syncthreads();
  best = lane < (blockDim.x >> 5) ? sv[lane] : -INFINITY;
  idx = lane < (blockDim.x >> 5) ? si[lane] : 0x7fffffff;
  warp_argmax(best, idx);
}

// 16-byte load that skips L1: weights are streamed once per step.
__device__ __forceinline__ uint4 load_stream(const uint4* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}
