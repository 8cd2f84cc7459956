// The multi-layer operators rnnkernels::lstm, gru and rnn (schemas in ops.cpp): the layer loop
// of torch.nn's LSTM/GRU/RNN over the layer operators, one per layer and direction, with
// dropout between layers. CompositeImplicitAutograd: autograd, fake tensors and torch.compile see
// the layer operators they call, so this needs no backward, fake or device kernel of its own; it
// exists so that a module's call crosses from Python into C++ once, not once per layer.
//
// Input: [T, B, I] ([B, T, I] if batch_first), or packed rows [N, I] with batch_sizes [T].
// States: [L*D, B, *], layer-major. Weights: torch.nn's _flat_weights, per layer and direction
// w_ih, w_hh[, b_ih, b_hh][, w_hr]. Output: [T, B, D*P] ([B, T, D*P] if batch_first; [N, D*P]
// when packed).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "op_handles.h"

namespace rnnkernels {
namespace {

using OptionalTensor = std::optional<at::Tensor>;
using Tensors = std::vector<at::Tensor>;

struct Stack {
  const char* op;
  int64_t num_layers;
  double dropout;
  bool train;  // torch.nn's `training`: whether dropout applies
  bool bidirectional;
  bool batch_first;

  int64_t directions() const { return bidirectional ? 2 : 1; }
};

bool needs_grad(const at::Tensor& input, const Tensors& states, at::TensorList weights) {
  if (!at::GradMode::is_enabled()) return false;
  if (input.requires_grad()) return true;
  for (const at::Tensor& t : states) {
    if (t.requires_grad()) return true;
  }
  for (const at::Tensor& t : weights) {
    if (t.requires_grad()) return true;
  }
  return false;
}

// A batch of no sequences: empty results of torch.nn's shapes (the layer operators need rows),
// connected to every input by a zero that depends on them, as torch.nn's results are.
std::pair<at::Tensor, Tensors> empty_batch(const Stack& stack, const at::Tensor& input,
                                           const Tensors& states, at::TensorList weights) {
  at::Tensor link = input.sum();
  for (const at::Tensor& t : states) link = link + t.sum();
  for (const at::Tensor& t : weights) link = link + t.sum();
  link = link * 0;
  at::Tensor output =
      input.new_zeros_symint({input.sym_size(0), 0, states[0].sym_size(-1) * stack.directions()}) +
      link;
  if (stack.batch_first) output = output.transpose(0, 1);
  Tensors finals;
  for (const at::Tensor& s : states) finals.push_back(s + link);
  return {output, finals};
}

// Runs layer(rows, batch_sizes, states, params, reverse, needs_grad) -> (out, final states) over
// layers and directions; `states` are [L*D, B, *] each.
template <typename Layer>
std::pair<at::Tensor, Tensors> run(const Stack& stack, const Layer& layer, at::Tensor input,
                                   const OptionalTensor& packed_batch_sizes, Tensors states,
                                   at::TensorList weights, int64_t per_layer) {
  const int64_t directions = stack.directions();
  TORCH_CHECK(stack.num_layers >= 1, stack.op, ": expected num_layers >= 1, got ",
              stack.num_layers);
  TORCH_CHECK(static_cast<int64_t>(weights.size()) == stack.num_layers * directions * per_layer,
              stack.op, ": expected ", stack.num_layers * directions * per_layer,
              " weights (", per_layer, " per layer and direction), got ", weights.size());
  const bool packed = packed_batch_sizes.has_value();
  at::Tensor rows, batch_sizes;
  c10::SymInt steps, batch;
  if (packed) {
    rows = input;
    batch_sizes = *packed_batch_sizes;
  } else {
    TORCH_CHECK(input.dim() == 3, stack.op,
                ": expected input to be 3-D (sequence, batch, features) without batch_sizes, got ",
                input.dim(), "-D");
    if (stack.batch_first) input = input.transpose(0, 1);
    steps = input.sym_size(0);
    batch = input.sym_size(1);
    TORCH_CHECK(steps != 0, "Expected sequence length to be larger than 0 in RNN");
    if (batch == 0) return empty_batch(stack, input, states, weights);
    rows = input.reshape_symint({steps * batch, input.sym_size(2)});
    batch_sizes = at::full_symint({steps}, c10::Scalar(batch), at::kLong);
  }

  const bool train = needs_grad(input, states, weights);
  for (at::Tensor& s : states) s = s.contiguous();
  std::vector<Tensors> finals(states.size());
  at::Tensor layer_input = rows.contiguous();
  for (int64_t l = 0; l < stack.num_layers; ++l) {
    Tensors outputs;
    for (int64_t d = 0; d < directions; ++d) {
      const int64_t index = l * directions + d;
      Tensors params;
      for (int64_t i = 0; i < per_layer; ++i) {
        params.push_back(weights[index * per_layer + i].contiguous());
      }
      Tensors layer_states;
      for (const at::Tensor& s : states) layer_states.push_back(s[index]);
      auto [out, new_states] = layer(layer_input, batch_sizes, layer_states, params, d == 1, train);
      outputs.push_back(std::move(out));
      for (size_t i = 0; i < new_states.size(); ++i) finals[i].push_back(std::move(new_states[i]));
    }
    layer_input = directions == 1 ? outputs[0] : at::cat(outputs, 1);
    // As torch.nn: any nonzero p is handed to at::dropout, which rejects one outside [0, 1].
    if (stack.dropout != 0 && stack.train && l + 1 < stack.num_layers) {
      layer_input = at::dropout(layer_input, stack.dropout, /*train=*/true);
    }
  }

  Tensors stacked;
  for (const Tensors& f : finals) stacked.push_back(f.size() == 1 ? f[0].unsqueeze(0) : at::stack(f));
  at::Tensor output = layer_input;
  if (!packed) {
    output = output.view_symint({steps, batch, output.sym_size(1)});
    if (stack.batch_first) output = output.transpose(0, 1);
  }
  return {output, stacked};
}

// w_ih, w_hh, b_ih, b_hh, w_hr of one layer and direction.
std::tuple<at::Tensor, at::Tensor, OptionalTensor, OptionalTensor, OptionalTensor> split(
    const Tensors& params, bool has_biases, bool projected) {
  OptionalTensor b_ih, b_hh, w_hr;
  if (has_biases) {
    b_ih = params[2];
    b_hh = params[3];
  }
  if (projected) w_hr = params.back();
  return {params[0], params[1], b_ih, b_hh, w_hr};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm(
    const at::Tensor& input, const OptionalTensor& batch_sizes, const at::Tensor& h0,
    const at::Tensor& c0, at::TensorList weights, bool has_biases, int64_t num_layers,
    double dropout, bool train, bool bidirectional, bool batch_first) {
  const auto& op = ops::lstm_layer();
  const Stack stack{"lstm", num_layers, dropout, train, bidirectional, batch_first};
  // A projection (proj_size) is present when each layer and direction has a fifth weight.
  const int64_t unprojected = 2 + (has_biases ? 2 : 0);
  const bool projected =
      static_cast<int64_t>(weights.size()) == num_layers * stack.directions() * (unprojected + 1);
  auto layer = [&](const at::Tensor& rows, const at::Tensor& sizes, const Tensors& states,
                   const Tensors& params, bool reverse, bool needs_grad) {
    const auto [w_ih, w_hh, b_ih, b_hh, w_hr] = split(params, has_biases, projected);
    auto [out, h_n, c_n, reserve] =
        op.call(rows, sizes, states[0], states[1], w_ih, w_hh, b_ih, b_hh, w_hr, reverse,
                needs_grad);
    return std::pair<at::Tensor, Tensors>{out, {h_n, c_n}};
  };
  auto [output, finals] = run(stack, layer, input, batch_sizes, {h0, c0}, weights,
                              unprojected + (projected ? 1 : 0));
  return {output, finals[0], finals[1]};
}

std::tuple<at::Tensor, at::Tensor> gru(const at::Tensor& input, const OptionalTensor& batch_sizes,
                                       const at::Tensor& h0, at::TensorList weights,
                                       bool has_biases, int64_t num_layers, double dropout,
                                       bool train, bool bidirectional, bool batch_first) {
  const auto& op = ops::gru_layer();
  const Stack stack{"gru", num_layers, dropout, train, bidirectional, batch_first};
  auto layer = [&](const at::Tensor& rows, const at::Tensor& sizes, const Tensors& states,
                   const Tensors& params, bool reverse, bool needs_grad) {
    const auto [w_ih, w_hh, b_ih, b_hh, w_hr] = split(params, has_biases, false);
    auto [out, h_n, reserve] =
        op.call(rows, sizes, states[0], w_ih, w_hh, b_ih, b_hh, reverse, needs_grad);
    return std::pair<at::Tensor, Tensors>{out, {h_n}};
  };
  auto [output, finals] =
      run(stack, layer, input, batch_sizes, {h0}, weights, 2 + (has_biases ? 2 : 0));
  return {output, finals[0]};
}

std::tuple<at::Tensor, at::Tensor> rnn(const at::Tensor& input, const OptionalTensor& batch_sizes,
                                       const at::Tensor& h0, at::TensorList weights,
                                       c10::string_view nonlinearity, bool has_biases,
                                       int64_t num_layers, double dropout, bool train,
                                       bool bidirectional, bool batch_first) {
  const auto& op = ops::rnn_layer();
  const Stack stack{"rnn", num_layers, dropout, train, bidirectional, batch_first};
  auto layer = [&](const at::Tensor& rows, const at::Tensor& sizes, const Tensors& states,
                   const Tensors& params, bool reverse, bool needs_grad) {
    const auto [w_ih, w_hh, b_ih, b_hh, w_hr] = split(params, has_biases, false);
    auto [out, h_n, reserve] = op.call(rows, sizes, states[0], w_ih, w_hh, b_ih, b_hh,
                                       nonlinearity, reverse, needs_grad);
    return std::pair<at::Tensor, Tensors>{out, {h_n}};
  };
  auto [output, finals] =
      run(stack, layer, input, batch_sizes, {h0}, weights, 2 + (has_biases ? 2 : 0));
  return {output, finals[0]};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkernels, CompositeImplicitAutograd, m) {
  m.impl("lstm", &lstm);
  m.impl("gru", &gru);
  m.impl("rnn", &rnn);
}

}  // namespace rnnkernels
