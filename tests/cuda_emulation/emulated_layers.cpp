// The layer operators' step loops (csrc/layers.h) over the CUDA kernels of csrc/kernels/, compiled
// as host C++ under cuda_emulation.h and run on the CPU: torch.ops.rnnkernels_emulated.* take the
// arguments of torch.ops.rnnkernels.* and CPU tensors. Built and compared with the CPU path by
// tests/test_cuda_emulation.py.
#include <torch/extension.h>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstring>
#include <type_traits>

#include "aten_gemm.h"
#include "kernels/launchers.h"
#include "layers.h"

namespace rnnkernels {
namespace {

template <typename T>
struct KernelScalar {
  using type = T;
};
template <>
struct KernelScalar<c10::Half> {
  using type = __half;
};
template <>
struct KernelScalar<c10::BFloat16> {
  using type = __nv_bfloat16;
};

// The params with every pointer retyped to the kernels' scalar type (one layout: plain data).
template <template <typename> class Params, typename T>
Params<typename KernelScalar<T>::type> to_kernel(const Params<T>& params) {
  Params<typename KernelScalar<T>::type> out;
  static_assert(sizeof(out) == sizeof(params) && std::is_trivially_copyable_v<decltype(out)>);
  std::memcpy(&out, &params, sizeof(out));
  return out;
}

void check(cudaError_t error) { TORCH_CHECK(error == cudaSuccess, "launch failed: ", error); }

// CUDABackend (csrc/cuda/pointwise.h) with host memory: the same launch helpers, no stream.
struct EmulatedBackend {
  template <typename T>
  static void lstm_forward(const LSTMForwardParams<T>& p) {
    check(launch_lstm_forward_pointwise(to_kernel(p), nullptr));
  }
  template <typename T>
  static void lstm_backward(const LSTMBackwardParams<T>& p) {
    check(launch_lstm_backward_pointwise(to_kernel(p), nullptr));
  }
  template <typename T>
  static void gru_forward(const GRUForwardParams<T>& p) {
    check(launch_gru_forward_pointwise(to_kernel(p), nullptr));
  }
  template <typename T>
  static void gru_backward(const GRUBackwardParams<T>& p) {
    check(launch_gru_backward_pointwise(to_kernel(p), nullptr));
  }
  template <typename T, bool Relu>
  static void rnn_forward(const RNNForwardParams<T>& p) {
    check(launch_rnn_forward_pointwise<typename KernelScalar<T>::type, Relu>(to_kernel(p), nullptr));
  }
  template <typename T, bool Relu>
  static void rnn_backward(const RNNBackwardParams<T>& p) {
    check(launch_rnn_backward_pointwise<typename KernelScalar<T>::type, Relu>(to_kernel(p), nullptr));
  }
  template <typename T>
  static void copy(T* dst, const T* src, int64_t count) {
    std::memcpy(dst, src, count * sizeof(T));
  }
  template <typename T>
  using RecurrentGemm = ATenRecurrentGemm<T>;
  static at::Tensor addmm(const at::Tensor& bias, const at::Tensor& a, const at::Tensor& b) {
    return aten_addmm(bias, a, b);
  }
  template <typename F>
  static void for_each_batch_slice(int64_t batch, int64_t /*step_macs*/, const F& body) {
    body(0, batch);
  }
};

}  // namespace

TORCH_LIBRARY(rnnkernels_emulated, m) {
  m.def("lstm_layer", &lstm_layer<EmulatedBackend>);
  m.def("lstm_layer_backward", &lstm_layer_backward<EmulatedBackend>);
  m.def("gru_layer", &gru_layer<EmulatedBackend>);
  m.def("gru_layer_backward", &gru_layer_backward<EmulatedBackend>);
  m.def("rnn_layer", &rnn_layer<EmulatedBackend>);
  m.def("rnn_layer_backward", &rnn_layer_backward<EmulatedBackend>);
}

}  // namespace rnnkernels

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("set_grid_limit", &set_grid_limit,
        "Caps the blocks of every launch (0: none), so grid-stride loops wrap");
}
