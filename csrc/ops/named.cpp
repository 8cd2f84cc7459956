// The per-cell layer operators lstm_layer, gru_layer, rnn_layer and their backwards (schemas in
// ops.cpp), as the README documents them: the generic layer operators with the arguments spelled
// out. CompositeImplicitAutograd, like the multi-layer operators: autograd, fake tensors and
// torch.compile see the generic operators they call.
#include <torch/library.h>

#include <rnnkernels/ops.h>

#include <string>

#include "named.h"

namespace rnnkernels {

const char* elman_cell(const char* op, c10::string_view nonlinearity) {
  if (nonlinearity == "tanh") return "rnn_tanh";
  if (nonlinearity == "relu") return "rnn_relu";
  TORCH_CHECK(false, op, ": expected nonlinearity 'tanh' or 'relu', got '",
              std::string(nonlinearity.data(), nonlinearity.size()), "'");
}

namespace {

using ops::OptionalTensor;
using ops::OptionalTensors;

OptionalTensors params_of(const at::Tensor& w_ih, const at::Tensor& w_hh,
                          const OptionalTensor& b_ih, const OptionalTensor& b_hh) {
  OptionalTensors params;
  for (const OptionalTensor& param : {OptionalTensor(w_ih), OptionalTensor(w_hh), b_ih, b_hh}) {
    params.push_back(param);
  }
  return params;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer(
    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
    const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const OptionalTensor& b_ih, const OptionalTensor& b_hh, const OptionalTensor& w_hr,
    bool reverse, bool train) {
  OptionalTensors params = params_of(w_ih, w_hh, b_ih, b_hh);
  params.push_back(w_hr);
  auto [output, finals, reserve] =
      ops::layer("lstm", input, batch_sizes, {h0, c0}, params, {}, reverse, train);
  return {output, finals[0], finals[1], reserve};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
lstm_layer_backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                    const at::Tensor& grad_c_n, const at::Tensor& input,
                    const at::Tensor& batch_sizes, const at::Tensor& h0, const at::Tensor& c0,
                    const at::Tensor& w_ih, const at::Tensor& w_hh, const OptionalTensor& b_ih,
                    const OptionalTensor& b_hh, const OptionalTensor& w_hr,
                    const at::Tensor& output, const at::Tensor& reserve, bool reverse) {
  OptionalTensors params = params_of(w_ih, w_hh, b_ih, b_hh);
  params.push_back(w_hr);
  auto [grad_input, grad_states, grad_params] =
      ops::layer_backward("lstm", grad_output, {grad_h_n, grad_c_n}, input, batch_sizes,
                          {h0, c0}, params, {}, output, reserve, reverse);
  return {grad_input,     grad_states[0], grad_states[1], grad_params[0],
          grad_params[1], grad_params[2], grad_params[3], grad_params[4]};
}

// GRU and the Elman RNN: one state and the four common params; the Elman cell keeps no reserve.
std::tuple<at::Tensor, at::Tensor, at::Tensor> single_state_layer(
    const char* cell, const at::Tensor& input, const at::Tensor& batch_sizes,
    const at::Tensor& h0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const OptionalTensor& b_ih, const OptionalTensor& b_hh, bool reverse, bool train) {
  auto [output, finals, reserve] = ops::layer(
      cell, input, batch_sizes, {h0}, params_of(w_ih, w_hh, b_ih, b_hh), {}, reverse, train);
  return {output, finals[0], reserve};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
single_state_layer_backward(const char* cell, const at::Tensor& grad_output,
                            const at::Tensor& grad_h_n, const at::Tensor& input,
                            const at::Tensor& batch_sizes, const at::Tensor& h0,
                            const at::Tensor& w_ih, const at::Tensor& w_hh,
                            const OptionalTensor& b_ih, const OptionalTensor& b_hh,
                            const at::Tensor& output, const at::Tensor& reserve, bool reverse) {
  auto [grad_input, grad_states, grad_params] = ops::layer_backward(
      cell, grad_output, {grad_h_n}, input, batch_sizes, {h0}, params_of(w_ih, w_hh, b_ih, b_hh),
      {}, output, reserve, reverse);
  return {grad_input,     grad_states[0], grad_params[0],
          grad_params[1], grad_params[2], grad_params[3]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_layer(
    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const OptionalTensor& b_ih,
    const OptionalTensor& b_hh, bool reverse, bool train) {
  return single_state_layer("gru", input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, reverse,
                            train);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gru_layer_backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                   const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
                   const at::Tensor& w_ih, const at::Tensor& w_hh, const OptionalTensor& b_ih,
                   const OptionalTensor& b_hh, const at::Tensor& output,
                   const at::Tensor& reserve, bool reverse) {
  return single_state_layer_backward("gru", grad_output, grad_h_n, input, batch_sizes, h0, w_ih,
                                     w_hh, b_ih, b_hh, output, reserve, reverse);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rnn_layer(
    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const OptionalTensor& b_ih,
    const OptionalTensor& b_hh, c10::string_view nonlinearity, bool reverse, bool train) {
  return single_state_layer(elman_cell("rnn_layer", nonlinearity), input, batch_sizes, h0, w_ih,
                            w_hh, b_ih, b_hh, reverse, train);
}

// The Elman cell's backward reads its output, no reserve: it gets none.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
rnn_layer_backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                   const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
                   const at::Tensor& w_ih, const at::Tensor& w_hh, const OptionalTensor& b_ih,
                   const OptionalTensor& b_hh, c10::string_view nonlinearity,
                   const at::Tensor& output, bool reverse) {
  return single_state_layer_backward(elman_cell("rnn_layer_backward", nonlinearity), grad_output,
                                     grad_h_n, input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh,
                                     output, at::Tensor(), reverse);
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkernels, CompositeImplicitAutograd, m) {
  m.impl("lstm_layer", &lstm_layer);
  m.impl("lstm_layer_backward", &lstm_layer_backward);
  m.impl("gru_layer", &gru_layer);
  m.impl("gru_layer_backward", &gru_layer_backward);
  m.impl("rnn_layer", &rnn_layer);
  m.impl("rnn_layer_backward", &rnn_layer_backward);
}

}  // namespace rnnkernels
