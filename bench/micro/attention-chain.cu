// What one-row decode attention costs inside a chain of dependent launches, beside weight streams
// shaped like the products around it (a measurement tool, not engine code: nvcc -arch=sm_90a -O3).
//
// Each of LAYERS layers is a stream of q/k/v's bytes, then tachyon's own attention kernel
// (kernels/attention.cu, or the file ATTENTION_SOURCE names, for variants), then a stream of o's
// bytes; the graph is replayed with programmatic dependent launch, as the engine's decode graph
// is. The same chain without attention is timed in the same run: the difference over LAYERS is
// what attention adds to a layer, its work and its two hand-overs. The 8B shape: 32 query heads,
// 8 kv heads of 128, 16-position cache blocks, a context of CONTEXT positions (random keys and
// values, a cache per layer), splits kv heads × SPLITS blocks in clusters of SPLITS.
//
// Variants by -D: ATTENTION_SOURCE (another copy of the kernel, e.g. from attention-stops.py),
// STAMPS (with attention-stamps.cu: each phase's time, block by block), CONTEXT, SPLITS,
// ATTENTION_WARPS (warps a block), KERNEL (attention_decode, without the preload),
// CLUSTER_ATTR=0 (no cluster launch), O_PDL=0 (o waits for attention to end before it launches).
#include <vector>
#include <random>
#include <algorithm>
#include <climits>
#include "cuda-check.h"
#include "../../kernels/common.cuh"
#include "stream-kernel.cuh"
#define HEAD_DIM 128
#define GROUP 4
#ifdef ATTENTION_WARPS  // a variant's warps a block
#define WARPS ATTENTION_WARPS
#else
#define WARPS 8
#endif
#ifdef ATTENTION_SOURCE
#include ATTENTION_SOURCE
#else
#include "../../kernels/attention.cu"
#endif
#ifndef CONTEXT
#define CONTEXT 160
#endif
#ifndef VARIANT
#define VARIANT "engine"
#endif
#ifndef KERNEL
#define KERNEL attention_decode_wave
#endif
#ifndef CLUSTER_ATTR  // attention launched as clusters (of SPLITS blocks, even of one)
#define CLUSTER_ATTR 1
#endif
#ifndef O_PDL  // o launched dependent on attention
#define O_PDL 1
#endif
#ifndef SPLITS
#define SPLITS 8
#endif

static float* device_random(size_t n, std::mt19937& rng, float scale) {
  std::vector<float> h(n);
  std::normal_distribution<float> d(0.0f, scale);
  for (auto& x : h) x = d(rng);
  float* p;
  CHECK(cudaMalloc(&p, n * 4));
  CHECK(cudaMemcpy(p, h.data(), n * 4, cudaMemcpyHostToDevice));
  return p;
}

template <typename T>
static T* device_copy(const std::vector<T>& h) {
  T* p;
  CHECK(cudaMalloc(&p, h.size() * sizeof(T)));
  CHECK(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return p;
}

#ifdef STAMPS
// Phases of the last attention of the last replay, from the first warp past its wait (ns).
static void print_stamps() {
  std::vector<unsigned long long> st(64 * 8 * 8);
  CHECK(cudaMemcpyFromSymbol(st.data(), stamps, st.size() * 8));
  unsigned long long t0 = ~0ull;
  for (int w = 0; w < 64 * 8; w++) t0 = std::min(t0, st[w * 8 + 1]);
  const char* names[] = {"entry", "past the wait", "queries ready", "keys walked", "partials sent", "mail in", "done"};
  for (int n = 0; n < 7; n++) {
    std::vector<long long> t;
    for (int w = 0; w < 64 * 8; w++) t.push_back((long long)(st[w * 8 + n] - t0));
    std::sort(t.begin(), t.end());
    printf("  %-16s ns from the first wait passed: min %6lld  median %6lld  max %6lld\n", names[n], t.front(),
           t[t.size() / 2], t.back());
  }
  std::vector<unsigned long long> cy(64 * 8 * 8);
  CHECK(cudaMemcpyFromSymbol(cy.data(), cycles, cy.size() * 8));
  printf("  SM clock, warp 0 of block 0 from its wait to its end: %.0f MHz\n",
         1e3 * (double)(cy[6] - cy[1]) / (double)(st[6] - st[1]));
  // Block by block (kv head, split): each phase's last warp.
  for (int b = 0; b < 64; b++) {
    printf("  block %2d/%d:", b / SPLITS, b % SPLITS);
    for (int n = 0; n < 7; n++) {
      long long last = LLONG_MIN;
      for (int w = 0; w < 8; w++) last = std::max(last, (long long)(st[(b * 8 + w) * 8 + n] - t0));
      printf(" %6lld", last);
    }
    printf("\n");
  }
}
#endif

int main() {
  const int layers = 32, replays = 50, kv_heads = 8, heads = kv_heads * GROUP, block = 16;
  const size_t qkv_bytes = 12600000, o_bytes = 8400000;
  const int pos = CONTEXT, blocks = (pos + block) / block;
  std::mt19937 rng(1234);
  const size_t kv_row = (size_t)kv_heads * HEAD_DIM, cache = (size_t)blocks * block * kv_row;
  float* q = device_random(heads * HEAD_DIM, rng, 1.0f);
  float* k = device_random(kv_row, rng, 1.0f);
  float* v = device_random(kv_row, rng, 1.0f);
  std::vector<float*> kc(layers), vc(layers);
  for (int l = 0; l < layers; l++) kc[l] = device_random(cache, rng, 1.0f), vc[l] = device_random(cache, rng, 1.0f);
  std::vector<float> inv(HEAD_DIM / 2);
  for (int d = 0; d < HEAD_DIM / 2; d++) inv[d] = powf(500000.0f, -2.0f * d / HEAD_DIM);
  float* inv_freq = device_copy(inv);
  std::vector<int> table(blocks);
  for (int b = 0; b < blocks; b++) table[b] = b;
  int* positions = device_copy(std::vector<int>{pos});
  int* fresh = device_copy(std::vector<int>{pos});
  int* slots = device_copy(std::vector<int>{pos});
  int* tables = device_copy(table);
  float *out, *out_qs, *sink;
  signed char* out_q;
  CHECK(cudaMalloc(&out, heads * HEAD_DIM * 4));
  CHECK(cudaMalloc(&out_q, heads * HEAD_DIM));
  CHECK(cudaMalloc(&out_qs, heads * HEAD_DIM / 32 * 8));
  CHECK(cudaMalloc(&sink, 4));
  const size_t per_layer = qkv_bytes + o_bytes;
  char* weights = nonzero_buffer(per_layer * layers);  // only the bytes matter

  cudaStream_t s;
  CHECK(cudaStreamCreate(&s));
  cudaLaunchAttribute attr[2];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  attr[1].id = cudaLaunchAttributeClusterDimension;
  attr[1].val.clusterDim.x = 1, attr[1].val.clusterDim.y = 1, attr[1].val.clusterDim.z = SPLITS;
  const auto streams = [&](int i, size_t bytes, int grid, bool dep) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(grid), cfg.blockDim = dim3(256), cfg.stream = s, cfg.attrs = attr, cfg.numAttrs = dep;
    const uint4* part = reinterpret_cast<const uint4*>(weights + (size_t)i * per_layer + (bytes == o_bytes ? qkv_bytes : 0));
    if (grid == 396) CHECK(cudaLaunchKernelEx(&cfg, stream<256, 4>, part, bytes / 16, sink));
    else CHECK(cudaLaunchKernelEx(&cfg, stream<256, 2>, part, bytes / 16, sink));
  };
  const auto attend = [&](int l) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(1, kv_heads, SPLITS), cfg.blockDim = dim3(WARPS * 32), cfg.stream = s, cfg.attrs = attr, cfg.numAttrs = CLUSTER_ATTR ? 2 : 1;
    CHECK(cudaLaunchKernelEx(&cfg, KERNEL, (const float*)q, (const float*)k, (const float*)v, kc[l],
                             vc[l], (const int*)positions, (const int*)fresh, (const int*)slots, (const int*)tables,
                             (const float*)inv_freq, out, out_q, reinterpret_cast<float2*>(out_qs),
                             (unsigned short*)nullptr, kv_heads, blocks, block, 0, 1.0f / sqrtf(HEAD_DIM), 1));
  };
  // Graph variants: 0 streams only, 1 streams and attention, 2 attention only.
  const auto time = [&](int variant) {
    cudaGraph_t graph;
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    for (int l = 0; l < layers; l++) {
      if (variant != 2) streams(l, qkv_bytes, 396, l > 0);
      if (variant != 0) attend(l);
      if (variant != 2) streams(l, o_bytes, 1056, O_PDL || variant == 0);
    }
    CHECK(cudaStreamEndCapture(s, &graph));
    return replay_ms(graph, s, 5, replays) * 1e3 / layers;
  };
  // Alternating, so that a drift in clocks shows as a spread.
  double with = 0, without = 0, alone = 0;
  const int rounds = 4;
  for (int r = 0; r < rounds; r++) without += time(0), with += time(1), alone += time(2);
  with /= rounds, without /= rounds, alone /= rounds;
#ifdef STAMPS
  printf("phases in the chain with streams:\n");
  time(1);
  print_stamps();
  printf("phases in the chain of attention alone:\n");
  time(2);
  print_stamps();
#endif
  float check;
  CHECK(cudaMemcpy(&check, out, 4, cudaMemcpyDeviceToHost));
  printf("%-28s context %d splits %d: a layer %.2f us with attention, %.2f without: attention adds %.2f us "
         "(alone in a chain %.2f us; out[0] %.4f)\n",
         VARIANT, pos, SPLITS, with, without, with - without, alone, check);
  return 0;
}
