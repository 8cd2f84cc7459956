// The CUDA device's Runtime for KernelBackend (backend.h): c10's current stream, c10's launch
// check, and asynchronous device-to-device copies on that stream. Nothing synchronises the host.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include "backend.h"

namespace rnnkernels {

struct CUDARuntime {
  // c10's current stream, which is what at::cuda::getCurrentCUDAStream() returns; this header
  // spares the build ATen/cuda/CUDAContext.h and with it the cuBLAS and cuSPARSE headers.
  static cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }
  static void check(cudaError_t error) { C10_CUDA_CHECK(error); }
  static void copy(void* dst, const void* src, size_t bytes) {
    C10_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream()));
  }
};

using CUDABackend = KernelBackend<CUDARuntime>;

}  // namespace rnnkernels
