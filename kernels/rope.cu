// Rotary embedding of q and k ("rotate half": element i of a head pairs with i + HEAD_DIM/2)
// fused with storing k and v in the paged KV cache, for prompt-sized steps (attention_decode in
// attention.cu does the same itself for smaller ones).
// grid (rows, q heads + kv heads), HEAD_DIM/2 threads. Angles are float32, like the reference.
extern "C" __global__ void rope_store(const float* __restrict__ q, const float* __restrict__ k,
                                      const float* __restrict__ v, float* __restrict__ q_out,
                                      float* __restrict__ kcache, float* __restrict__ vcache,
                                      const int* __restrict__ positions, const int* __restrict__ slots,
                                      const float* __restrict__ inv_freq, int num_heads, int num_kv_heads) {
  pdl_start();
  const int half = HEAD_DIM / 2;
  const int row = blockIdx.x, head = blockIdx.y, i = threadIdx.x;
  const float* src;
  float* dst;
  if (head < num_heads) {
    src = q + ((size_t)row * num_heads + head) * HEAD_DIM;
    dst = q_out + ((size_t)row * num_heads + head) * HEAD_DIM;
  } else {
    const int kv = head - num_heads;
    const size_t from = ((size_t)row * num_kv_heads + kv) * HEAD_DIM;
    const size_t to = ((size_t)slots[row] * num_kv_heads + kv) * HEAD_DIM;
    src = k + from;
    dst = kcache + to;
    vcache[to + i] = v[from + i];
    vcache[to + i + half] = v[from + i + half];
  }
  float a = src[i], b = src[i + half];
  rope_pair(a, b, positions[row], inv_freq[i]);
  dst[i] = a;
  dst[i + half] = b;
}
