// The fused pointwise step kernels of the Elman RNN (tanh, or relu with Relu = true) and their
// launch helpers (launchers.h). One thread per (row, hidden unit) element; the math is
// cells::rnn_forward/backward.
#include "cells.h"
#include "launch.h"
#include "launchers.h"

namespace rnnkernels {
namespace kernels {

template <typename T, bool Relu>
__global__ void rnn_forward_pointwise(RNNForwardParams<T> p) {
  for_each_element(p.batch, p.hidden, [&](int64_t, int64_t, int64_t e) {
    const auto h =
        cells::rnn_forward<cells::ScalarMath, Relu>(load(p.xproj + e) + load(p.hproj + e));
    store(p.h + e, h);
    store(p.output + e, h);
  });
}

template <typename T, bool Relu>
__global__ void rnn_backward_pointwise(RNNBackwardParams<T> p) {
  for_each_element(p.batch, p.hidden, [&](int64_t, int64_t, int64_t e) {
    store(p.grad_pre + e, cells::rnn_backward<cells::ScalarMath, Relu>(
                              load(p.output + e), load(p.grad_h + e) + load(p.grad_output + e)));
  });
}

}  // namespace kernels

template <typename T, bool Relu>
cudaError_t launch_rnn_forward_pointwise(RNNForwardParams<T> p, cudaStream_t stream) {
  return kernels::launch_elementwise(kernels::rnn_forward_pointwise<T, Relu>, p.batch * p.hidden,
                                     p, stream);
}

template <typename T, bool Relu>
cudaError_t launch_rnn_backward_pointwise(RNNBackwardParams<T> p, cudaStream_t stream) {
  return kernels::launch_elementwise(kernels::rnn_backward_pointwise<T, Relu>, p.batch * p.hidden,
                                     p, stream);
}

#define RNNKERNELS_INSTANTIATE_RNN(T, Relu)                                                      \
  template cudaError_t launch_rnn_forward_pointwise<T, Relu>(RNNForwardParams<T>, cudaStream_t); \
  template cudaError_t launch_rnn_backward_pointwise<T, Relu>(RNNBackwardParams<T>, cudaStream_t);

RNNKERNELS_INSTANTIATE_RNN(float, false)
RNNKERNELS_INSTANTIATE_RNN(float, true)
RNNKERNELS_INSTANTIATE_RNN(double, false)
RNNKERNELS_INSTANTIATE_RNN(double, true)
RNNKERNELS_INSTANTIATE_RNN(__half, false)
RNNKERNELS_INSTANTIATE_RNN(__half, true)
RNNKERNELS_INSTANTIATE_RNN(__nv_bfloat16, false)
RNNKERNELS_INSTANTIATE_RNN(__nv_bfloat16, true)

}  // namespace rnnkernels
