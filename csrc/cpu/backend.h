// CPU backend of csrc/layers.h: the fused pointwise step of every cell, as loops over the rows
// of a step (parallel over rows with at::parallel_for) and over the hidden units (vectorised
// with at::vec for float and double), calling the cell math of csrc/kernels/cells.h.
#pragma once

#include "../kernels/params.h"

namespace rnnkernels {

struct CPUBackend {
  template <typename T> static void lstm_forward(const LSTMForwardParams<T>& p);
  template <typename T> static void lstm_backward(const LSTMBackwardParams<T>& p);
  template <typename T> static void gru_forward(const GRUForwardParams<T>& p);
  template <typename T> static void gru_backward(const GRUBackwardParams<T>& p);
  template <typename T, bool Relu> static void rnn_forward(const RNNForwardParams<T>& p);
  template <typename T, bool Relu> static void rnn_backward(const RNNBackwardParams<T>& p);
};

}  // namespace rnnkernels
