// CUDA runtime calls in the measurement tools: stop with the call and its error.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

#define CHECK(x)                                                                        \
  do {                                                                                  \
    cudaError_t e = (x);                                                                \
    if (e != cudaSuccess) {                                                             \
      fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e)); \
      exit(1);                                                                          \
    }                                                                                   \
  } while (0)

// Launches `kernel` on `stream` (cudaLaunchKernelEx), with programmatic dependent launch when `pdl`.
template <typename... Params, typename... Args>
void launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, cudaStream_t stream, bool pdl, Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl ? 1 : 0;
  CHECK(cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...));
}

// Milliseconds the work that `enqueue` puts on `stream` takes, between two events.
template <typename F>
float timed_ms(cudaStream_t stream, F enqueue) {
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  CHECK(cudaEventRecord(a, stream));
  enqueue();
  CHECK(cudaEventRecord(b, stream));
  CHECK(cudaEventSynchronize(b));
  float ms;
  CHECK(cudaEventElapsedTime(&ms, a, b));
  CHECK(cudaEventDestroy(a));
  CHECK(cudaEventDestroy(b));
  return ms;
}

// Milliseconds a replay of `graph` takes on `stream`: the mean of `replays` after `warmup` untimed
// ones. Instantiates the graph and destroys both it and its executable.
inline float replay_ms(cudaGraph_t graph, cudaStream_t stream, int warmup, int replays) {
  cudaGraphExec_t exec;
  CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (int r = 0; r < warmup; r++) CHECK(cudaGraphLaunch(exec, stream));
  const float ms = timed_ms(stream, [&] {
    for (int r = 0; r < replays; r++) CHECK(cudaGraphLaunch(exec, stream));
  });
  CHECK(cudaGraphExecDestroy(exec));
  CHECK(cudaGraphDestroy(graph));
  return ms / replays;
}

// A device buffer of `bytes` that reads as nonzero (the values do not matter, only their bytes).
inline char* nonzero_buffer(size_t bytes) {
  char* p;
  CHECK(cudaMalloc(&p, bytes));
  CHECK(cudaMemset(p, 0x5a, bytes));
  return p;
}

// Device-to-device copy bandwidth (bytes read + written per second) over 1 GiB of `buffer` (which
// must hold 2 GiB), as tachyon's bench measures it.
inline double copy_bandwidth(char* buffer, cudaStream_t stream) {
  const size_t copy = (size_t)1 << 30;
  CHECK(cudaMemcpyAsync(buffer + copy, buffer, copy, cudaMemcpyDeviceToDevice, stream));
  const float ms = timed_ms(stream, [&] {
    for (int i = 0; i < 10; i++) CHECK(cudaMemcpyAsync(buffer + copy, buffer, copy, cudaMemcpyDeviceToDevice, stream));
  });
  return 2.0 * copy * 10 / (ms / 1e3);
}
