// The device kernels of the generic layer operators (schemas in csrc/ops/ops.cpp): unpack the
// arguments into LayerArgs, find the cell by name in a list of cells, and run the step loops of
// csrc/layer/layer.h for it on a backend. csrc/cpu/layers_cpu.cpp and csrc/cuda/layers_cuda.cpp
// register them for the list of csrc/kernels/cell_list.h; the tests' CUDA emulation for its own.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "../kernels/cell_list.h"
#include "../layer/layer.h"

namespace rnnkernels {

// The layer operators take the input as packed rows [N, I] or as [T, B, I], whose T*B rows are
// taken in order (a padded batch, with batch_sizes T entries of B), and each state as [B, *] or
// as [1, B, *] (one layer's part of torch.nn's [L*D, B, *] states); the results and the
// backward's arguments come in the layout of the tensor they belong to. So a module's single
// layer passes its tensors as they are, with no view that autograd would record. The step loops
// see rows and [B, *]: Layout makes those views, and gives the results back their shapes. A
// tensor that fits neither layout is passed on as it came, for the checks to name.
class Layout {
 public:
  Layout(const at::Tensor& input, at::TensorList states)
      : padded_(input.defined() && input.dim() == 3 && input.is_contiguous()) {
    if (padded_) leading_ = {input.size(0), input.size(1)};
    layered_.reserve(states.size());
    for (const at::Tensor& state : states) {
      layered_.push_back(state.defined() && state.dim() == 3 && state.size(0) == 1);
    }
  }

  // Input-shaped (input, output, grad_output) [T, B, *] as rows [T*B, *].
  at::Tensor rows(const at::Tensor& t) const {
    const bool fits = padded_ && t.defined() && t.dim() == 3 && t.size(0) == leading_[0] &&
                      t.size(1) == leading_[1] && t.is_contiguous();
    return fits ? t.view({leading_[0] * leading_[1], t.size(2)}) : t;
  }
  // State-shaped (the states, the finals' gradients) [1, B, *] as [B, *], in the states' order.
  std::vector<at::Tensor> states(at::TensorList states) const {
    std::vector<at::Tensor> out = states.vec();
    for (size_t j = 0; j < out.size() && j < layered_.size(); ++j) {
      const at::Tensor& t = out[j];
      if (!layered_[j] || !t.defined() || t.dim() != 3 || t.size(0) != 1) continue;
      // A view where it can be (the cheaper call); else select, for the checks to name.
      out[j] = t.is_contiguous() ? t.view({t.size(1), t.size(2)}) : t.select(0, 0);
    }
    return out;
  }
  // Results back in the arguments' layout: rows [T*B, *] as [T, B, *], states [B, *] as
  // [1, B, *]. Not as views: a view returned by an operator with autograd may not be changed in
  // place, which torch.nn's results may.
  at::Tensor padded(const at::Tensor& rows) const {
    return padded_ ? at::_unsafe_view(rows, {leading_[0], leading_[1], rows.size(1)}) : rows;
  }
  std::vector<at::Tensor> layered(std::vector<at::Tensor> states) const {
    for (size_t j = 0; j < states.size(); ++j) {
      const at::Tensor& s = states[j];
      if (layered_[j]) states[j] = at::_unsafe_view(s, {1, s.size(0), s.size(1)});
    }
    return states;
  }

 private:
  bool padded_;
  std::array<int64_t, 2> leading_{};
  std::vector<bool> layered_;
};

// The schema's arguments by role, in the step loops' layout; an optional param that came as an
// undefined tensor is absent.
inline LayerArgs layer_args(const Layout& layout, const at::Tensor& input,
                            const at::Tensor& batch_sizes, at::TensorList states,
                            const c10::List<OptionalTensor>& params,
                            at::ArrayRef<double> scalars, bool reverse) {
  LayerArgs args{layout.rows(input), batch_sizes, layout.states(states), {}, scalars.vec(),
                 reverse};
  args.params.reserve(params.size());
  for (const OptionalTensor& param : params) {
    args.params.push_back(param.has_value() && param->defined() ? param : std::nullopt);
  }
  return args;
}

// Runs f(CellTag<Cell>{}) for the cell of List named `cell`, or raises naming the known cells.
template <typename List, typename F>
void visit_cell(c10::string_view cell, const F& f) {
  const std::string_view name(cell.data(), cell.size());
  if (List::visit(name, f)) return;
  std::string known;
  List::visit_all([&](auto tag) {
    known += (known.empty() ? "'" : ", '") + std::string(decltype(tag)::type::kName) + "'";
  });
  TORCH_CHECK(false, "rnnkernels: unknown cell '", name, "', expected one of ", known);
}

template <typename List, typename Backend>
std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor> layer_kernel(
    c10::string_view cell, const at::Tensor& input, const at::Tensor& batch_sizes,
    at::TensorList states, const c10::List<OptionalTensor>& params,
    at::ArrayRef<double> scalars, bool reverse, bool train) {
  const Layout layout(input, states);
  const LayerArgs args = layer_args(layout, input, batch_sizes, states, params, scalars, reverse);
  LayerOutputs out;
  visit_cell<List>(cell, [&](auto tag) {
    out = layer_forward<typename decltype(tag)::type, Backend>(args, train);
  });
  return {layout.padded(out.output), layout.layered(std::move(out.states)), out.reserve};
}

template <typename List, typename Backend>
std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> layer_backward_kernel(
    c10::string_view cell, const at::Tensor& grad_output, at::TensorList grad_finals,
    const at::Tensor& input, const at::Tensor& batch_sizes, at::TensorList states,
    const c10::List<OptionalTensor>& params, at::ArrayRef<double> scalars,
    const at::Tensor& output, const at::Tensor& reserve, bool reverse) {
  const Layout layout(input, states);
  const LayerArgs args = layer_args(layout, input, batch_sizes, states, params, scalars, reverse);
  LayerGrads grads;
  visit_cell<List>(cell, [&](auto tag) {
    grads = layer_backward<typename decltype(tag)::type, Backend>(
        args, layout.rows(grad_output), layout.states(grad_finals), layout.rows(output),
        reserve);
  });
  return {layout.padded(grads.input), layout.layered(std::move(grads.states)), grads.params};
}

}  // namespace rnnkernels
