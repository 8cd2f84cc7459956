// The generic layer operators over the CUDA kernels of csrc/kernels/, compiled as host C++ under
// cuda_emulation.h and run on the CPU, and over the tests' own cells (test_cells.h):
//   torch.ops.rnnkernels_emulated.layer and layer_backward: the arguments of
//     torch.ops.rnnkernels.layer and layer_backward, CPU tensors, the CUDA kernels run on the
//     CPU, for the library's cells and the tests';
//   torch.ops.rnnkernels_test.layer and layer_backward: the same on the CPU driver, and
//     differentiable_layer: the layer recomputed in ATen (csrc/layer/differentiable.h), for the
//     tests' cells.
// The step loops and the backends are the library's own (csrc/layer/layer.h, csrc/cpu/backend.h,
// csrc/cuda/backend.h); only the CUDA Runtime differs. Built and checked by
// tests/test_cuda_emulation.py.
#include <torch/extension.h>

#include <cstring>

#include "cpu/backend.h"
#include "layer/differentiable.h"
#include "ops/layer_kernels.h"
#include "cuda/backend.h"
#include "test_cells.h"

#define RNNKERNELS_FOR_EACH_EMULATED_CELL(X, ...) \
  RNNKERNELS_FOR_EACH_CELL(X, __VA_ARGS__) RNNKERNELS_FOR_EACH_TEST_CELL(X, __VA_ARGS__)

namespace rnnkernels {

// The portable CPU driver's, instantiated for the tests' cells in test_cells_cpu.cpp.
namespace isa_default {
template <typename Cell, typename T>
void forward(const StepForwardParams<T>&);
template <typename Cell, typename T>
void backward(const StepBackwardParams<T>&);
}  // namespace isa_default

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
using EmulatedCells = RNNKERNELS_CELL_LIST(RNNKERNELS_FOR_EACH_EMULATED_CELL);
using TestCells = RNNKERNELS_CELL_LIST(RNNKERNELS_FOR_EACH_TEST_CELL);

// CPUBackend with the portable driver, the one the tests' cells have.
struct TestCPUBackend : CPUBackend {
  template <typename Cell, typename T>
  static void forward(const StepForwardParams<T>& p) {
    isa_default::forward<Cell, T>(p);
  }
  template <typename Cell, typename T>
  static void backward(const StepBackwardParams<T>& p) {
    isa_default::backward<Cell, T>(p);
  }
};

std::tuple<at::Tensor, std::vector<at::Tensor>> test_differentiable_layer(
    c10::string_view cell, const at::Tensor& input, const at::Tensor& batch_sizes,
    at::TensorList states, const c10::List<OptionalTensor>& params,
    at::ArrayRef<double> scalars, bool reverse) {
  const Layout layout(input, states);
  const LayerArgs args = layer_args(layout, input, batch_sizes, states, params, scalars, reverse);
  std::pair<at::Tensor, std::vector<at::Tensor>> out;
  visit_cell<TestCells>(cell, [&](auto tag) {
    out = differentiable_layer<typename decltype(tag)::type>(args);
  });
  return {layout.padded(out.first), layout.layered(std::move(out.second))};
}

}  // namespace

TORCH_LIBRARY(rnnkernels_emulated, m) {
  m.def("layer", &layer_kernel<EmulatedCells, EmulatedBackend>);
  m.def("layer_backward", &layer_backward_kernel<EmulatedCells, EmulatedBackend>);
}

TORCH_LIBRARY(rnnkernels_test, m) {
  m.def("layer", &layer_kernel<TestCells, TestCPUBackend>);
  m.def("layer_backward", &layer_backward_kernel<TestCells, TestCPUBackend>);
  m.def("differentiable_layer", &test_differentiable_layer);
}

}  // namespace rnnkernels

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("set_grid_limit", &set_grid_limit,
        "Caps the blocks of every launch (0: none), so grid-stride loops wrap");
}
