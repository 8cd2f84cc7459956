// The multi-layer operators: rnnkernels::stacked for any cell, and lstm, gru and rnn as torch.nn
// shapes them (schemas in ops.cpp): the layer loop of torch.nn's LSTM/GRU/RNN over the layer
// operator, one call per layer and direction, with dropout between layers.
// CompositeImplicitAutograd: autograd, fake tensors and torch.compile see the layer operators
// they call, so this needs no backward, fake or device kernel of its own; it exists so that a
// module's call crosses from Python into C++ once, not once per layer.
//
// Input: [T, B, I] ([B, T, I] if batch_first), or packed rows [N, I] with batch_sizes [T].
// States: [L*D, B, *], layer-major. Weights: torch.nn's _flat_weights, per layer and direction
// w_ih, w_hh[, b_ih, b_hh][, the cell's own, e.g. w_hr]. Output: [T, B, D*P] ([B, T, D*P] if
// batch_first; [N, D*P] when packed).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include <rnnkernels/ops.h>

#include "../kernels/cell_list.h"
#include "../layer/layer_common.h"
#include "layer_kernels.h"
#include "named.h"

namespace rnnkernels {
namespace {

using Tensors = std::vector<at::Tensor>;

struct Stack {
  const char* op;  // what messages name: the operator ("lstm"), or the cell for stacked
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

// Runs `cell` over layers and directions; `states` are [L*D, B, *] each.
std::pair<at::Tensor, Tensors> run(const Stack& stack, c10::string_view cell, at::Tensor input,
                                   const OptionalTensor& packed_batch_sizes, Tensors states,
                                   at::TensorList weights, at::ArrayRef<double> scalars,
                                   bool has_biases) {
  const int64_t directions = stack.directions();
  TORCH_CHECK(stack.num_layers >= 1, stack.op, ": expected num_layers >= 1, got ",
              stack.num_layers);
  // Per layer and direction: w_ih, w_hh, the biases, then as many of the cell's own params as
  // came (LSTM's w_hr is there with proj_size only); the layer operator gets None for the rest,
  // and for an own param that came empty (Tensor[] holds no None: so a later one can come).
  int64_t own = 0;
  visit_cell<Cells>(cell, [&](auto tag) {
    own = static_cast<int64_t>(cell_signature<typename decltype(tag)::type>().params.size());
  });
  const int64_t layers = stack.num_layers * directions;
  const int64_t common = 2 + (has_biases ? 2 : 0);
  const int64_t count = static_cast<int64_t>(weights.size());
  const int64_t per_layer = count % layers == 0 ? count / layers : -1;
  TORCH_CHECK(per_layer >= common && per_layer <= common + own, stack.op, ": expected ",
              layers * common, " weights (", common, " per layer and direction), got ", count);
  const bool packed = packed_batch_sizes.has_value();
  at::Tensor batch_sizes;
  if (packed) {
    batch_sizes = *packed_batch_sizes;
  } else {
    TORCH_CHECK(input.dim() == 3, stack.op,
                ": expected input to be 3-D (sequence, batch, features) without batch_sizes, got ",
                input.dim(), "-D");
    if (stack.batch_first) input = input.transpose(0, 1);
    const c10::SymInt steps = input.sym_size(0), batch = input.sym_size(1);
    TORCH_CHECK(steps != 0, "Expected sequence length to be larger than 0 in RNN");
    if (batch == 0) return empty_batch(stack, input, states, weights);
    batch_sizes = at::full_symint({steps}, c10::Scalar(batch), at::kLong);
  }

  // The layer operator takes packed rows or the padded [T, B, I] as they are, and one layer's
  // states [1, B, *] whole, so that a single layer records no view for autograd to walk.
  const bool train = needs_grad(input, states, weights);
  for (at::Tensor& s : states) s = s.contiguous();
  std::vector<Tensors> finals(states.size());
  at::Tensor layer_input = input.contiguous();
  for (int64_t l = 0; l < stack.num_layers; ++l) {
    Tensors outputs;
    for (int64_t d = 0; d < directions; ++d) {
      const int64_t index = l * directions + d;
      const auto weight = [&](int64_t i) { return weights[index * per_layer + i].contiguous(); };
      c10::List<OptionalTensor> params;
      params.push_back(weight(0));
      params.push_back(weight(1));
      params.push_back(has_biases ? OptionalTensor(weight(2)) : std::nullopt);
      params.push_back(has_biases ? OptionalTensor(weight(3)) : std::nullopt);
      for (int64_t i = common; i < common + own; ++i) {
        const bool present =
            i < per_layer && TORCH_GUARD_OR_TRUE(weights[index * per_layer + i].sym_numel() != 0);
        params.push_back(present ? OptionalTensor(weight(i)) : std::nullopt);
      }
      Tensors layer_states;
      for (const at::Tensor& s : states) layer_states.push_back(layers == 1 ? s : s[index]);
      auto [out, new_states, reserve] = ops::layer(cell, layer_input, batch_sizes, layer_states,
                                                   params, scalars, d == 1, train);
      outputs.push_back(std::move(out));
      for (size_t i = 0; i < new_states.size(); ++i) finals[i].push_back(std::move(new_states[i]));
    }
    layer_input = directions == 1 ? outputs[0] : at::cat(outputs, -1);
    // As torch.nn: any nonzero p is handed to at::dropout, which rejects one outside [0, 1].
    if (stack.dropout != 0 && stack.train && l + 1 < stack.num_layers) {
      layer_input = at::dropout(layer_input, stack.dropout, /*train=*/true);
    }
  }

  Tensors stacked;
  for (const Tensors& f : finals) stacked.push_back(layers == 1 ? f[0] : at::stack(f));
  at::Tensor output = layer_input;
  if (!packed && stack.batch_first) output = output.transpose(0, 1);
  return {output, stacked};
}

std::tuple<at::Tensor, std::vector<at::Tensor>> stacked(
    c10::string_view cell, const at::Tensor& input, const OptionalTensor& batch_sizes,
    at::TensorList states, at::TensorList weights, at::ArrayRef<double> scalars, bool has_biases,
    int64_t num_layers, double dropout, bool train, bool bidirectional, bool batch_first) {
  const std::string name(cell.data(), cell.size());
  const Stack stack{name.c_str(), num_layers, dropout, train, bidirectional, batch_first};
  return run(stack, cell, input, batch_sizes, states.vec(), weights, scalars, has_biases);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm(
    const at::Tensor& input, const OptionalTensor& batch_sizes, const at::Tensor& h0,
    const at::Tensor& c0, at::TensorList weights, bool has_biases, int64_t num_layers,
    double dropout, bool train, bool bidirectional, bool batch_first) {
  const Stack stack{"lstm", num_layers, dropout, train, bidirectional, batch_first};
  auto [output, finals] = run(stack, "lstm", input, batch_sizes, {h0, c0}, weights, {}, has_biases);
  return {output, finals[0], finals[1]};
}

std::tuple<at::Tensor, at::Tensor> gru(const at::Tensor& input, const OptionalTensor& batch_sizes,
                                       const at::Tensor& h0, at::TensorList weights,
                                       bool has_biases, int64_t num_layers, double dropout,
                                       bool train, bool bidirectional, bool batch_first) {
  const Stack stack{"gru", num_layers, dropout, train, bidirectional, batch_first};
  auto [output, finals] = run(stack, "gru", input, batch_sizes, {h0}, weights, {}, has_biases);
  return {output, finals[0]};
}

std::tuple<at::Tensor, at::Tensor> rnn(const at::Tensor& input, const OptionalTensor& batch_sizes,
                                       const at::Tensor& h0, at::TensorList weights,
                                       c10::string_view nonlinearity, bool has_biases,
                                       int64_t num_layers, double dropout, bool train,
                                       bool bidirectional, bool batch_first) {
  const Stack stack{"rnn", num_layers, dropout, train, bidirectional, batch_first};
  auto [output, finals] = run(stack, elman_cell("rnn", nonlinearity), input, batch_sizes, {h0},
                              weights, {}, has_biases);
  return {output, finals[0]};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkernels, CompositeImplicitAutograd, m) {
  m.impl("stacked", &stacked);
  m.impl("lstm", &lstm);
  m.impl("gru", &gru);
  m.impl("rnn", &rnn);
}

}  // namespace rnnkernels
