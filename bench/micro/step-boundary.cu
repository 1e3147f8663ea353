// What a greedy decode step pays between two replays of its graph, by what sits there (a
// measurement tool, not engine code: nvcc -arch=sm_90a -O3 -std=c++17 bench/micro/step-boundary.cu).
//
// A step is a graph like the engine's: an embed kernel reading the step's token, CHAIN kernels
// streaming weight bytes with dependent launch, and an "LM head" writing a row of V logits whose
// largest value is at (token * 7919 + 13) % V. Between replays, by mode:
//   graphs     nothing: replays back to back (the floor)
//   current    what the engine enqueued before session 20: the next step's rows uploaded from page-locked memory,
//              the arg-max kernel writing the token into them, the token copied back to the host
//   side-d2h   the same, the copy back on a second stream that waits for the arg-max
//   in-graph   the arg-max the graph's last kernel (dependent launch), the upload before the
//              replay, the copy back on the second stream
//   no-upload  in-graph without the upload: rows advanced on the device
//   graph-d2h  no-upload with the copy back the graph's last node (to one fixed host buffer)
//   mapped     side-d2h without the upload: the arg-max kernel reads the rows from page-locked
//              host memory (mapped) and writes them beside the token
//   mapped-all mapped, and the token written to page-locked host memory by the kernel: no copy,
//              no second stream, an event after the arg-max
//   between    side-d2h without the upload (no-upload with the arg-max between the graphs)
//   between-pdl between, the arg-max launched with dependent launch after the graph
// The host runs a step ahead, as GreedyPipeline does: it enqueues step n + 1, then waits for step
// n's token, which it checks against the recurrence.
#include <chrono>
#include <cstring>
#include <vector>
#include "cuda-check.h"

#ifndef CHAIN
#define CHAIN 16
#endif
constexpr int V = 128256, PARTS = 32, THREADS = 256, HIDDEN = 4096, ROW_WORDS = 1024;
constexpr size_t CHAIN_BYTES = 16u << 20;  // a chain kernel's weight bytes
constexpr int STREAM_BLOCKS = 264;

__device__ __forceinline__ void wait_prior() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void launch_next() { asm volatile("griddepcontrol.launch_dependents;"); }

__global__ void embed(const int* rows, float* hidden) {
  const int token = rows[0];
  for (int i = threadIdx.x; i < HIDDEN; i += blockDim.x) hidden[i] = i == 0 ? (float)token : 0.5f;
  launch_next();
}

// The block's share of a weight stream, summed (so that it is not optimised away).
__device__ float stream_share(const float4* w, size_t per_block) {
  float s = 0.0f;
  const float4* p = w + blockIdx.x * per_block;
  for (size_t i = threadIdx.x; i < per_block; i += blockDim.x) {
    const float4 v = __ldcs(p + i);
    s += v.x + v.y + v.z + v.w;
  }
  return s;
}

// Streams its share of the bytes, then reads the hidden state (after its predecessor) and passes it on.
__global__ void chain(const float4* w, size_t per_block, const float* in, float* out, float* sink) {
  const float s = stream_share(w, per_block);
  wait_prior();
  launch_next();
  if (blockIdx.x == 0 && threadIdx.x == 0) out[0] = in[0];
  if (s == 12345.0f) *sink = s;
}

__global__ void lm_head(const float4* w, size_t per_block, const float* hidden, float* logits, float* sink) {
  const float s = stream_share(w, per_block);
  wait_prior();
  launch_next();
  const int token = (int)hidden[0];
  const int best = (int)(((long long)token * 7919 + 13) % V);
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < V; i += gridDim.x * blockDim.x)
    logits[i] = i == best ? 2.0f : (float)((i * 2654435761u) % 1000) / 1000.0f;
  if (s == 12345.0f) *sink = s;
}

// Rows of PARTS blocks: each block's best, then the last block merges (the engine's scheme).
// With `host_rows`, the blocks also copy the next step's rows (after the token) from page-locked
// host memory into `token + 1`; with `host_token`, the merge writes the token there too.
__global__ void argmax(const float* logits, int* token, float* part_values, int* part_ids, unsigned* done,
                       int pdl, const int* host_rows, int* host_token) {
  if (pdl) wait_prior();
  int row_word = 0;
  const int row_at = 1 + blockIdx.x * THREADS + threadIdx.x;
  if (host_rows && row_at < ROW_WORDS) row_word = *(volatile const int*)(host_rows + row_at);
  float best = -1e30f;
  int at = 0;
  const int per = (V + PARTS - 1) / PARTS;
  for (int i = blockIdx.x * per + threadIdx.x; i < min(V, (int)(blockIdx.x + 1) * per); i += blockDim.x) {
    const float v = logits[i];
    if (v > best) best = v, at = i;
  }
  __shared__ float sv[THREADS / 32];
  __shared__ int si[THREADS / 32];
  __shared__ bool last;
  for (int o = 16; o; o >>= 1) {
    const float v = __shfl_xor_sync(~0u, best, o);
    const int j = __shfl_xor_sync(~0u, at, o);
    if (v > best || (v == best && j < at)) best = v, at = j;
  }
  if (threadIdx.x % 32 == 0) sv[threadIdx.x / 32] = best, si[threadIdx.x / 32] = at;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int k = 1; k < THREADS / 32; k++)
      if (sv[k] > best || (sv[k] == best && si[k] < at)) best = sv[k], at = si[k];
    part_values[blockIdx.x] = best;
    part_ids[blockIdx.x] = at;
    __threadfence();
    last = atomicAdd(done, 1) == PARTS - 1;
  }
  if (host_rows && row_at < ROW_WORDS) token[row_at] = row_word;
  __syncthreads();
  if (last && threadIdx.x == 0) {
    __threadfence();
    best = -1e30f;
    for (int k = 0; k < PARTS; k++) {
      const float v = ((volatile float*)part_values)[k];
      const int j = ((volatile int*)part_ids)[k];
      if (v > best || (v == best && j < at)) best = v, at = j;
    }
    *token = at;
    if (host_token) *(volatile int*)host_token = at;
    *done = 0;
  }
}

enum Mode { GRAPHS, CURRENT, SIDE_D2H, IN_GRAPH, NO_UPLOAD, GRAPH_D2H, MAPPED, MAPPED_ALL, BETWEEN, BETWEEN_PDL, MODES };
const char* names[] = {"graphs",    "current", "side-d2h", "in-graph",
                       "no-upload", "graph-d2h", "mapped", "mapped-all", "between", "between-pdl"};

struct Buffers {
  float4* weights;
  float *hidden_a, *hidden_b, *logits, *sink, *part_values;
  int *rows, *part_ids;
  unsigned* done;
  int* host_rows[4];
  int* host_token[4];
};

void launch_argmax(cudaStream_t s, const Buffers& b, bool pdl, const int* host_rows = nullptr,
                   int* host_token = nullptr) {
  launch_pdl(argmax, dim3(PARTS), dim3(THREADS), s, pdl, b.logits, b.rows, b.part_values, b.part_ids, b.done, (int)pdl,
             host_rows, host_token);
}

cudaGraphExec_t capture(cudaStream_t s, const Buffers& b, bool with_argmax, bool with_copy = false) {
  cudaGraph_t graph;
  CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  embed<<<1, THREADS, 0, s>>>(b.rows, b.hidden_a);
  const size_t per_block = CHAIN_BYTES / 16 / STREAM_BLOCKS;
  float* h[2] = {b.hidden_a, b.hidden_b};
  for (int i = 0; i < CHAIN; i++)
    launch_pdl(chain, dim3(STREAM_BLOCKS), dim3(THREADS), s, true, b.weights + i * (CHAIN_BYTES / 16), per_block,
               h[i % 2], h[(i + 1) % 2], b.sink);
  // The LM head streams 16 MB too (its own bytes do not matter here).
  launch_pdl(lm_head, dim3(STREAM_BLOCKS), dim3(THREADS), s, true, b.weights + CHAIN * (CHAIN_BYTES / 16), per_block,
             h[CHAIN % 2], b.logits, b.sink);
  if (with_argmax) launch_argmax(s, b, true);
  if (with_copy) CHECK(cudaMemcpyAsync(b.host_token[0], b.rows, 4, cudaMemcpyDeviceToHost, s));
  CHECK(cudaStreamEndCapture(s, &graph));
  cudaGraphExec_t exec;
  CHECK(cudaGraphInstantiate(&exec, graph, 0));
  CHECK(cudaGraphDestroy(graph));
  return exec;
}

int main() {
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t main_s, side;
  CHECK(cudaStreamCreateWithFlags(&main_s, cudaStreamNonBlocking));
  CHECK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
  Buffers b;
  const size_t weight_bytes = (CHAIN + 1) * CHAIN_BYTES;
  CHECK(cudaMalloc(&b.weights, weight_bytes));
  {
    std::vector<float> host(weight_bytes / 4);
    for (size_t i = 0; i < host.size(); i++) host[i] = (float)((i * 2654435761u) % 1000) / 1000.0f;
    CHECK(cudaMemcpy(b.weights, host.data(), weight_bytes, cudaMemcpyHostToDevice));
  }
  CHECK(cudaMalloc(&b.hidden_a, HIDDEN * 4));
  CHECK(cudaMalloc(&b.hidden_b, HIDDEN * 4));
  CHECK(cudaMalloc(&b.logits, V * 4));
  CHECK(cudaMalloc(&b.sink, 4));
  CHECK(cudaMalloc(&b.part_values, PARTS * 4));
  CHECK(cudaMalloc(&b.part_ids, PARTS * 4));
  CHECK(cudaMalloc(&b.done, 4));
  CHECK(cudaMemset(b.done, 0, 4));
  CHECK(cudaMalloc(&b.rows, ROW_WORDS * 4));
  for (int i = 0; i < 4; i++) {
    CHECK(cudaMallocHost(&b.host_rows[i], ROW_WORDS * 4));
    CHECK(cudaMallocHost(&b.host_token[i], 4));
  }
  const cudaGraphExec_t plain = capture(main_s, b, false), with_argmax = capture(main_s, b, true),
                        with_copy = capture(main_s, b, true, true);
  cudaEvent_t copied[4], chosen[4];
  for (int i = 0; i < 4; i++) {
    CHECK(cudaEventCreateWithFlags(&copied[i], cudaEventDisableTiming));
    CHECK(cudaEventCreateWithFlags(&chosen[i], cudaEventDisableTiming));
  }
  printf("%s; a graph of embed, %d kernels of %zu MB, an LM head of %zu MB; V = %d\n", prop.name, CHAIN,
         CHAIN_BYTES >> 20, CHAIN_BYTES >> 20, V);
  printf("%-10s %10s %12s %8s\n", "mode", "steps", "us a step", "check");
  const int steps = 400;
  double floor_us = 0;
  for (int round = 0; round < 2; round++)
    for (int mode = GRAPHS; mode < MODES; mode++) {
      const bool in_graph = mode == IN_GRAPH || mode == NO_UPLOAD || mode == GRAPH_D2H;
      const cudaGraphExec_t exec = mode == GRAPH_D2H ? with_copy : in_graph ? with_argmax : plain;
      int token = 1, expected = 1, expected_steps = 0;
      bool ok = true;
      CHECK(cudaMemcpy(b.rows, &token, 4, cudaMemcpyHostToDevice));
      CHECK(cudaDeviceSynchronize());
      auto enqueue = [&](int n) {
        const int k = n % 4;
        if (mode == CURRENT || mode == SIDE_D2H || mode == IN_GRAPH) {
          // The rows after the token: the engine's positions, slots, tables.
          for (int i = 1; i < ROW_WORDS; i++) b.host_rows[k][i] = n + i;
          CHECK(cudaMemcpyAsync(b.rows + 1, b.host_rows[k] + 1, (ROW_WORDS - 1) * 4, cudaMemcpyHostToDevice,
                                main_s));
        }
        // Step 0 of these modes has no logits to choose from yet: its token is the initial one.
        const bool between =
            mode == CURRENT || mode == SIDE_D2H || mode == MAPPED || mode == MAPPED_ALL || mode == BETWEEN ||
            mode == BETWEEN_PDL;
        const bool first = n == 0 && between;
        if (first) CHECK(cudaEventRecord(copied[k], main_s));
        if (mode == MAPPED || mode == MAPPED_ALL)
          for (int i = 1; i < ROW_WORDS; i++) b.host_rows[k][i] = n + i;
        if ((mode == CURRENT || mode == SIDE_D2H || mode == BETWEEN) && !first) launch_argmax(main_s, b, false);
        if (mode == BETWEEN_PDL && !first) launch_argmax(main_s, b, true);
        if (mode == MAPPED && !first) launch_argmax(main_s, b, false, b.host_rows[k]);
        if (mode == MAPPED_ALL && !first) {
          launch_argmax(main_s, b, false, b.host_rows[k], b.host_token[k]);
          CHECK(cudaEventRecord(copied[k], main_s));
        }
        if (mode == CURRENT && !first) {
          CHECK(cudaMemcpyAsync(b.host_token[k], b.rows, 4, cudaMemcpyDeviceToHost, main_s));
          CHECK(cudaEventRecord(copied[k], main_s));
        }
        const bool side_copy = (mode == SIDE_D2H || mode == MAPPED || mode == BETWEEN || mode == BETWEEN_PDL) && !first;
        if (side_copy) {
          CHECK(cudaEventRecord(chosen[k], main_s));
          CHECK(cudaStreamWaitEvent(side, chosen[k]));
          CHECK(cudaMemcpyAsync(b.host_token[k], b.rows, 4, cudaMemcpyDeviceToHost, side));
          CHECK(cudaEventRecord(copied[k], side));
        }
        CHECK(cudaGraphLaunch(exec, main_s));
        if (mode == IN_GRAPH || mode == NO_UPLOAD) {
          CHECK(cudaEventRecord(chosen[k], main_s));
          CHECK(cudaStreamWaitEvent(side, chosen[k]));
          CHECK(cudaMemcpyAsync(b.host_token[k], b.rows, 4, cudaMemcpyDeviceToHost, side));
          CHECK(cudaEventRecord(copied[k], side));
        }
        if (mode == GRAPHS || mode == GRAPH_D2H) CHECK(cudaEventRecord(copied[k], main_s));
      };
      // The token that step n's copy brings back: n + 1 arg-maxes chosen in all (in-graph modes
      // choose step n's own; the others the previous step's, before step n).
      auto check = [&](int n) {
        const int k = n % 4;
        CHECK(cudaEventSynchronize(copied[k]));
        if (mode == GRAPHS || (n == 0 && !in_graph)) return;
        const int chosen_steps = in_graph ? n + 1 : n;
        while (expected_steps < chosen_steps) expected = (int)(((long long)expected * 7919 + 13) % V), expected_steps++;
        if (*b.host_token[mode == GRAPH_D2H ? 0 : k] != expected) ok = false;
      };
      const auto t0 = std::chrono::steady_clock::now();
      for (int n = 0; n < steps; n++) {
        enqueue(n);
        if (n > 0) check(n - 1);
      }
      CHECK(cudaStreamSynchronize(main_s));
      CHECK(cudaStreamSynchronize(side));
      const double us =
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / steps;
      if (mode == GRAPHS) floor_us = us;
      printf("%-10s %10d %12.2f %8s  (+%.2f)\n", names[mode], steps, us, ok ? "ok" : "WRONG", us - floor_us);
    }
  return 0;
}
