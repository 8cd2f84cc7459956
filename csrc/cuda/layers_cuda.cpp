// The CUDA kernels of every rnnkernels:: operator: csrc/layers.h's step loops over CUDABackend.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../layers.h"
#include "pointwise.h"

namespace rnnkernels {
namespace {

// Runs Op with its first argument's device current. The dispatcher gives custom operators no
// device guard (ATen's own operators get a generated one), and CUDABackend launches on the
// current device's stream, so without this, tensors on cuda:1 under a current cuda:0 would be
// handed to kernels on the wrong device. Every operator's first argument is a tensor on the
// operator's device (input, or grad_output for the backwards).
template <auto Op>
struct OnDeviceOfFirstArgument;

template <typename Result, typename... Args, Result (*Op)(const at::Tensor&, Args...)>
struct OnDeviceOfFirstArgument<Op> {
  static Result call(const at::Tensor& first, Args... args) {
    const c10::cuda::CUDAGuard guard(first.device());
    return Op(first, args...);
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(rnnkernels, CUDA, m) {
  m.impl("lstm_layer", &OnDeviceOfFirstArgument<&lstm_layer<CUDABackend>>::call);
  m.impl("lstm_layer_backward", &OnDeviceOfFirstArgument<&lstm_layer_backward<CUDABackend>>::call);
  m.impl("gru_layer", &OnDeviceOfFirstArgument<&gru_layer<CUDABackend>>::call);
  m.impl("gru_layer_backward", &OnDeviceOfFirstArgument<&gru_layer_backward<CUDABackend>>::call);
  m.impl("rnn_layer", &OnDeviceOfFirstArgument<&rnn_layer<CUDABackend>>::call);
  m.impl("rnn_layer_backward", &OnDeviceOfFirstArgument<&rnn_layer_backward<CUDABackend>>::call);
}

}  // namespace rnnkernels
