// The device kernels of the generic layer operators (schemas in csrc/ops/ops.cpp): unpack the
// arguments into LayerArgs, find the cell by name in a list of cells, and run the step loops of
// csrc/layer/layer.h for it on a backend. csrc/cpu/layers_cpu.cpp and csrc/cuda/layers_cuda.cpp
// register them for the list of csrc/kernels/cell_list.h; the tests' CUDA emulation for its own.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <tuple>
#include <vector>

#include "../kernels/cell_list.h"
#include "../layer/layer.h"

namespace rnnkernels {

// The schema's arguments by role; an optional param that came as an undefined tensor is absent.
inline LayerArgs layer_args(const at::Tensor& input, const at::Tensor& batch_sizes,
                            at::TensorList states, const c10::List<OptionalTensor>& params,
                            at::ArrayRef<double> scalars, bool reverse) {
  LayerArgs args{input, batch_sizes, states.vec(), {}, scalars.vec(), reverse};
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
  const LayerArgs args = layer_args(input, batch_sizes, states, params, scalars, reverse);
  LayerOutputs out;
  visit_cell<List>(cell, [&](auto tag) {
    out = layer_forward<typename decltype(tag)::type, Backend>(args, train);
  });
  return {out.output, out.states, out.reserve};
}

template <typename List, typename Backend>
std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> layer_backward_kernel(
    c10::string_view cell, const at::Tensor& grad_output, at::TensorList grad_finals,
    const at::Tensor& input, const at::Tensor& batch_sizes, at::TensorList states,
    const c10::List<OptionalTensor>& params, at::ArrayRef<double> scalars,
    const at::Tensor& output, const at::Tensor& reserve, bool reverse) {
  const LayerArgs args = layer_args(input, batch_sizes, states, params, scalars, reverse);
  LayerGrads grads;
  visit_cell<List>(cell, [&](auto tag) {
    grads = layer_backward<typename decltype(tag)::type, Backend>(args, grad_output,
                                                                  grad_finals.vec(), output,
                                                                  reserve);
  });
  return {grads.input, grads.states, grads.params};
}

}  // namespace rnnkernels
