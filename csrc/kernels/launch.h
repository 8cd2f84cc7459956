// What the CUDA pointwise drivers (pointwise.cuh) share: the compute type, loads and stores that
// convert to it, the element loop, and the one place that turns a problem size into a grid.
// Torch-free; for .cu files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "cells.h"

namespace rnnkernels {
namespace kernels {

// The type the cell math runs in: float for the half types (their range and precision are too
// small for the cell state update), double for double.
template <typename T>
struct ComputeType {
  using type = float;
};
template <>
struct ComputeType<double> {
  using type = double;
};
template <typename T>
using compute_t = typename ComputeType<T>::type;

// Explicit conversion intrinsics rather than __half's conversion operators: torch's extension
// build defines __CUDA_NO_HALF_CONVERSIONS__ and __CUDA_NO_BFLOAT16_CONVERSIONS__, which remove
// those operators.
RNNKERNELS_HD float load(const float* p) { return *p; }
RNNKERNELS_HD double load(const double* p) { return *p; }
RNNKERNELS_HD float load(const __half* p) { return __half2float(*p); }
RNNKERNELS_HD float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }

RNNKERNELS_HD void store(float* p, float v) { *p = v; }
RNNKERNELS_HD void store(double* p, double v) { *p = v; }
RNNKERNELS_HD void store(__half* p, float v) { *p = __float2half_rn(v); }
RNNKERNELS_HD void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// The IO policy of the step accessors (step.h): one element, in the compute type.
template <typename T>
struct ScalarIO {
  using Value = compute_t<T>;
  using Math = cells::ScalarMath;
  RNNKERNELS_HD Value load(const T* p) const { return kernels::load(p); }
  RNNKERNELS_HD void store(T* p, Value v) const { kernels::store(p, v); }
};

// An element-wise kernel handles one (row, hidden unit) element per iteration of a grid-stride
// loop over batch * H elements. Indices are int64_t: a step's batch * 4H can pass 2^31.
template <typename Body>
__device__ __forceinline__ void for_each_element(int64_t batch, int64_t hidden, const Body& body) {
  const int64_t elements = batch * hidden;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < elements;
       e += stride) {
    const int64_t row = e / hidden;
    body(row, e - row * hidden);
  }
}

// 256 threads: the kernels are memory-bound with few registers, so any multiple of the warp size
// reaches full occupancy; 256 keeps small steps spread over many SMs.
constexpr int kThreadsPerBlock = 256;
// The grid-stride loop lets the grid stop growing here: 65536 blocks of 256 threads are 16.7M
// threads, far above the ~270K an H100 keeps resident, so no launch loses parallelism, and the
// grid stays inside gridDim.x's limit at any size.
constexpr int64_t kMaxBlocks = 65536;

// Launches `kernel(params)` on `stream` with `threads` a block; returns the launch's error.
template <typename Params>
cudaError_t launch_kernel(void (*kernel)(Params), int64_t blocks, int threads,
                          const Params& params, cudaStream_t stream) {
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks));
  config.blockDim = dim3(threads);
  config.stream = stream;
  // The runtime's launch function rather than <<<>>>: plain C++, so the kernels also compile
  // and run under the host emulation of the tests (tests/cuda_emulation/).
  return cudaLaunchKernelEx(&config, kernel, params);
}

// An element-wise kernel over `elements` elements: one thread each, up to the grid's limit.
template <typename Params>
cudaError_t launch_elementwise(void (*kernel)(Params), int64_t elements, const Params& params,
                               cudaStream_t stream) {
  if (elements == 0) return cudaSuccess;
  return launch_kernel(kernel, (elements + kThreadsPerBlock - 1) / kThreadsPerBlock,
                       kThreadsPerBlock, params, stream);
}

// A row-wise kernel over `rows` rows of `hidden` units: a block a row, up to the grid's limit,
// of the fewest threads (a power of two, from a warp to kThreadsPerBlock) that cover a row.
template <typename Params>
cudaError_t launch_rows(void (*kernel)(Params), int64_t rows, int64_t hidden,
                        const Params& params, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  int threads = 32;
  while (threads < kThreadsPerBlock && threads < hidden) threads *= 2;
  return launch_kernel(kernel, rows, threads, params, stream);
}

}  // namespace kernels
}  // namespace rnnkernels
