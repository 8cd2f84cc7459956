// A layer recomputed in ATen operations, differentiable by autograd: what a backward with
// create_graph=True differentiates (csrc/ops/autograd.cpp), so that double backward needs no
// formula of its own. The same scan as rnnkernels/reference.py's _scan, step by step over the
// packed rows, and the same element functions as the kernels (traits.h), run on whole tensors:
// TensorValue stands for a [rows, H] block, TensorMath for the activations.
#pragma once

#include <ATen/ATen.h>

#include <utility>
#include <vector>

#include "../kernels/traits.h"
#include "layer.h"
#include "layer_common.h"

namespace rnnkernels {

// A tensor, or a constant (what the cell math writes as V(1)), with the arithmetic cells.h uses.
class TensorValue {
 public:
  // Implicit, as cells.h writes constants as V(1) and activations return tensors.
  TensorValue(double constant) : constant_(constant) {}
  TensorValue(at::Tensor tensor) : tensor_(std::move(tensor)) {}
  TensorValue() = default;

  const at::Tensor& tensor() const {
    TORCH_CHECK(tensor_.defined(), "rnnkernels: a cell produced a constant where a tensor goes");
    return tensor_;
  }
  double constant() const {
    TORCH_CHECK(!tensor_.defined(), "rnnkernels: a cell gave a tensor where a constant goes");
    return constant_;
  }

  friend TensorValue operator+(const TensorValue& a, const TensorValue& b) {
    return a.apply(b, [](const auto& x, const auto& y) { return x + y; });
  }
  friend TensorValue operator-(const TensorValue& a, const TensorValue& b) {
    return a.apply(b, [](const auto& x, const auto& y) { return x - y; });
  }
  friend TensorValue operator*(const TensorValue& a, const TensorValue& b) {
    return a.apply(b, [](const auto& x, const auto& y) { return x * y; });
  }

 private:
  // op on the two operands, each a tensor or a constant (at::Scalar where a tensor meets one).
  template <typename Op>
  TensorValue apply(const TensorValue& b, const Op& op) const {
    if (!tensor_.defined() && !b.tensor_.defined()) return op(constant_, b.constant_);
    if (!tensor_.defined()) return op(at::Scalar(constant_), b.tensor_);
    if (!b.tensor_.defined()) return op(tensor_, at::Scalar(b.constant_));
    return op(tensor_, b.tensor_);
  }

  at::Tensor tensor_;
  double constant_ = 0;
};

struct TensorMath {
  static TensorValue sigmoid(const TensorValue& x) { return at::sigmoid(x.tensor()); }
  static TensorValue tanh(const TensorValue& x) { return at::tanh(x.tensor()); }
  static TensorValue relu(const TensorValue& x) { return at::relu(x.tensor()); }
  // The bound is a cell's scalar.
  static TensorValue clip(const TensorValue& x, const TensorValue& bound) {
    return at::clamp(x.tensor(), -bound.constant(), bound.constant());
  }
  static TensorValue rsqrt(const TensorValue& x) { return at::rsqrt(x.tensor()); }
};

// The forward accessor of step.h on a step's rows as tensors: gates [rows, G*H], states
// [rows, width]; set_state replaces a state, save keeps nothing (autograd keeps what it needs).
class TensorForwardStep {
 public:
  using Value = TensorValue;
  using Math = TensorMath;

  TensorForwardStep(at::Tensor input_gates, at::Tensor hidden_gates,
                    std::vector<at::Tensor>& states, at::Tensor& output,
                    const std::vector<at::Tensor>& inputs, const std::vector<double>& scalars,
                    int64_t hidden)
      : input_gates_(std::move(input_gates)), hidden_gates_(std::move(hidden_gates)),
        states_(states), output_(output), inputs_(inputs), scalars_(scalars), hidden_(hidden) {}

  Value input_gate(int k) const { return input_gates_.narrow(1, k * hidden_, hidden_); }
  Value hidden_gate(int k) const { return hidden_gates_.narrow(1, k * hidden_, hidden_); }
  Value input(int i, int k = 0) const {
    const at::Tensor& in = inputs_[i];
    return in.defined() ? Value(in.narrow(-1, k * hidden_, hidden_)) : Value(0.0);
  }
  Value scalar(int i) const { return scalars_[i]; }
  Value state(int j) const { return states_[j]; }
  void set_state(int j, const Value& v) const { states_[j] = v.tensor(); }
  void set_output(const Value& v) const { output_ = v.tensor(); }
  Value output() const { return output_; }
  void save(int /*k*/, const Value& /*v*/) const {}

 private:
  at::Tensor input_gates_;
  at::Tensor hidden_gates_;
  std::vector<at::Tensor>& states_;
  at::Tensor& output_;
  const std::vector<at::Tensor>& inputs_;
  const std::vector<double>& scalars_;
  int64_t hidden_;
};

// A row (step.h) on tensors: every row of the step at once, a position being the whole step.
class TensorRow {
 public:
  using Value = TensorValue;
  using Math = TensorMath;

  TensorRow(const TensorForwardStep& step, int64_t hidden) : step_(step), hidden_(hidden) {}

  int64_t hidden() const { return hidden_; }
  template <typename F>
  void for_each(const F& f) const {
    f(step_);
  }
  template <typename F>
  Value sum(const F& f) const {
    return Value(f(step_)).tensor().sum(1, /*keepdim=*/true);
  }

 private:
  const TensorForwardStep& step_;
  int64_t hidden_;
};

// The layer's output [N, P] and final states, as differentiable functions of args' tensors.
// args are those of a forward that ran (so they passed its checks).
template <typename Cell>
std::pair<at::Tensor, std::vector<at::Tensor>> differentiable_layer(const LayerArgs& args) {
  using namespace layer_detail;
  const CellSignature& cell = cell_signature<Cell>();
  const int64_t H = args.w_hh().size(0) / Cell::kGates;
  constexpr bool dense = Cell::kRecurrence == Recurrence::kDense;
  const int64_t projection = cell.param_index(ParamRole::kProjection);
  const OptionalTensor w_hr = projection >= 0 ? args.params[projection] : std::nullopt;

  const at::Tensor bias = folded_bias<Cell>(args, H);
  const at::Tensor input_gates = bias.defined() ? at::addmm(bias, args.input, args.w_ih().t())
                                                : at::mm(args.input, args.w_ih().t());
  const StepInputs inputs = step_inputs<Cell>(args, H);
  const RecurrentMask mask(cell, args, 0, 0);  // its mask only: no scratch rows used
  std::vector<at::Tensor> states = args.states;  // [B, width] each, row by row replaced
  const StepSchedule schedule(args.batch_sizes, args.reverse);
  std::vector<at::Tensor> outputs(schedule.steps());  // by step
  for (int64_t k = 0; k < schedule.steps(); ++k) {
    const int64_t t = schedule.step(k);
    const int64_t rows = schedule.size(t);
    std::vector<at::Tensor> step_states;
    for (const at::Tensor& state : states) step_states.push_back(state.narrow(0, 0, rows));
    const at::Tensor hidden_gates =
        dense ? at::mm(mask.present() ? step_states[0] * mask.mask(0, rows) : step_states[0],
                       args.w_hh().t())
              : at::Tensor();
    std::vector<at::Tensor> step_inputs;  // per-row ones narrowed to the step's rows
    for (size_t i = 0; i < inputs.tensors.size(); ++i) {
      const at::Tensor& in = inputs.tensors[i];
      step_inputs.push_back(in.defined() && inputs.per_row[i]
                                ? in.narrow(0, schedule.offset(t), rows)
                                : in);
    }
    at::Tensor output;
    const TensorForwardStep step(input_gates.narrow(0, schedule.offset(t), rows), hidden_gates,
                                 step_states, output, step_inputs, args.scalars, H);
    if constexpr (Cell::kRowwise) {
      Cell::forward(TensorRow(step, H));
    } else {
      Cell::forward(step);
    }
    if (w_hr.has_value()) {
      output = at::mm(output, w_hr->t());
      step_states[0] = output;
    }
    for (size_t j = 0; j < states.size(); ++j) {
      const int64_t batch = states[j].size(0);
      states[j] = rows == batch ? step_states[j]
                                : at::cat({step_states[j], states[j].narrow(0, rows, batch - rows)});
    }
    outputs[t] = output;
  }
  return {at::cat(outputs), states};
}

}  // namespace rnnkernels
