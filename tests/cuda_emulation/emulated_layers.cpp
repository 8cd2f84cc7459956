// The generic layer operators over the CUDA kernels of csrc/kernels/, compiled as host C++ under
// cuda_emulation.h and run on the CPU: torch.ops.rnnkernels_emulated.layer and layer_backward
// take the arguments of torch.ops.rnnkernels.layer and layer_backward, and CPU tensors. The step
// loops and the CUDA backend are the library's own (csrc/layer/layer.h, csrc/cuda/backend.h);
// only the Runtime differs. Built and compared with the CPU path by
// tests/test_cuda_emulation.py.
#include <torch/extension.h>

#include <cstring>

#include "cuda/backend.h"
#include "ops/layer_kernels.h"

namespace rnnkernels {
namespace {

// KernelBackend's Runtime on the host: no stream, host memory.
struct HostRuntime {
  static cudaStream_t stream() { return nullptr; }
  static void check(cudaError_t error) {
    TORCH_CHECK(error == cudaSuccess, "emulated launch failed with error ", error);
  }
  static void copy(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
};

using EmulatedBackend = KernelBackend<HostRuntime>;

}  // namespace

TORCH_LIBRARY(rnnkernels_emulated, m) {
  m.def("layer", &layer_kernel<Cells, EmulatedBackend>);
  m.def("layer_backward", &layer_backward_kernel<Cells, EmulatedBackend>);
}

}  // namespace rnnkernels

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("set_grid_limit", &set_grid_limit,
        "Caps the blocks of every launch (0: none), so grid-stride loops wrap");
}
