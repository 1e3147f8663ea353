// What one kernel-to-kernel hand-over costs inside a CUDA graph, by how the next kernel learns
// that its predecessor is done (a measurement tool, not engine code: nvcc -arch=sm_90a -O3).
//
// A chain of KERNELS small kernels, each block reading one value its predecessor wrote, is
// captured into a graph with programmatic dependent launch and replayed; the time a replay takes,
// over KERNELS, is the hand-over's cost. Modes:
//   stream   no dependent launch: each kernel starts once its predecessor has ended
//   pdl      dependent launch, griddepcontrol.wait (what tachyon's kernels do)
//   flags    dependent launch, but the wait is a spin on a counter that each block of the
//            predecessor increments (release) once its writes are done
//   barrier  one persistent kernel, KERNELS phases separated by a grid-wide barrier
// Each kernel streams WORK bytes a block of a large buffer before it reads its predecessor's
// value (none by default), to see how much of the hand-over overlaps a bandwidth-bound prologue.
#include <vector>
#include "cuda-check.h"

enum Mode { STREAM, PDL, FLAGS, BARRIER };

__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void red_release(unsigned* p, unsigned v) {
  asm volatile("red.release.gpu.global.add.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

// This block's share of the streamed bytes (summed so it is not optimised away).
__device__ float stream_work(const float4* work, size_t per_block, int block) {
  float s = 0.0f;
  const float4* p = work + (size_t)block * per_block;
  for (size_t i = threadIdx.x; i < per_block; i += blockDim.x) {
    float4 v = __ldcs(p + i);
    s += v.x + v.y + v.z + v.w;
  }
  return s;
}

// One link of the chain: value[i] = value[i - 1] + 1, as every block of kernel i writes it.
__global__ void link(int mode, int i, float* values, unsigned* done, unsigned expected, const float4* work,
                     size_t per_block, float* sink) {
  const float s = stream_work(work, per_block, blockIdx.x);
  if (mode == PDL) asm volatile("griddepcontrol.wait;" ::: "memory");
  if (mode == FLAGS && i > 0) {
    if (threadIdx.x == 0)
      while (ld_acquire(done + i - 1) < expected) {
      }
    __syncthreads();
  }
  if (mode != STREAM) asm volatile("griddepcontrol.launch_dependents;");
  const float before = i > 0 ? *(volatile float*)(values + i - 1) : 0.0f;
  if (threadIdx.x == 0) {
    if (blockIdx.x == 0) values[i] = before + 1.0f;
    if (s == 12345.0f) *sink = s;
  }
  if (mode == FLAGS) {
    __syncthreads();
    if (threadIdx.x == 0) {
      __threadfence();
      red_release(done + i, 1);
    }
  }
}

// All links in one kernel: a grid-wide barrier (a counter every block increments, then waits to
// reach its phase's total) between phases.
__global__ void persistent(int kernels, float* values, unsigned* done, const float4* work, size_t per_block,
                           float* sink) {
  for (int i = 0; i < kernels; i++) {
    const float s = stream_work(work, per_block, blockIdx.x);
    if (i > 0) {
      if (threadIdx.x == 0)
        while (ld_acquire(done) < (unsigned)i * gridDim.x) {
        }
      __syncthreads();
    }
    const float before = i > 0 ? *(volatile float*)(values + i - 1) : 0.0f;
    if (threadIdx.x == 0) {
      if (blockIdx.x == 0) values[i] = before + 1.0f;
      if (s == 12345.0f) *sink = s;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      __threadfence();
      red_release(done, 1);
    }
  }
}

int main(int argc, char** argv) {
  const int kernels = 160, replays = 200;
  const int blocks_list[] = {64, 132, 264, 448, 528};
  const size_t work_list[] = {0, 16384};  // bytes a block streams
  cudaStream_t stream;
  CHECK(cudaStreamCreate(&stream));
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  float *values, *sink;
  unsigned* done;
  float4* work;
  const size_t work_bytes = (size_t)528 * 16384 * 2;
  CHECK(cudaMalloc(&values, kernels * sizeof(float)));
  CHECK(cudaMalloc(&sink, sizeof(float)));
  CHECK(cudaMalloc(&done, kernels * sizeof(unsigned)));
  CHECK(cudaMalloc(&work, work_bytes));
  std::vector<float> host(work_bytes / 4);
  for (size_t i = 0; i < host.size(); i++) host[i] = (float)((i * 2654435761u) % 1000) / 1000.0f;
  CHECK(cudaMemcpy(work, host.data(), work_bytes, cudaMemcpyHostToDevice));
  printf("%s, %d multiprocessors; %d kernels a graph, %d replays\n", prop.name, prop.multiProcessorCount, kernels,
         replays);
  printf("%-8s %6s %8s %12s %10s\n", "mode", "blocks", "bytes", "us a kernel", "check");
  const char* names[] = {"stream", "pdl", "flags", "barrier"};
  for (size_t work_per_block : work_list)
    for (int blocks : blocks_list)
      for (int mode = STREAM; mode <= BARRIER; mode++) {
        const size_t per_block = work_per_block / 16;
        cudaGraph_t graph;
        CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
        CHECK(cudaMemsetAsync(done, 0, kernels * sizeof(unsigned), stream));
        if (mode == BARRIER) {
          int per_sm = 0;
          CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, persistent, 128, 0));
          if (blocks > per_sm * prop.multiProcessorCount) {
            CHECK(cudaStreamEndCapture(stream, &graph));
            CHECK(cudaGraphDestroy(graph));
            continue;
          }
          persistent<<<blocks, 128, 0, stream>>>(kernels, values, done, work, per_block, sink);
        } else {
          for (int i = 0; i < kernels; i++)
            launch_pdl(link, dim3(blocks), dim3(128), stream, mode != STREAM && i > 0, mode, i, values, done,
                       (unsigned)blocks, work, per_block, sink);
        }
        CHECK(cudaStreamEndCapture(stream, &graph));
        const float ms = replay_ms(graph, stream, 10, replays);
        float last;
        CHECK(cudaMemcpy(&last, values + kernels - 1, sizeof(float), cudaMemcpyDeviceToHost));
        printf("%-8s %6d %8zu %12.3f %10s\n", names[mode], blocks, work_per_block, ms * 1000.0f / kernels,
               last == (float)kernels ? "ok" : "WRONG");
      }
  return 0;
}
