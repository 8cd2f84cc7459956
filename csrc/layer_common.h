// Torch-side pieces shared by every layer operator and both backends: argument checks and the
// step schedule over packed rows.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace rnnkernels {

// Sizes of one layer, derived from the weights and checked against every other argument.
struct LayerShape {
  int64_t rows;        // N = sum(batch_sizes), rows of input and output
  int64_t input_size;  // I
  int64_t hidden;      // H
  int64_t state;       // P: width of h (proj_size for a projected LSTM, else H)
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

// Checks every argument of a layer operator (dtype, device, rank, shape, contiguity, and
// batch_sizes' contents) and returns the layer's sizes. `gates` is 4 (LSTM), 3 (GRU) or 1 (RNN).
// Errors name the operator and the argument, and say what was expected and what came.
LayerShape check_layer_args(const char* op, int64_t gates, const at::Tensor& input,
                            const at::Tensor& batch_sizes, const at::Tensor& h0,
                            const at::Tensor* c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                            const std::optional<at::Tensor>& b_ih,
                            const std::optional<at::Tensor>& b_hh,
                            const std::optional<at::Tensor>& w_hr);

// Checks that a required tensor argument came (None from Python is an undefined tensor).
void check_defined(const char* op, const char* name, const at::Tensor& tensor);

// Checks a tensor argument: defined, the dtype and device of `input`, contiguous, of the given
// shape. Used by check_layer_args and for the backward operators' extra arguments.
void check_tensor_arg(const char* op, const char* name, const at::Tensor& tensor,
                      const at::Tensor& input, at::IntArrayRef shape);

// The sum of the biases that are present, or an undefined tensor when neither is.
at::Tensor sum_biases(const std::optional<at::Tensor>& a, const std::optional<at::Tensor>& b);

// A defined optional bias/weight's gradient, or an empty tensor standing for "none".
at::Tensor grad_or_empty(const std::optional<at::Tensor>& param, const at::Tensor& grad);

}  // namespace rnnkernels
