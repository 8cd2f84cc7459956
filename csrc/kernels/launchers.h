// The launch helpers of the fused pointwise step kernels (lstm.cu, gru.cu, rnn.cu), declared for
// the torch side (csrc/cuda/pointwise.cpp).
//
// Torch-free. Each takes one step's params by value (params.h documents every pointer's shape),
// launches on `stream`, and returns cudaGetLastError() so the caller checks the launch. They never
// synchronise. Instantiated for T = float, double, __half and __nv_bfloat16; the half types are
// computed in float, double in double.
#pragma once

#include <cuda_runtime_api.h>

#include "params.h"

namespace rnnkernels {

template <typename T>
cudaError_t launch_lstm_forward_pointwise(LSTMForwardParams<T> p, cudaStream_t stream);
template <typename T>
cudaError_t launch_lstm_backward_pointwise(LSTMBackwardParams<T> p, cudaStream_t stream);
template <typename T>
cudaError_t launch_gru_forward_pointwise(GRUForwardParams<T> p, cudaStream_t stream);
template <typename T>
cudaError_t launch_gru_backward_pointwise(GRUBackwardParams<T> p, cudaStream_t stream);
template <typename T, bool Relu>
cudaError_t launch_rnn_forward_pointwise(RNNForwardParams<T> p, cudaStream_t stream);
template <typename T, bool Relu>
cudaError_t launch_rnn_backward_pointwise(RNNBackwardParams<T> p, cudaStream_t stream);

}  // namespace rnnkernels
