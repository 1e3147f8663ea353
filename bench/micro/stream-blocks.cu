// Whether a weight-streaming kernel gains from fewer, longer thread blocks inside a chain of
// dependent launches (a measurement tool, not engine code: nvcc -arch=sm_90a -O3).
//
// A chain of KERNELS kernels, each streaming BYTES of its own part of a buffer far larger than
// L2 (so every byte comes from DRAM), is captured into a graph with programmatic dependent launch
// and replayed. Each kernel's grid splits its bytes over BLOCKS blocks of THREADS threads, each
// thread keeping DEPTH 16-byte loads in flight, the first ones issued before griddepcontrol.wait
// as tachyon's GEMVs do (with the engine's own load_stream). Fewer blocks with deeper loads keep
// the same bytes in flight. The replay's time over KERNELS is one kernel's cost inside the chain;
// the ratio to the copy bandwidth measured in the same run is its efficiency.
#include "cuda-check.h"
#include "../../kernels/common.cuh"  // load_stream: the engine's weight loads
#include "stream-kernel.cuh"

int main() {
  const int kernels = 96, replays = 30;
  const size_t sizes[] = {8400000, 12600000, 29400000, 59600000};  // 8B int4 o, q/k/v, down, gate·up
  // (blocks, threads, depth): 256-thread shapes, then the gate·up fold's 128 threads by 8 loads
  // at 396 / 448 / 528 blocks (448 is the 8B fold's grid: 3.4 blocks a multiprocessor).
  const int3 shapes[] = {{132, 256, 4},  {132, 256, 8},  {132, 256, 16}, {264, 256, 4},  {264, 256, 8},
                         {396, 256, 4},  {528, 256, 2},  {528, 256, 4},  {1056, 256, 2}, {396, 128, 8},
                         {448, 128, 8},  {528, 128, 8},  {448, 128, 4},  {896, 128, 4},  {1792, 128, 2}};
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  const size_t buffer = (size_t)kernels * 59600000;
  char* src = nonzero_buffer(buffer);
  float* sink;
  CHECK(cudaMalloc(&sink, 4));
  cudaStream_t stream_;
  CHECK(cudaStreamCreate(&stream_));
  const double copy_bps = copy_bandwidth(src, stream_);
  printf("%s: copy %.0f GB/s; %d kernels a graph, %d replays\n", prop.name, copy_bps / 1e9, kernels, replays);
  printf("%10s %7s %8s %6s %9s %9s %8s\n", "bytes", "blocks", "threads", "depth", "us", "GB/s", "of copy");
  for (size_t bytes : sizes)
    for (int3 shape : shapes) {
      const int blocks = shape.x, threads = shape.y, depth = shape.z;
      cudaGraph_t graph;
      CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal));
      for (int i = 0; i < kernels; i++) {
        const uint4* part = reinterpret_cast<const uint4*>(src + (size_t)i * 59600000);
        auto kernel = threads == 128 ? (depth == 2 ? stream<128, 2> : depth == 4 ? stream<128, 4> : stream<128, 8>)
                                     : (depth == 2   ? stream<256, 2>
                                        : depth == 4 ? stream<256, 4>
                                        : depth == 8 ? stream<256, 8>
                                                     : stream<256, 16>);
        launch_pdl(kernel, dim3(blocks), dim3(threads), stream_, i > 0, part, bytes / 16, sink);
      }
      CHECK(cudaStreamEndCapture(stream_, &graph));
      const double us = replay_ms(graph, stream_, 3, replays) * 1e3 / kernels, bps = bytes / (us / 1e6);
      printf("%10zu %7d %8d %6d %9.2f %9.0f %7.1f%%\n", bytes, blocks, threads, depth, us, bps / 1e9,
             100.0 * bps / copy_bps);
    }
  return 0;
}
