// Torch-side pieces shared by the step loops of every cell and both backends: a layer's
// arguments by role, a cell's traits as run-time data (for checks, messages and the Python
// side), the argument checks, and the step schedule over packed rows.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "../kernels/traits.h"

namespace rnnkernels {

using OptionalTensor = std::optional<at::Tensor>;

// The tensor and scalar arguments of a layer operator (csrc/ops/ops.cpp), by role.
//   states: the initial states in the cell's order (h0 [B, P], then c0 [B, H], ...);
//   params: w_ih [G*H, I], w_hh [G*H, P] (or [G*H] without a dense recurrence), b_ih, b_hh
//           [G*H], then the cell's own (traits' kParams, e.g. w_hr [P, H]); nullopt where absent;
//   scalars: the cell's (traits' kScalars).
struct LayerArgs {
  at::Tensor input;        // [N, I] packed rows
  at::Tensor batch_sizes;  // [T] int64 on the CPU
  std::vector<at::Tensor> states;
  std::vector<OptionalTensor> params;
  std::vector<double> scalars;
  bool reverse;

  const at::Tensor& w_ih() const { return *params[0]; }
  const at::Tensor& w_hh() const { return *params[1]; }
  const OptionalTensor& b_ih() const { return params[2]; }
  const OptionalTensor& b_hh() const { return params[3]; }
};

// What a cell's traits tell the torch side at run time (cell_signature<Cell>() below).
struct CellSignature {
  std::string name;                 // traits' kName
  std::string forward_op;           // "lstm_layer": what the forward's messages name
  std::string backward_op;          // "lstm_layer_backward"
  int64_t gates;                    // G
  std::vector<std::string> states;  // "h", "c": the arguments are h0, c0, the results h_n, c_n
  std::vector<ParamSpec> params;    // beyond w_ih, w_hh, b_ih, b_hh
  int64_t reserve;                  // R: the reserve is [rows, R*H], or [0] when R is 0
  int64_t scalars;
  bool dense;                       // Recurrence::kDense: w_hh is a matrix

  template <typename Cell>
  static CellSignature of() {
    const std::string name = Cell::kName;
    CellSignature s{name, name + "_layer", name + "_layer_backward", Cell::kGates, {}, {},
                    Cell::kReserve, Cell::kScalars, Cell::kRecurrence == Recurrence::kDense};
    s.states.assign(Cell::kStates.begin(), Cell::kStates.end());
    s.params.assign(Cell::kParams.begin(), Cell::kParams.end());
    return s;
  }
  // The name of param i of a LayerArgs (w_ih, w_hh, b_ih, b_hh, then the cell's).
  std::string param_name(size_t i) const;
  // The index in LayerArgs::params of the param with this role, or -1.
  int64_t param_index(ParamRole role) const;
};

// The signature of Cell, built once.
template <typename Cell>
const CellSignature& cell_signature() {
  static const CellSignature signature = CellSignature::of<Cell>();
  return signature;
}

// Sizes of one layer, derived from the weights and checked against every other argument.
struct LayerShape {
  int64_t rows;        // N = sum(batch_sizes), rows of input and output
  int64_t input_size;  // I
  int64_t hidden;      // H
  int64_t state;       // P: width of h (proj_size with a projection, else H)
  int64_t batch;       // B = batch_sizes[0]
};

// The order in which one direction visits the steps of a packed batch.
//   batch_sizes [T], non-increasing; step t owns rows [offset(t), offset(t) + size(t)).
// Forward visits t = 0..T-1, reverse t = T-1..0. In both, a step's first `continuing(t)` rows
// carry state from the previously visited step; the remaining rows start from the initial state
// (only the reverse direction has such rows after its first step).
class StepSchedule {
 public:
  StepSchedule(const at::Tensor& batch_sizes, bool reverse);

  int64_t steps() const { return static_cast<int64_t>(sizes_.size()); }
  // The k-th step visited by the forward pass.
  int64_t step(int64_t k) const { return reverse_ ? steps() - 1 - k : k; }
  int64_t size(int64_t t) const { return sizes_[t]; }
  int64_t offset(int64_t t) const { return offsets_[t]; }
  // The step visited just before t (valid when continuing(t) > 0).
  int64_t previous(int64_t t) const { return reverse_ ? t + 1 : t - 1; }
  int64_t continuing(int64_t t) const {
    if (reverse_) return t + 1 < steps() ? sizes_[t + 1] : 0;
    return t > 0 ? sizes_[t] : 0;
  }
  // The same counts restricted to the batch rows [begin, end): how many of them step t has, and
  // how many of those continue (the step's rows are the first size(t) of the batch).
  int64_t rows_in(int64_t t, int64_t begin, int64_t end) const {
    return std::max<int64_t>(0, std::min(sizes_[t], end) - begin);
  }
  int64_t continuing_in(int64_t t, int64_t begin, int64_t end) const {
    return std::max<int64_t>(0, std::min(continuing(t), end) - begin);
  }

 private:
  bool reverse_;
  std::vector<int64_t> sizes_;
  std::vector<int64_t> offsets_;
};

// Checks every argument of a layer operator of `cell` (dtype, device, rank, shape, contiguity,
// the counts of states, params and scalars, and batch_sizes' contents) and returns the layer's
// sizes. Errors name the operator and the argument, and say what was expected and what came.
LayerShape check_layer_args(const std::string& op, const CellSignature& cell,
                            const LayerArgs& args);

// Checks that a required tensor argument came (None from Python is an undefined tensor).
void check_defined(const std::string& op, const std::string& name, const at::Tensor& tensor);

// Checks a tensor argument: defined, the dtype and device of `input`, contiguous, of the given
// shape. Used by check_layer_args and for the backward operators' extra arguments.
void check_tensor_arg(const std::string& op, const std::string& name, const at::Tensor& tensor,
                      const at::Tensor& input, at::IntArrayRef shape);

// The sum of the biases that are present, or an undefined tensor when neither is.
at::Tensor sum_biases(const OptionalTensor& a, const OptionalTensor& b);

// A present param's gradient, or an empty tensor standing for "none".
at::Tensor grad_or_empty(const OptionalTensor& param, const at::Tensor& grad);

}  // namespace rnnkernels
