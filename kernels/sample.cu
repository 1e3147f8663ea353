// Sampling on the GPU: penalties, temperature, top-k, top-p, min-p, then one draw, so only the
// chosen token id crosses to the host. One block of 1024 threads per row; each thread owns a
// contiguous chunk of the vocabulary (so "lowest id first" is a prefix order over threads).
// Selections are exact: top-k and top-p thresholds are found by radix selection over
// order-preserving integer keys, and probability mass is summed in 2^-40 fixed point, so the
// same logits and random word always give the same token. Ties at a top-k or top-p boundary
// keep the lowest ids, as the host sampler does.

#define THREADS 1024
typedef unsigned long long u64;

struct SampleParams {
  float temperature;  // 0: greedy
  int top_k;          // <= 0: off
  float top_p;        // >= 1: off
  float min_p;        // <= 0: off
  u32 random;         // this step's random word
  float repetition_penalty, presence_penalty, frequency_penalty;
  int history_offset, history_count;  // this row's entries in the history arrays
  int unused;                          // pads the struct to the 11 words the host writes
};

// Larger float ↔ larger key; NaN and -inf sort lowest.
__device__ __forceinline__ u32 order_key(float z) {
  if (!(z > -INFINITY)) return 0u;
  const u32 u = __float_as_uint(z);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Exclusive prefix sum over the block (in thread order) and the total.
template <typename T>
__device__ __forceinline__ T block_exclusive_scan(T v, T* total) {
  __shared__ T warp_sums[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  T x = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const T y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  __syncthreads();
  if (lane == 31) warp_sums[warp] = x;
  __syncthreads();
  if (warp == 0) {
    T w = lane < (blockDim.x >> 5) ? warp_sums[lane] : (T)0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const T y = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += y;
    }
    warp_sums[lane] = w;  // inclusive
  }
  __syncthreads();
  const T before_warp = warp == 0 ? (T)0 : warp_sums[warp - 1];
  *total = warp_sums[(blockDim.x >> 5) - 1];
  return before_warp + x - v;
}

// The largest key K such that the kept elements with key >= K reach `need` (in count or mass):
// radix selection, eight bits at a time from the top. weight(i) is 1 (count) or the mass.
template <typename W, typename Weight>
__device__ u32 select_threshold(const u32* keys, int begin, int end, W need, Weight weight) {
  __shared__ W hist[256];
  __shared__ u32 chosen;
  __shared__ W remaining;
  u32 prefix = 0, mask = 0;
  if (threadIdx.x == 0) remaining = need;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
    __syncthreads();
    for (int i = begin; i < end; i++) {
      const u32 k = keys[i - begin];
      const W w = weight(i);
      if (w != 0 && (k & mask) == prefix) atomicAdd(&hist[(k >> shift) & 255u], w);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      W cum = 0;
      u32 d = 0;
      for (int b = 255; b >= 0; b--) {
        if (cum + hist[b] >= remaining) {
          d = b;
          break;
        }
        cum += hist[b];
      }
      remaining -= cum;
      chosen = d;
    }
    __syncthreads();
    prefix |= chosen << shift;
    mask |= 255u << shift;
  }
  return prefix;
}

#define MAX_CHUNK 256  // vocabularies up to 256k
#define MASS_ONE 1099511627776.0  // 2^40

extern "C" __global__ void __launch_bounds__(THREADS) sample_rows(
    const float* __restrict__ logits, int V, const SampleParams* __restrict__ params,
    const int* __restrict__ history_tokens, const int* __restrict__ history_output_counts,
    int* __restrict__ out) {
  pdl_start();
  const SampleParams p = params[blockIdx.x];
  const float* x = logits + (size_t)blockIdx.x * V;
  const int chunk = (V + THREADS - 1) / THREADS;
  const int begin = min(V, threadIdx.x * chunk), end = min(V, begin + chunk);

  // Penalised logits of this thread's chunk, kept in registers-backed local storage.
  float z[MAX_CHUNK];
  for (int i = begin; i < end; i++) z[i - begin] = x[i];
  for (int h = 0; h < p.history_count; h++) {
    const int t = history_tokens[p.history_offset + h];
    if (t < begin || t >= end) continue;
    const int c = history_output_counts[p.history_offset + h];
    float v = z[t - begin];
    if (p.repetition_penalty != 1.0f) v = v > 0.0f ? v / p.repetition_penalty : v * p.repetition_penalty;
    v -= (c > 0 ? p.presence_penalty : 0.0f) + p.frequency_penalty * c;
    z[t - begin] = v;
  }

  // Maximum (and, for greedy, the lowest id holding it).
  float best = -INFINITY;
  int best_id = 0x7fffffff;
  for (int i = begin; i < end; i++)
    if (z[i - begin] > best) best = z[i - begin], best_id = i;
  block_argmax(best, best_id);
  const float zmax = best;
  if (p.temperature == 0.0f) {
    if (threadIdx.x == 0) out[blockIdx.x] = best_id;
    return;
  }

  // Temperature: z ← (z - max) / T, so the largest is 0 and exp(z) ≤ 1. Keys order the tokens.
  u32 keys[MAX_CHUNK];
  for (int i = begin; i < end; i++) {
    z[i - begin] = (z[i - begin] - zmax) / p.temperature;
    keys[i - begin] = order_key(z[i - begin]);
  }
  bool keep[MAX_CHUNK];
  for (int i = begin; i < end; i++) keep[i - begin] = keys[i - begin] != 0u;

  // Top-k: the k-th largest key, then ties at it by lowest id.
  if (p.top_k > 0 && p.top_k < V) {
    const u32 kth = select_threshold<u32>(keys, begin, end, (u32)p.top_k,
                                          [&](int i) { return keep[i - begin] ? 1u : 0u; });
    u32 above = 0, tied = 0;
    for (int i = begin; i < end; i++) {
      if (!keep[i - begin]) continue;
      above += keys[i - begin] > kth;
      tied += keys[i - begin] == kth;
    }
    u32 total_above;
    block_exclusive_scan<u32>(above, &total_above);
    u32 total_tied;
    u32 rank = block_exclusive_scan<u32>(tied, &total_tied);
    const u32 allowed = (u32)p.top_k - total_above;
    for (int i = begin; i < end; i++) {
      if (!keep[i - begin] || keys[i - begin] > kth) continue;
      keep[i - begin] = keys[i - begin] == kth && rank++ < allowed;
    }
  }

  // Mass in fixed point (exact, order-independent sums).
  u64 local = 0;
  for (int i = begin; i < end; i++)
    if (keep[i - begin]) local += (u64)(expf(z[i - begin]) * MASS_ONE);
  u64 total_mass;
  block_exclusive_scan<u64>(local, &total_mass);

  // Top-p: the smallest set, in (probability desc, id asc) order, reaching top_p of the mass.
  if (p.top_p < 1.0f) {
    const u64 target = (u64)((double)p.top_p * (double)total_mass);
    const u32 th = select_threshold<u64>(keys, begin, end, target > 0 ? target : 1ull, [&](int i) {
      return keep[i - begin] ? (u64)(expf(z[i - begin]) * MASS_ONE) : 0ull;
    });
    u64 above = 0, tied = 0;
    for (int i = begin; i < end; i++) {
      if (!keep[i - begin]) continue;
      const u64 m = (u64)(expf(z[i - begin]) * MASS_ONE);
      if (keys[i - begin] > th) above += m;
      else if (keys[i - begin] == th) tied += m;
    }
    u64 total_above;
    block_exclusive_scan<u64>(above, &total_above);
    u64 total_tied;
    u64 before = block_exclusive_scan<u64>(tied, &total_tied);
    for (int i = begin; i < end; i++) {
      if (!keep[i - begin] || keys[i - begin] > th) continue;
      if (keys[i - begin] < th) {
        keep[i - begin] = false;
        continue;
      }
      // A tied token is kept while the mass before it has not yet reached the target.
      keep[i - begin] = total_above + before < target || (total_above == 0 && before == 0);
      before += (u64)(expf(z[i - begin]) * MASS_ONE);
    }
  }

  // Min-p: probability at least min_p times the largest (exp(0) = 1 after the shift).
  if (p.min_p > 0.0f)
    for (int i = begin; i < end; i++)
      if (keep[i - begin] && expf(z[i - begin]) < p.min_p) keep[i - begin] = false;

  // Draw: u uniform over the kept mass, then the token whose prefix (id order) covers u.
  local = 0;
  for (int i = begin; i < end; i++)
    if (keep[i - begin]) local += (u64)(expf(z[i - begin]) * MASS_ONE);
  u64 kept_mass;
  u64 start = block_exclusive_scan<u64>(local, &kept_mass);
  const u64 u = (u64)((double)p.random * (1.0 / 4294967296.0) * (double)kept_mass);
  if (u >= start && u < start + local) {
    for (int i = begin; i < end; i++) {
      if (!keep[i - begin]) continue;
      start += (u64)(expf(z[i - begin]) * MASS_ONE);
      if (u < start) {
        out[blockIdx.x] = i;
        break;
      }
    }
  }
}
