// CUDA backend of csrc/layers.h: the fused pointwise step of every cell, launched on the current
// CUDA stream (csrc/kernels/*.cu hold the kernels), and the GEMMs through ATen (cuBLAS, on the
// same stream). The launches are asynchronous and checked; nothing here synchronises the host.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "../aten_gemm.h"
#include "../kernels/params.h"

namespace rnnkernels {

// T is the ATen scalar type (float, double, c10::Half, c10::BFloat16); the pointers must be
// device memory of the current CUDA device.
struct CUDABackend {
  template <typename T> static void lstm_forward(const LSTMForwardParams<T>& p);
  template <typename T> static void lstm_backward(const LSTMBackwardParams<T>& p);
  template <typename T> static void gru_forward(const GRUForwardParams<T>& p);
  template <typename T> static void gru_backward(const GRUBackwardParams<T>& p);
  template <typename T, bool Relu> static void rnn_forward(const RNNForwardParams<T>& p);
  template <typename T, bool Relu> static void rnn_backward(const RNNBackwardParams<T>& p);

  // count elements, device to device, ordered on the current stream.
  template <typename T> static void copy(T* dst, const T* src, int64_t count);

  // The GEMMs are cuBLAS's, through ATen on the current stream, as DESIGN.md prescribes.
  template <typename T>
  using RecurrentGemm = ATenRecurrentGemm<T>;
  static at::Tensor addmm(const at::Tensor& bias, const at::Tensor& a, const at::Tensor& b) {
    return aten_addmm(bias, a, b);
  }

  // One slice: every step's kernels already cover the whole batch.
  template <typename F>
  static void for_each_batch_slice(int64_t batch, int64_t /*step_macs*/, const F& body) {
    body(0, batch);
  }
};

}  // namespace rnnkernels
