#include "pointwise.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstring>
#include <type_traits>

#include "../kernels/launchers.h"

namespace rnnkernels {
namespace {

// The CUDA type with the same bits as an ATen scalar type.
template <typename T>
struct CUDAScalar {
  using type = T;
};
template <>
struct CUDAScalar<c10::Half> {
  using type = __half;
};
template <>
struct CUDAScalar<c10::BFloat16> {
  using type = __nv_bfloat16;
};
template <typename T>
using cuda_t = typename CUDAScalar<T>::type;

// The same params with every pointer retyped to the CUDA scalar type. The params structs hold only
// int64_t and pointers, so both instantiations have one layout; copying the bytes is C++17's way
// to reinterpret all the pointers at once.
template <template <typename> class Params, typename T>
Params<cuda_t<T>> to_cuda(const Params<T>& params) {
  using Out = Params<cuda_t<T>>;
  static_assert(sizeof(cuda_t<T>) == sizeof(T), "scalar types differ in size");
  static_assert(sizeof(Out) == sizeof(Params<T>) && std::is_trivially_copyable_v<Out>,
                "params structs must be plain data of one layout");
  Out out;
  std::memcpy(&out, &params, sizeof(out));
  return out;
}

// c10's current stream, which is what at::cuda::getCurrentCUDAStream() returns; this header
// spares the build ATen/cuda/CUDAContext.h and with it the cuBLAS and cuSPARSE headers.
cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

}  // namespace

template <typename T>
void CUDABackend::lstm_forward(const LSTMForwardParams<T>& p) {
  C10_CUDA_CHECK(launch_lstm_forward_pointwise(to_cuda(p), current_stream()));
}

template <typename T>
void CUDABackend::lstm_backward(const LSTMBackwardParams<T>& p) {
  C10_CUDA_CHECK(launch_lstm_backward_pointwise(to_cuda(p), current_stream()));
}

template <typename T>
void CUDABackend::gru_forward(const GRUForwardParams<T>& p) {
  C10_CUDA_CHECK(launch_gru_forward_pointwise(to_cuda(p), current_stream()));
}

template <typename T>
void CUDABackend::gru_backward(const GRUBackwardParams<T>& p) {
  C10_CUDA_CHECK(launch_gru_backward_pointwise(to_cuda(p), current_stream()));
}

template <typename T, bool Relu>
void CUDABackend::rnn_forward(const RNNForwardParams<T>& p) {
  // A named result: the template argument list's comma would split the macro's argument.
  const cudaError_t launched =
      launch_rnn_forward_pointwise<cuda_t<T>, Relu>(to_cuda(p), current_stream());
  C10_CUDA_CHECK(launched);
}

template <typename T, bool Relu>
void CUDABackend::rnn_backward(const RNNBackwardParams<T>& p) {
  const cudaError_t launched =
      launch_rnn_backward_pointwise<cuda_t<T>, Relu>(to_cuda(p), current_stream());
  C10_CUDA_CHECK(launched);
}

template <typename T>
void CUDABackend::copy(T* dst, const T* src, int64_t count) {
  C10_CUDA_CHECK(cudaMemcpyAsync(dst, src, count * sizeof(T), cudaMemcpyDeviceToDevice,
                                 current_stream()));
}

#define RNNKERNELS_INSTANTIATE_CUDA(T)                                                  \
  template void CUDABackend::lstm_forward<T>(const LSTMForwardParams<T>&);              \
  template void CUDABackend::lstm_backward<T>(const LSTMBackwardParams<T>&);            \
  template void CUDABackend::gru_forward<T>(const GRUForwardParams<T>&);                \
  template void CUDABackend::gru_backward<T>(const GRUBackwardParams<T>&);              \
  template void CUDABackend::rnn_forward<T, false>(const RNNForwardParams<T>&);         \
  template void CUDABackend::rnn_forward<T, true>(const RNNForwardParams<T>&);          \
  template void CUDABackend::rnn_backward<T, false>(const RNNBackwardParams<T>&);       \
  template void CUDABackend::rnn_backward<T, true>(const RNNBackwardParams<T>&);        \
  template void CUDABackend::copy<T>(T*, const T*, int64_t);

RNNKERNELS_INSTANTIATE_CUDA(float)
RNNKERNELS_INSTANTIATE_CUDA(double)
RNNKERNELS_INSTANTIATE_CUDA(c10::Half)
RNNKERNELS_INSTANTIATE_CUDA(c10::BFloat16)

}  // namespace rnnkernels
