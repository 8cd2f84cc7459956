// CPU backend of csrc/layers.h: the fused pointwise step of every cell (pointwise.cpp, vectorised
// per instruction set) and the GEMMs: oneDNN's matmul for float32 when the build found oneDNN
// (onednn_gemm.h), ATen's (MKL) otherwise and for the other dtypes.
#pragma once

#include <ATen/ATen.h>

#include <cstring>

#include "../aten_gemm.h"
#include "../kernels/params.h"

#ifdef RNNKERNELS_WITH_ONEDNN
#include "onednn_gemm.h"
#endif

namespace rnnkernels {

template <typename T>
struct CPURecurrentGemm {
  using type = ATenRecurrentGemm<T>;
};

#ifdef RNNKERNELS_WITH_ONEDNN
template <>
struct CPURecurrentGemm<float> {
  using type = OneDnnRecurrentGemm;
};
#endif

struct CPUBackend {
  template <typename T> static void lstm_forward(const LSTMForwardParams<T>& p);
  template <typename T> static void lstm_backward(const LSTMBackwardParams<T>& p);
  template <typename T> static void gru_forward(const GRUForwardParams<T>& p);
  template <typename T> static void gru_backward(const GRUBackwardParams<T>& p);
  template <typename T, bool Relu> static void rnn_forward(const RNNForwardParams<T>& p);
  template <typename T, bool Relu> static void rnn_backward(const RNNBackwardParams<T>& p);

  template <typename T>
  static void copy(T* dst, const T* src, int64_t count) {
    std::memcpy(dst, src, count * sizeof(T));
  }

  template <typename T>
  using RecurrentGemm = typename CPURecurrentGemm<T>::type;

  static at::Tensor addmm(const at::Tensor& bias, const at::Tensor& a, const at::Tensor& b) {
#ifdef RNNKERNELS_WITH_ONEDNN
    // Below about 2^18 multiply-adds oneDNN's per-call cost outweighs its faster kernel.
    constexpr int64_t kMinOneDnnWork = int64_t{1} << 18;
    if (a.scalar_type() == at::kFloat && a.size(0) * a.size(1) * b.size(1) >= kMinOneDnnWork) {
      return onednn_addmm(bias, a, b);
    }
#endif
    return aten_addmm(bias, a, b);
  }
};

}  // namespace rnnkernels
