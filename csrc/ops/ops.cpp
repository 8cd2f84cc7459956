// The operator schemas, nothing else. Kernels: csrc/ops/layer_kernels.h, registered by
// csrc/cpu/layers_cpu.cpp (CPU) and csrc/cuda/layers_cuda.cpp (CUDA); autograd:
// csrc/ops/autograd.cpp; fake kernels: rnnkernels/_ops.py; the per-cell forms:
// csrc/ops/named.cpp; the multi-layer operators: csrc/ops/stacked.cpp; C++ signatures:
// include/rnnkernels/ops.h.
//
// The generic operators take the cell by name (csrc/kernels/cell_list.h) and run one direction
// of one layer over time-major packed rows:
//   input [N, I] with batch_sizes [T] (int64, CPU, non-increasing, summing to N), or a padded
//   [T, B, I] (batch_sizes then T entries of B; the output is [T, B, *]);
//   states: the initial states in the cell's order, h0 [B, P] then c0 [B, H] ..., each also as
//   [1, B, *] (the finals then too; csrc/ops/layer_kernels.h, Layout);
//   params: w_ih [G*H, I], w_hh [G*H, P], b_ih and b_hh [G*H] (None where absent), then the
//   cell's own (LSTM: w_hr [P, H]); scalars: the cell's (lstm_ext's clip and zoneout
//   probabilities, gru_ext's zoneout probability; none for the other cells);
//   G = 4 (LSTM), 3 (GRU), 1 (RNN); P = proj_size with w_hr, else H; B = batch_sizes[0].
// `reserve` holds what the backward needs beyond the output ([N, R*H]; empty when train=False;
// [0] for a cell that needs nothing). A backward returns an empty tensor as the gradient of an
// absent param.
//
// The per-cell layer operators (lstm_layer, gru_layer, rnn_layer and their backwards) are the same
// with the arguments spelled out, as the README documents them. The multi-layer operators
// (stacked, and per cell lstm, gru and rnn) run torch.nn's LSTM/GRU/RNN over the layer operator:
// input [T, B, I] ([B, T, I] if batch_first) or packed rows with batch_sizes, states [L*D, B, *],
// weights as torch.nn's _flat_weights; `train` is torch.nn's `training` (dropout between layers).
#include <torch/library.h>

TORCH_LIBRARY(rnnkernels, m) {
  m.def(
      "layer(str cell, Tensor input, Tensor batch_sizes, Tensor[] states, Tensor?[] params, "
      "float[] scalars, bool reverse, bool train) "
      "-> (Tensor output, Tensor[] finals, Tensor reserve)");
  m.def(
      "layer_backward(str cell, Tensor grad_output, Tensor[] grad_finals, Tensor input, "
      "Tensor batch_sizes, Tensor[] states, Tensor?[] params, float[] scalars, Tensor output, "
      "Tensor reserve, bool reverse) "
      "-> (Tensor grad_input, Tensor[] grad_states, Tensor[] grad_params)");
  m.def(
      "stacked(str cell, Tensor input, Tensor? batch_sizes, Tensor[] states, Tensor[] weights, "
      "float[] scalars, bool has_biases, int num_layers, float dropout, bool train, "
      "bool bidirectional, bool batch_first) -> (Tensor output, Tensor[] finals)");
  m.def(
      "lstm_layer(Tensor input, Tensor batch_sizes, Tensor h0, Tensor c0, Tensor w_ih, "
      "Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, bool reverse, bool train) "
      "-> (Tensor output, Tensor h_n, Tensor c_n, Tensor reserve)");
  m.def(
      "lstm_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, Tensor input, "
      "Tensor batch_sizes, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
      "Tensor? b_hh, Tensor? w_hr, Tensor output, Tensor reserve, bool reverse) "
      "-> (Tensor grad_input, Tensor grad_h0, Tensor grad_c0, Tensor grad_w_ih, "
      "Tensor grad_w_hh, Tensor grad_b_ih, Tensor grad_b_hh, Tensor grad_w_hr)");
  m.def(
      "gru_layer(Tensor input, Tensor batch_sizes, Tensor h0, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh, bool reverse, bool train) "
      "-> (Tensor output, Tensor h_n, Tensor reserve)");
  m.def(
      "gru_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor input, "
      "Tensor batch_sizes, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
      "Tensor output, Tensor reserve, bool reverse) "
      "-> (Tensor grad_input, Tensor grad_h0, Tensor grad_w_ih, Tensor grad_w_hh, "
      "Tensor grad_b_ih, Tensor grad_b_hh)");
  m.def(
      "rnn_layer(Tensor input, Tensor batch_sizes, Tensor h0, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh, str nonlinearity, bool reverse, bool train) "
      "-> (Tensor output, Tensor h_n, Tensor reserve)");
  m.def(
      "rnn_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor input, "
      "Tensor batch_sizes, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
      "str nonlinearity, Tensor output, bool reverse) "
      "-> (Tensor grad_input, Tensor grad_h0, Tensor grad_w_ih, Tensor grad_w_hh, "
      "Tensor grad_b_ih, Tensor grad_b_hh)");
  m.def(
      "lstm(Tensor input, Tensor? batch_sizes, Tensor h0, Tensor c0, Tensor[] weights, "
      "bool has_biases, int num_layers, float dropout, bool train, bool bidirectional, "
      "bool batch_first) -> (Tensor output, Tensor h_n, Tensor c_n)");
  m.def(
      "gru(Tensor input, Tensor? batch_sizes, Tensor h0, Tensor[] weights, bool has_biases, "
      "int num_layers, float dropout, bool train, bool bidirectional, bool batch_first) "
      "-> (Tensor output, Tensor h_n)");
  m.def(
      "rnn(Tensor input, Tensor? batch_sizes, Tensor h0, Tensor[] weights, str nonlinearity, "
      "bool has_biases, int num_layers, float dropout, bool train, bool bidirectional, "
      "bool batch_first) -> (Tensor output, Tensor h_n)");
}
