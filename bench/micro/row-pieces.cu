// Whether reading each weight row in short pieces, many rows apart in time, costs DRAM bandwidth
// (a measurement tool, not engine code: nvcc -arch=sm_90a -O3).
//
// tachyon's tensor-core products (qmma in kernels/qgemv.cu) give a block 128 rows and a slice of
// their bytes, and stream the slice in steps that take a short piece of every row: 64 bytes a row
// per step with the register ring, 128 with the session-21 experiment's tensor-map boxes. The
// one-row GEMV reads each row's bytes in one pass. Here one kernel reads every byte of a matrix
// once, each block looping over units of 128 rows × SLICE bytes, with the same loads (the
// engine's load_stream, DEPTH 16-byte loads in flight a thread). Only the order differs: a unit
// is read in pieces of PIECE bytes, all 128 rows' first pieces, then their second ones, and so
// on. A chain of such kernels over distinct parts of a buffer far larger than L2 is captured with
// programmatic dependent launch and replayed; the time a kernel takes over the copy bandwidth
// measured in the same run is the efficiency of that order.
#include "cuda-check.h"
#include "../../kernels/common.cuh"  // load_stream: the engine's weight loads

constexpr int kThreads = 256, kDepth = 8, kUnitRows = 128;

__global__ void __launch_bounds__(kThreads) row_pieces(const uint4* src, int rows, int row_words, int slice_words,
                                                       int piece_shift, float* sink) {
  pdl_start();
  const int slices = row_words / slice_words, units = rows / kUnitRows * slices;
  const int unit_words = kUnitRows * slice_words, piece_mask = (1 << piece_shift) - 1;
  unsigned acc = 0;
  for (int u = blockIdx.x; u < units; u += gridDim.x) {
    const uint4* base = src + (size_t)(u / slices) * kUnitRows * row_words + (u % slices) * slice_words;
    for (int j0 = threadIdx.x; j0 < unit_words; j0 += kThreads * kDepth) {
      uint4 r[kDepth];
#pragma unroll
      for (int d = 0; d < kDepth; d++) {
        const int j = j0 + d * kThreads, piece = j >> piece_shift;
        if (j < unit_words)
          r[d] = load_stream(base + (size_t)(piece % kUnitRows) * row_words + (piece / kUnitRows << piece_shift) +
                             (j & piece_mask));
      }
#pragma unroll
      for (int d = 0; d < kDepth; d++)
        if (j0 + d * kThreads < unit_words) acc ^= r[d].x + r[d].y + r[d].z + r[d].w;
    }
  }
  if (acc == 0x12345678u) *sink = (float)acc;
}

int main() {
  const int kernels = 40, replays = 20, blocks = 264;  // two blocks a multiprocessor, as qmma's grid
  struct Shape {
    const char* name;
    int rows, row_bytes, slice_bytes;
  };
  // 8B products: int4 gate·up and down (slices of 1024 k), int8 gate·up.
  const Shape shapes[] = {{"int4 gate·up", 28672, 2048, 512}, {"int4 down", 4096, 7168, 512},
                          {"int8 gate·up", 28672, 4096, 1024}};
  const int pieces[] = {16, 64, 128, 256, 512, 1024};
  size_t most = 0;
  for (const Shape& s : shapes) most = std::max(most, (size_t)s.rows * s.row_bytes);
  const size_t buffer = std::max((size_t)kernels * most, (size_t)2 << 30);
  char* src = nonzero_buffer(buffer);
  float* sink;
  CHECK(cudaMalloc(&sink, 4));
  cudaStream_t stream;
  CHECK(cudaStreamCreate(&stream));
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  const double copy_bps = copy_bandwidth(src, stream);
  printf("%s: copy %.0f GB/s; %d kernels a graph, %d blocks of %d threads, %d loads in flight each\n", prop.name,
         copy_bps / 1e9, kernels, blocks, kThreads, kDepth);
  printf("%-14s %10s %7s %7s %9s %9s %8s\n", "product", "bytes", "slice", "piece", "us", "GB/s", "of copy");
  for (const Shape& s : shapes)
    for (int piece : pieces) {
      if (piece > s.slice_bytes) continue;
      const size_t bytes = (size_t)s.rows * s.row_bytes;
      cudaGraph_t graph;
      CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
      for (int i = 0; i < kernels; i++)
        launch_pdl(row_pieces, dim3(blocks), dim3(kThreads), stream, i > 0,
                   reinterpret_cast<const uint4*>(src + i * bytes), s.rows, s.row_bytes / 16, s.slice_bytes / 16,
                   __builtin_ctz(piece / 16), sink);
      CHECK(cudaStreamEndCapture(stream, &graph));
      const double us = replay_ms(graph, stream, 3, replays) * 1e3 / kernels, bps = bytes / (us / 1e6);
      printf("%-14s %10zu %7d %7d %9.2f %9.0f %7.1f%%\n", s.name, bytes, s.slice_bytes, piece, us, bps / 1e9,
             100.0 * bps / copy_bps);
    }
  return 0;
}
