// The rnnkernels operators for C++ (LibTorch) users and for the library itself: one typed
// function per operator, calling it through the dispatcher, so that autograd (double backward
// included) and the CPU or CUDA kernels apply as from Python. Link librnnkernels (CMakeLists.txt)
// so that the operators are registered. Schemas and shapes: csrc/ops/ops.cpp; docs/DESIGN.md.
//
// The generic operators take the cell by name: "lstm", "gru", "rnn_tanh", "rnn_relu" (the list
// of csrc/kernels/cell_list.h). states are the initial states in the cell's order (h0, then c0);
// params are w_ih, w_hh, b_ih, b_hh, then the cell's own (LSTM: w_hr), absent ones as nullopt;
// scalars the cell's scalars (none for these cells). The per-cell layer operators (lstm_layer...)
// and the multi-layer ones (lstm, gru, rnn) are torch.nn-shaped forms of the same.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>
#include <tuple>
#include <vector>

namespace rnnkernels {
namespace ops {

using OptionalTensor = std::optional<at::Tensor>;
using OptionalTensors = c10::List<std::optional<at::Tensor>>;

namespace detail {
// The operator's dispatcher handle, typed by the calling function's own signature.
template <typename Signature>
c10::TypedOperatorHandle<Signature> find(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}
}  // namespace detail

#define RNNKERNELS_CALL(function, name, ...)                                     \
  static const auto handle = detail::find<decltype(function)>("rnnkernels::" name); \
  return handle.call(__VA_ARGS__)

// One direction of one layer over packed rows (input [N, I], batch_sizes [T]): the output
// [N, P], the final states, and what the backward needs (reserve; empty without train).
inline std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor> layer(
    c10::string_view cell, const at::Tensor& input, const at::Tensor& batch_sizes,
    at::TensorList states, const OptionalTensors& params, at::ArrayRef<double> scalars,
    bool reverse, bool train) {
  RNNKERNELS_CALL(layer, "layer", cell, input, batch_sizes, states, params, scalars, reverse,
                  train);
}

// The gradients of layer's input, states and params (an empty tensor for an absent param) from
// those of its output and final states.
inline std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> layer_backward(
    c10::string_view cell, const at::Tensor& grad_output, at::TensorList grad_finals,
    const at::Tensor& input, const at::Tensor& batch_sizes, at::TensorList states,
    const OptionalTensors& params, at::ArrayRef<double> scalars, const at::Tensor& output,
    const at::Tensor& reserve, bool reverse) {
  RNNKERNELS_CALL(layer_backward, "layer_backward", cell, grad_output, grad_finals, input,
                  batch_sizes, states, params, scalars, output, reserve, reverse);
}

// Layers stacked as torch.nn stacks them: input [T, B, I] ([B, T, I] if batch_first), or packed
// rows with batch_sizes; states [L*D, B, *]; weights per layer and direction in torch.nn's
// _flat_weights order (w_ih, w_hh[, b_ih, b_hh][, the cell's own, an empty tensor standing for
// an absent one]). Returns the output and the final states.
inline std::tuple<at::Tensor, std::vector<at::Tensor>> stacked(
    c10::string_view cell, const at::Tensor& input, const OptionalTensor& batch_sizes,
    at::TensorList states, at::TensorList weights, at::ArrayRef<double> scalars, bool has_biases,
    int64_t num_layers, double dropout, bool train, bool bidirectional, bool batch_first) {
  RNNKERNELS_CALL(stacked, "stacked", cell, input, batch_sizes, states, weights, scalars,
                  has_biases, num_layers, dropout, train, bidirectional, batch_first);
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer(
    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
    const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const OptionalTensor& b_ih, const OptionalTensor& b_hh, const OptionalTensor& w_hr,
    bool reverse, bool train) {
  RNNKERNELS_CALL(lstm_layer, "lstm_layer", input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh,
                  w_hr, reverse, train);
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                  at::Tensor, at::Tensor>
lstm_layer_backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                    const at::Tensor& grad_c_n, const at::Tensor& input,
                    const at::Tensor& batch_sizes, const at::Tensor& h0, const at::Tensor& c0,
                    const at::Tensor& w_ih, const at::Tensor& w_hh, const OptionalTensor& b_ih,
                    const OptionalTensor& b_hh, const OptionalTensor& w_hr,
                    const at::Tensor& output, const at::Tensor& reserve, bool reverse) {
  RNNKERNELS_CALL(lstm_layer_backward, "lstm_layer_backward", grad_output, grad_h_n, grad_c_n,
                  input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, output, reserve,
                  reverse);
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_layer(
    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const OptionalTensor& b_ih,
    const OptionalTensor& b_hh, bool reverse, bool train) {
  RNNKERNELS_CALL(gru_layer, "gru_layer", input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh,
                  reverse, train);
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gru_layer_backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                   const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
                   const at::Tensor& w_ih, const at::Tensor& w_hh, const OptionalTensor& b_ih,
                   const OptionalTensor& b_hh, const at::Tensor& output,
                   const at::Tensor& reserve, bool reverse) {
  RNNKERNELS_CALL(gru_layer_backward, "gru_layer_backward", grad_output, grad_h_n, input,
                  batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, output, reserve, reverse);
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> rnn_layer(
    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const OptionalTensor& b_ih,
    const OptionalTensor& b_hh, c10::string_view nonlinearity, bool reverse, bool train) {
  RNNKERNELS_CALL(rnn_layer, "rnn_layer", input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh,
                  nonlinearity, reverse, train);
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
rnn_layer_backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                   const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
                   const at::Tensor& w_ih, const at::Tensor& w_hh, const OptionalTensor& b_ih,
                   const OptionalTensor& b_hh, c10::string_view nonlinearity,
                   const at::Tensor& output, bool reverse) {
  RNNKERNELS_CALL(rnn_layer_backward, "rnn_layer_backward", grad_output, grad_h_n, input,
                  batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity, output, reverse);
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm(
    const at::Tensor& input, const OptionalTensor& batch_sizes, const at::Tensor& h0,
    const at::Tensor& c0, at::TensorList weights, bool has_biases, int64_t num_layers,
    double dropout, bool train, bool bidirectional, bool batch_first) {
  RNNKERNELS_CALL(lstm, "lstm", input, batch_sizes, h0, c0, weights, has_biases, num_layers,
                  dropout, train, bidirectional, batch_first);
}

inline std::tuple<at::Tensor, at::Tensor> gru(const at::Tensor& input,
                                               const OptionalTensor& batch_sizes,
                                               const at::Tensor& h0, at::TensorList weights,
                                               bool has_biases, int64_t num_layers,
                                               double dropout, bool train, bool bidirectional,
                                               bool batch_first) {
  RNNKERNELS_CALL(gru, "gru", input, batch_sizes, h0, weights, has_biases, num_layers, dropout,
                  train, bidirectional, batch_first);
}

inline std::tuple<at::Tensor, at::Tensor> rnn(const at::Tensor& input,
                                               const OptionalTensor& batch_sizes,
                                               const at::Tensor& h0, at::TensorList weights,
                                               c10::string_view nonlinearity, bool has_biases,
                                               int64_t num_layers, double dropout, bool train,
                                               bool bidirectional, bool batch_first) {
  RNNKERNELS_CALL(rnn, "rnn", input, batch_sizes, h0, weights, nonlinearity, has_biases,
                  num_layers, dropout, train, bidirectional, batch_first);
}

#undef RNNKERNELS_CALL

}  // namespace ops
}  // namespace rnnkernels
