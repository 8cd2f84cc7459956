// Autograd of the generic layer operator (csrc/ops/ops.cpp), registered in C++ so that a call
// costs no Python: the forward runs the operator below autograd and saves what its backward
// needs; the backward calls layer_backward, or, with create_graph=True, differentiates the layer
// recomputed in ATen operations (csrc/layer/differentiable.h), which makes double backward work
// from LibTorch as from Python. The per-cell and multi-layer operators are composites over this
// one, so it serves them all.
#include <torch/autograd.h>
#include <torch/library.h>

#include <rnnkernels/ops.h>

#include <string>
#include <utility>
#include <vector>

#include "../kernels/cell_list.h"
#include "../layer/differentiable.h"
#include "layer_kernels.h"

namespace rnnkernels {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// What the backward reads, saved and restored by name. The forward's inputs are saved as
// themselves (a create_graph backward differentiates through them); reserve is the Function's own
// output. The output is kept as a copy, so that the caller may change it in place before the
// backward (masking it, say), as torch.nn's GRU and RNN allow (and its LSTM does for packed
// input); the copy takes the output's place, so the saved bytes stay the same.
struct Saved {
  at::Tensor input, batch_sizes, output, reserve;
  std::vector<at::Tensor> states;
  std::vector<at::Tensor> params;  // every param of the schema, undefined where absent

  void save(AutogradContext* ctx) const {
    variable_list all{input, batch_sizes, output, reserve};
    all.insert(all.end(), states.begin(), states.end());
    all.insert(all.end(), params.begin(), params.end());
    ctx->save_for_backward(all);
    ctx->saved_data["states"] = static_cast<int64_t>(states.size());
  }

  static Saved restore(AutogradContext* ctx) {
    const variable_list all = ctx->get_saved_variables();
    const auto states = static_cast<size_t>(ctx->saved_data["states"].toInt());
    Saved s{all[0], all[1], all[2], all[3], {}, {}};
    s.states.assign(all.begin() + 4, all.begin() + 4 + states);
    s.params.assign(all.begin() + 4 + states, all.end());
    return s;
  }

  // The params as the schema takes them, None where absent.
  c10::List<OptionalTensor> param_list() const {
    c10::List<OptionalTensor> list;
    for (const at::Tensor& param : params) {
      list.push_back(param.defined() ? OptionalTensor(param) : std::nullopt);
    }
    return list;
  }
};

// The gradient that came for an output, or zeros where none did (set_materialize_grads(false):
// the reserve never gets one allocated).
at::Tensor grad_or_zeros(const at::Tensor& grad, const at::Tensor& output) {
  return grad.defined() ? grad.contiguous() : at::zeros_like(output);
}

// With create_graph=True: the gradients of `wrt` (those that require grad; undefined for the
// rest) through the layer recomputed in ATen operations, themselves differentiable.
variable_list differentiable_grads(c10::string_view cell, const Layout& layout,
                                   const LayerArgs& args, const variable_list& grads,
                                   const variable_list& wrt) {
  std::pair<at::Tensor, std::vector<at::Tensor>> recomputed;
  visit_cell<Cells>(cell, [&](auto tag) {
    recomputed = differentiable_layer<typename decltype(tag)::type>(args);
  });
  const std::vector<at::Tensor> finals = layout.layered(std::move(recomputed.second));
  variable_list outputs{layout.padded(recomputed.first)}, output_grads{grads[0]};
  for (size_t j = 0; j < finals.size(); ++j) {
    outputs.push_back(finals[j]);
    output_grads.push_back(grads[j + 1]);
  }
  variable_list wanted;
  for (const at::Tensor& t : wrt) {
    if (t.requires_grad()) wanted.push_back(t);
  }
  const variable_list found = torch::autograd::grad(outputs, wanted, output_grads,
                                                    /*retain_graph=*/true,
                                                    /*create_graph=*/true, /*allow_unused=*/true);
  variable_list result(wrt.size());
  for (size_t i = 0, next = 0; i < wrt.size(); ++i) {
    if (wrt[i].requires_grad()) result[i] = found[next++];
  }
  return result;
}

struct LayerFunction : torch::autograd::Function<LayerFunction> {
  // present: the params that came, as autograd's inputs; params: all of them, as the schema's.
  static variable_list forward(AutogradContext* ctx, c10::string_view cell,
                               const at::Tensor& input, const at::Tensor& batch_sizes,
                               at::TensorList states, at::TensorList present,
                               const c10::List<OptionalTensor>& params,
                               at::ArrayRef<double> scalars, bool reverse, bool train) {
    std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor> out;
    {
      const at::AutoDispatchBelowADInplaceOrView below_autograd;
      out = ops::layer(cell, input, batch_sizes, states, params, scalars, reverse, train);
    }
    auto& [output, finals, reserve] = out;
    ctx->mark_non_differentiable({reserve});
    ctx->set_materialize_grads(false);
    Saved saved{input, batch_sizes, output.clone(), reserve, states.vec(), {}};
    for (const OptionalTensor param : params) saved.params.push_back(param.value_or(at::Tensor()));
    saved.save(ctx);
    ctx->saved_data["cell"] = std::string(cell);
    if (!scalars.empty()) ctx->saved_data["scalars"] = scalars.vec();
    ctx->saved_data["reverse"] = reverse;
    variable_list result{output};
    result.insert(result.end(), finals.begin(), finals.end());
    result.push_back(reserve);
    return result;
  }

  // grad_outputs: of output, each final state, and reserve (never one).
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const Saved saved = Saved::restore(ctx);
    const std::string cell = ctx->saved_data["cell"].toStringRef();
    const std::vector<double> scalars = ctx->saved_data.count("scalars") > 0
                                            ? ctx->saved_data["scalars"].toDoubleVector()
                                            : std::vector<double>();
    const bool reverse = ctx->saved_data["reverse"].toBool();
    const c10::List<OptionalTensor> params = saved.param_list();

    variable_list grads{grad_or_zeros(grad_outputs[0], saved.output)};
    for (size_t j = 0; j < saved.states.size(); ++j) {
      grads.push_back(grad_or_zeros(grad_outputs[j + 1], saved.states[j]));
    }
    // The gradients of the differentiable inputs: input, the states, the present params.
    variable_list wrt{saved.input};
    wrt.insert(wrt.end(), saved.states.begin(), saved.states.end());
    for (const at::Tensor& param : saved.params) {
      if (param.defined()) wrt.push_back(param);
    }
    variable_list found;
    if (at::GradMode::is_enabled()) {
      const Layout layout(saved.input, saved.states);
      found = differentiable_grads(cell, layout,
                                   layer_args(layout, saved.input, saved.batch_sizes,
                                              saved.states, params, scalars, reverse),
                                   grads, wrt);
    } else {
      // layer_backward has no autograd kernel of its own: skipping that key spares its boxed
      // fallback, a cost on every call of a small layer.
      const at::AutoDispatchBelowADInplaceOrView below_autograd;
      auto [grad_input, grad_states, grad_params] = ops::layer_backward(
          cell, grads[0], at::TensorList(grads).slice(1), saved.input, saved.batch_sizes,
          saved.states, params, scalars, saved.output, saved.reserve, reverse);
      found.push_back(grad_input);
      found.insert(found.end(), grad_states.begin(), grad_states.end());
      // A mask has no gradient: layer_backward gives an empty one.
      visit_cell<Cells>(cell, [&](auto tag) {
        const std::vector<ParamSpec>& own = cell_signature<typename decltype(tag)::type>().params;
        for (size_t i = 0; i < saved.params.size(); ++i) {
          if (!saved.params[i].defined()) continue;
          const bool none = i >= 4 && !has_gradient(own[i - 4].role);
          found.push_back(none ? at::Tensor() : grad_params[i]);
        }
      });
    }
    // In the order of forward's arguments: cell, input, batch_sizes, each state, each present
    // param, params, scalars, reverse, train; none for the arguments that are no tensors and for
    // batch_sizes.
    variable_list result{at::Tensor(), found[0], at::Tensor()};
    result.insert(result.end(), found.begin() + 1, found.end());
    result.resize(result.size() + 4);
    return result;
  }
};

bool requires_grad(const at::Tensor& t) { return t.defined() && t.requires_grad(); }

std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor> layer_autograd(
    c10::string_view cell, const at::Tensor& input, const at::Tensor& batch_sizes,
    at::TensorList states, const c10::List<OptionalTensor>& params, at::ArrayRef<double> scalars,
    bool reverse, bool train) {
  const bool grad_mode = at::GradMode::is_enabled();
  std::vector<at::Tensor> present;
  bool defined = input.defined() && batch_sizes.defined();
  bool wanted = grad_mode && requires_grad(input);
  for (const at::Tensor& state : states) {
    defined = defined && state.defined();
    wanted = wanted || (grad_mode && requires_grad(state));
  }
  for (size_t i = 0; i < params.size(); ++i) {
    const OptionalTensor param = params[i];
    const bool here = param.has_value() && param->defined();
    if (i < 2) defined = defined && here;
    if (!here) continue;
    present.push_back(*param);
    wanted = wanted || (grad_mode && requires_grad(*param));
  }
  if (!defined) {
    // Autograd's bookkeeping fails on an undefined tensor before the kernel's checks would name
    // it: name it as the kernel would.
    visit_cell<Cells>(cell, [&](auto tag) {
      const CellSignature& signature = cell_signature<typename decltype(tag)::type>();
      const std::string& op = signature.forward_op;
      check_defined(op, "input", input);
      check_defined(op, "batch_sizes", batch_sizes);
      for (size_t j = 0; j < states.size() && j < signature.states.size(); ++j) {
        check_defined(op, signature.states[j] + "0", states[j]);
      }
      for (size_t i = 0; i < 2 && i < params.size(); ++i) {
        check_defined(op, signature.param_name(i), params[i].value_or(at::Tensor()));
      }
    });
  }
  if (!wanted) {
    // Nothing to differentiate: no graph node, nothing saved.
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return ops::layer(cell, input, batch_sizes, states, params, scalars, reverse, train);
  }
  variable_list out = LayerFunction::apply(cell, input, batch_sizes, states,
                                           at::TensorList(present), params, scalars, reverse,
                                           train);
  const at::Tensor reserve = out.back();
  std::vector<at::Tensor> finals(out.begin() + 1, out.end() - 1);
  return {out[0], finals, reserve};
}

}  // namespace

TORCH_LIBRARY_IMPL(rnnkernels, Autograd, m) { m.impl("layer", &layer_autograd); }

}  // namespace rnnkernels
