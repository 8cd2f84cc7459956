// Autograd kernels of the layer operators (see autograd.h): each runs the operator below
// autograd, saves what its backward operator needs, and calls that operator in the backward.
#include "autograd.h"

#include <torch/autograd.h>
#include <torch/library.h>

#include <initializer_list>
#include <tuple>
#include <utility>

#include "layer_common.h"
#include "op_handles.h"

namespace rnnkernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptionalTensor = std::optional<at::Tensor>;

ReferenceBackward& reference_backward() {
  static ReferenceBackward hook;
  return hook;
}

OptionalTensor optional(const at::Tensor& t) {
  return t.defined() ? OptionalTensor(t) : std::nullopt;
}

at::Tensor tensor_or_undefined(const OptionalTensor& t) { return t.value_or(at::Tensor()); }

// The gradient that came for an output, or zeros where none did (set_materialize_grads(false):
// the reserve never gets one allocated).
at::Tensor grad_or_zeros(const at::Tensor& grad, const at::Tensor& output) {
  return grad.defined() ? grad.contiguous() : at::zeros_like(output);
}

// What the backward keeps of the layer's output: a copy, so that the caller may change the output
// in place before the backward (masking it, say), as torch.nn's GRU and RNN allow (and its LSTM
// does for packed input). The copy takes the output's place among the saved tensors, so the
// saved bytes stay the same.
at::Tensor saved_output(const at::Tensor& output) { return output.clone(); }

// Autograd's bookkeeping fails on an undefined tensor before the kernel's checks would name it.
void check_required(const char* op,
                    std::initializer_list<std::pair<const char*, const at::Tensor*>> tensors) {
  for (const auto& [name, tensor] : tensors) check_defined(op, name, *tensor);
}

template <typename Tuple>
variable_list to_list(Tuple&& tuple) {
  return std::apply([](auto&&... t) { return variable_list{std::forward<decltype(t)>(t)...}; },
                    std::forward<Tuple>(tuple));
}

// The gradients of the differentiable inputs from the backward operator's results: none for an
// absent optional input (the operator returns an empty tensor there).
variable_list grads_of(const std::vector<at::Tensor>& inputs, const variable_list& results) {
  variable_list grads(results.size());
  for (size_t i = 0; i < results.size(); ++i) {
    if (inputs[i].defined()) grads[i] = results[i];
  }
  return grads;
}

// With create_graph=True: the reference's gradients, differentiable.
variable_list differentiable_grads(const std::string& op, const std::vector<at::Tensor>& inputs,
                                   const variable_list& grads, bool reverse,
                                   const std::string& nonlinearity = "") {
  const ReferenceBackward& hook = reference_backward();
  TORCH_CHECK(hook, op,
              ": a backward with create_graph=True computes differentiable gradients through "
              "rnnkernels' Python reference (rnnkernels/reference.py); import the rnnkernels "
              "Python package to use it");
  std::vector<OptionalTensor> optional_inputs;
  for (const at::Tensor& t : inputs) optional_inputs.push_back(optional(t));
  variable_list result;
  for (const OptionalTensor& g : hook(op, optional_inputs, grads, reverse, nonlinearity)) {
    result.push_back(tensor_or_undefined(g));
  }
  return result;
}

// The saved inputs without batch_sizes (the second), in the order of the gradients.
std::vector<at::Tensor> differentiable(const variable_list& inputs) {
  std::vector<at::Tensor> result{inputs[0]};
  result.insert(result.end(), inputs.begin() + 2, inputs.end());
  return result;
}

struct LSTMLayer : torch::autograd::Function<LSTMLayer> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input,
                               const at::Tensor& batch_sizes, const at::Tensor& h0,
                               const at::Tensor& c0, const at::Tensor& w_ih,
                               const at::Tensor& w_hh, const OptionalTensor& b_ih,
                               const OptionalTensor& b_hh, const OptionalTensor& w_hr,
                               bool reverse, bool train) {
    const auto& op = ops::lstm_layer();
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    variable_list out =
        to_list(op.call(input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, train));
    ctx->mark_non_differentiable({out[3]});
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({input, batch_sizes, h0, c0, w_ih, w_hh, tensor_or_undefined(b_ih),
                            tensor_or_undefined(b_hh), tensor_or_undefined(w_hr),
                            saved_output(out[0]), out[3]});
    ctx->saved_data["reverse"] = reverse;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto& op = ops::lstm_layer_backward();
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &batch_sizes = saved[1], &h0 = saved[2], &c0 = saved[3];
    const at::Tensor &output = saved[9], &reserve = saved[10];
    const bool reverse = ctx->saved_data["reverse"].toBool();
    const variable_list inputs(saved.begin(), saved.begin() + 9);
    const variable_list grads{grad_or_zeros(grad_outputs[0], output),
                              grad_or_zeros(grad_outputs[1], h0),
                              grad_or_zeros(grad_outputs[2], c0)};
    variable_list result = at::GradMode::is_enabled()
        ? differentiable_grads("lstm_layer", inputs, grads, reverse)
        : grads_of(differentiable(inputs),
                   to_list(op.call(grads[0], grads[1], grads[2], input, batch_sizes, h0, c0,
                                   saved[4], saved[5], optional(saved[6]), optional(saved[7]),
                                   optional(saved[8]), output, reserve, reverse)));
    // No gradient for batch_sizes, reverse and train.
    result.insert(result.begin() + 1, at::Tensor());
    result.resize(11);
    return result;
  }
};

// GRU and RNN: the same arguments but for RNN's nonlinearity, and no cell state.
template <bool IsGRU>
struct GatedOrElmanLayer : torch::autograd::Function<GatedOrElmanLayer<IsGRU>> {
  static variable_list run(AutogradContext* ctx, variable_list out, const at::Tensor& input,
                           const at::Tensor& batch_sizes, const at::Tensor& h0,
                           const at::Tensor& w_ih, const at::Tensor& w_hh,
                           const OptionalTensor& b_ih, const OptionalTensor& b_hh, bool reverse) {
    ctx->mark_non_differentiable({out[2]});
    ctx->set_materialize_grads(false);
    // RNN's backward needs no reserve (it is empty).
    ctx->save_for_backward({input, batch_sizes, h0, w_ih, w_hh, tensor_or_undefined(b_ih),
                            tensor_or_undefined(b_hh), saved_output(out[0]),
                            IsGRU ? out[2] : at::Tensor()});
    ctx->saved_data["reverse"] = reverse;
    return out;
  }

  static variable_list forward(AutogradContext* ctx, const at::Tensor& input,
                               const at::Tensor& batch_sizes, const at::Tensor& h0,
                               const at::Tensor& w_ih, const at::Tensor& w_hh,
                               const OptionalTensor& b_ih, const OptionalTensor& b_hh,
                               bool reverse, bool train) {
    const auto& op = ops::gru_layer();
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return run(ctx,
               to_list(op.call(input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, reverse, train)),
               input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, reverse);
  }

  static variable_list forward(AutogradContext* ctx, const at::Tensor& input,
                               const at::Tensor& batch_sizes, const at::Tensor& h0,
                               const at::Tensor& w_ih, const at::Tensor& w_hh,
                               const OptionalTensor& b_ih, const OptionalTensor& b_hh,
                               c10::string_view nonlinearity, bool reverse, bool train) {
    const auto& op = ops::rnn_layer();
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    variable_list out = to_list(
        op.call(input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity, reverse, train));
    ctx->saved_data["nonlinearity"] = std::string(nonlinearity);
    return run(ctx, std::move(out), input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, reverse);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &batch_sizes = saved[1], &h0 = saved[2];
    const at::Tensor &w_ih = saved[3], &w_hh = saved[4], &output = saved[7];
    const OptionalTensor b_ih = optional(saved[5]), b_hh = optional(saved[6]);
    const bool reverse = ctx->saved_data["reverse"].toBool();
    const std::string nonlinearity =
        IsGRU ? std::string() : ctx->saved_data["nonlinearity"].toStringRef();
    const variable_list inputs(saved.begin(), saved.begin() + 7);
    const variable_list grads{grad_or_zeros(grad_outputs[0], output),
                              grad_or_zeros(grad_outputs[1], h0)};
    variable_list result;
    if (at::GradMode::is_enabled()) {
      result = differentiable_grads(IsGRU ? "gru_layer" : "rnn_layer", inputs, grads, reverse,
                                    nonlinearity);
    } else if constexpr (IsGRU) {
      const auto& op = ops::gru_layer_backward();
      result = grads_of(differentiable(inputs),
                        to_list(op.call(grads[0], grads[1], input, batch_sizes, h0, w_ih, w_hh,
                                        b_ih, b_hh, output, saved[8], reverse)));
    } else {
      const auto& op = ops::rnn_layer_backward();
      result = grads_of(differentiable(inputs),
                        to_list(op.call(grads[0], grads[1], input, batch_sizes, h0, w_ih, w_hh,
                                        b_ih, b_hh, nonlinearity, output, reverse)));
    }
    // No gradient for batch_sizes, (nonlinearity,) reverse and train.
    result.insert(result.begin() + 1, at::Tensor());
    result.resize(IsGRU ? 9 : 10);
    return result;
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_autograd(
    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
    const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const OptionalTensor& b_ih, const OptionalTensor& b_hh, const OptionalTensor& w_hr,
    bool reverse, bool train) {
  check_required("lstm_layer", {{"input", &input}, {"batch_sizes", &batch_sizes}, {"h0", &h0},
                                {"c0", &c0}, {"w_ih", &w_ih}, {"w_hh", &w_hh}});
  const variable_list out =
      LSTMLayer::apply(input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, train);
  return {out[0], out[1], out[2], out[3]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_layer_autograd(
    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const OptionalTensor& b_ih,
    const OptionalTensor& b_hh, bool reverse, bool train) {
  check_required("gru_layer", {{"input", &input}, {"batch_sizes", &batch_sizes}, {"h0", &h0},
                               {"w_ih", &w_ih}, {"w_hh", &w_hh}});
  const variable_list out = GatedOrElmanLayer<true>::apply(input, batch_sizes, h0, w_ih, w_hh,
                                                           b_ih, b_hh, reverse, train);
  return {out[0], out[1], out[2]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> rnn_layer_autograd(
    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const OptionalTensor& b_ih,
    const OptionalTensor& b_hh, c10::string_view nonlinearity, bool reverse, bool train) {
  check_required("rnn_layer", {{"input", &input}, {"batch_sizes", &batch_sizes}, {"h0", &h0},
                               {"w_ih", &w_ih}, {"w_hh", &w_hh}});
  const variable_list out = GatedOrElmanLayer<false>::apply(
      input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity, reverse, train);
  return {out[0], out[1], out[2]};
}

}  // namespace

void set_reference_backward(ReferenceBackward hook) { reference_backward() = std::move(hook); }

TORCH_LIBRARY_IMPL(rnnkernels, Autograd, m) {
  m.impl("lstm_layer", &lstm_layer_autograd);
  m.impl("gru_layer", &gru_layer_autograd);
  m.impl("rnn_layer", &rnn_layer_autograd);
}

}  // namespace rnnkernels
