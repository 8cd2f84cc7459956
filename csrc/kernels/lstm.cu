// The fused pointwise step kernels of the LSTM and their launch helpers (launchers.h).
// One thread per (row, hidden unit) element; the gate math is cells::lstm_forward/backward.
#include "cells.h"
#include "launch.h"
#include "launchers.h"

namespace rnnkernels {
namespace kernels {

template <typename T>
__global__ void lstm_forward_pointwise(LSTMForwardParams<T> p) {
  using C = compute_t<T>;
  const int64_t H = p.hidden;
  for_each_element(p.batch, H, [&](int64_t row, int64_t unit, int64_t e) {
    C pre[4];
    for (int k = 0; k < 4; ++k) {
      const int64_t g = gate_index(row, unit, 4, k, H);
      pre[k] = load(p.xproj + g) + load(p.hproj + g);
    }
    cells::LSTMGates<C> act;
    C c, h;
    cells::lstm_forward<cells::ScalarMath>(cells::LSTMGates<C>{pre[0], pre[1], pre[2], pre[3]},
                                           load(p.c + e), act, c, h);
    store(p.c + e, c);
    store(p.h + e, h);
    if (p.output != nullptr) store(p.output + e, h);
    if (p.reserve != nullptr) {
      store(p.reserve + gate_index(row, unit, 5, 0, H), act.i);
      store(p.reserve + gate_index(row, unit, 5, 1, H), act.f);
      store(p.reserve + gate_index(row, unit, 5, 2, H), act.g);
      store(p.reserve + gate_index(row, unit, 5, 3, H), act.o);
      store(p.reserve + gate_index(row, unit, 5, 4, H), c);
    }
  });
}

template <typename T>
__global__ void lstm_backward_pointwise(LSTMBackwardParams<T> p) {
  using C = compute_t<T>;
  const int64_t H = p.hidden;
  for_each_element(p.batch, H, [&](int64_t row, int64_t unit, int64_t e) {
    const cells::LSTMGates<C> act{load(p.reserve + gate_index(row, unit, 5, 0, H)),
                                  load(p.reserve + gate_index(row, unit, 5, 1, H)),
                                  load(p.reserve + gate_index(row, unit, 5, 2, H)),
                                  load(p.reserve + gate_index(row, unit, 5, 3, H))};
    const C c = load(p.reserve + gate_index(row, unit, 5, 4, H));
    const C c_prev = row < p.batch_continuing
                         ? load(p.reserve_prev + gate_index(row, unit, 5, 4, H))
                         : load(p.c0 + e);
    C dh = load(p.grad_h + e);
    if (p.grad_output != nullptr) dh += load(p.grad_output + e);
    cells::LSTMGates<C> dpre;
    C dc_prev, h;
    cells::lstm_backward<cells::ScalarMath>(act, c, c_prev, dh, load(p.grad_c + e), dpre, dc_prev,
                                            h);
    store(p.grad_gates + gate_index(row, unit, 4, 0, H), dpre.i);
    store(p.grad_gates + gate_index(row, unit, 4, 1, H), dpre.f);
    store(p.grad_gates + gate_index(row, unit, 4, 2, H), dpre.g);
    store(p.grad_gates + gate_index(row, unit, 4, 3, H), dpre.o);
    store(p.grad_c + e, dc_prev);
    if (p.h != nullptr) store(p.h + e, h);
  });
}

}  // namespace kernels

template <typename T>
cudaError_t launch_lstm_forward_pointwise(LSTMForwardParams<T> p, cudaStream_t stream) {
  return kernels::launch_elementwise(kernels::lstm_forward_pointwise<T>, p.batch * p.hidden, p,
                                     stream);
}

template <typename T>
cudaError_t launch_lstm_backward_pointwise(LSTMBackwardParams<T> p, cudaStream_t stream) {
  return kernels::launch_elementwise(kernels::lstm_backward_pointwise<T>, p.batch * p.hidden, p,
                                     stream);
}

#define RNNKERNELS_INSTANTIATE_LSTM(T)                                                        \
  template cudaError_t launch_lstm_forward_pointwise<T>(LSTMForwardParams<T>, cudaStream_t);  \
  template cudaError_t launch_lstm_backward_pointwise<T>(LSTMBackwardParams<T>, cudaStream_t);

RNNKERNELS_INSTANTIATE_LSTM(float)
RNNKERNELS_INSTANTIATE_LSTM(double)
RNNKERNELS_INSTANTIATE_LSTM(__half)
RNNKERNELS_INSTANTIATE_LSTM(__nv_bfloat16)

}  // namespace rnnkernels
