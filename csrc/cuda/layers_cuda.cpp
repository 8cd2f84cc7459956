// The CUDA kernels of the generic layer operators: csrc/ops/layer_kernels.h over CUDABackend,
// for the list of cells.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../ops/layer_kernels.h"
#include "runtime.h"

namespace rnnkernels {
namespace {

// Runs Op with the device of its first tensor argument current. The dispatcher gives custom
// operators no device guard (ATen's own operators get a generated one), and CUDABackend launches
// on the current device's stream, so without this, tensors on cuda:1 under a current cuda:0
// would be handed to kernels on the wrong device. Both operators take the cell's name, then a
// tensor on the operator's device (input, or grad_output for the backward).
template <auto Op>
struct OnDeviceOfFirstTensor;

template <typename Result, typename... Args,
          Result (*Op)(c10::string_view, const at::Tensor&, Args...)>
struct OnDeviceOfFirstTensor<Op> {
  static Result call(c10::string_view cell, const at::Tensor& first, Args... args) {
    const c10::cuda::CUDAGuard guard(first.device());
    return Op(cell, first, args...);
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(rnnkernels, CUDA, m) {
  m.impl("layer", &OnDeviceOfFirstTensor<&layer_kernel<Cells, CUDABackend>>::call);
  m.impl("layer_backward",
         &OnDeviceOfFirstTensor<&layer_backward_kernel<Cells, CUDABackend>>::call);
}

}  // namespace rnnkernels
