#include "layer_common.h"

#include <c10/util/irange.h>

namespace rnnkernels {
namespace {

std::string shape_string(at::IntArrayRef shape) {
  std::string s = "[";
  for (const auto i : c10::irange(shape.size())) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

}  // namespace

StepSchedule::StepSchedule(const at::Tensor& batch_sizes, bool reverse) : reverse_(reverse) {
  const int64_t steps = batch_sizes.numel();
  const int64_t* sizes = batch_sizes.data_ptr<int64_t>();
  sizes_.assign(sizes, sizes + steps);
  offsets_.resize(steps);
  int64_t offset = 0;
  for (const auto t : c10::irange(steps)) {
    offsets_[t] = offset;
    offset += sizes_[t];
  }
}

LayerShape check_layer_args(const char* op, int64_t gates, const at::Tensor& input,
                            const at::Tensor& batch_sizes, const at::Tensor& h0,
                            const at::Tensor* c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                            const std::optional<at::Tensor>& b_ih,
                            const std::optional<at::Tensor>& b_hh,
                            const std::optional<at::Tensor>& w_hr) {
  // torch.ops passes None for a Tensor argument on as an undefined tensor.
  for (const auto& [name, tensor] : {std::pair<const char*, const at::Tensor*>{"input", &input},
                                     {"batch_sizes", &batch_sizes},
                                     {"w_hh", &w_hh}}) {
    check_defined(op, name, *tensor);
  }
  TORCH_CHECK(input.dim() == 2, op, ": expected input to be 2-D [rows, input_size], got ",
              input.dim(), "-D");
  const auto dtype = input.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                  dtype == at::kBFloat16,
              op, ": expected input to have a floating dtype (float32, float64, float16 or "
              "bfloat16), got ", dtype);
  TORCH_CHECK(input.is_contiguous(), op, ": expected input to be contiguous");

  TORCH_CHECK(batch_sizes.device().is_cpu(), op,
              ": expected batch_sizes on the CPU (as in PackedSequence), got ",
              batch_sizes.device());
  TORCH_CHECK(batch_sizes.scalar_type() == at::kLong, op,
              ": expected batch_sizes to have dtype int64, got ", batch_sizes.scalar_type());
  TORCH_CHECK(batch_sizes.dim() == 1, op, ": expected batch_sizes to be 1-D [steps], got ",
              batch_sizes.dim(), "-D");
  TORCH_CHECK(batch_sizes.numel() > 0, op,
              ": expected batch_sizes to hold at least one step, got none");
  TORCH_CHECK(batch_sizes.is_contiguous(), op, ": expected batch_sizes to be contiguous");
  const int64_t* sizes = batch_sizes.data_ptr<int64_t>();
  int64_t rows = 0;
  for (const auto t : c10::irange(batch_sizes.numel())) {
    TORCH_CHECK(sizes[t] > 0, op, ": expected every batch_sizes entry to be positive, got ",
                sizes[t], " at step ", t);
    TORCH_CHECK(t == 0 || sizes[t] <= sizes[t - 1], op,
                ": expected batch_sizes to be non-increasing, got ", sizes[t - 1], " then ",
                sizes[t], " at step ", t);
    rows += sizes[t];
  }
  TORCH_CHECK(rows == input.size(0), op, ": expected batch_sizes to sum to the ",
              input.size(0), " rows of input, got ", rows);

  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) > 0 && w_hh.size(0) % gates == 0, op,
              ": expected w_hh to be 2-D [", gates, " * hidden_size, state_size], got shape ",
              shape_string(w_hh.sizes()));
  LayerShape shape;
  shape.rows = rows;
  shape.input_size = input.size(1);
  shape.hidden = w_hh.size(0) / gates;
  shape.batch = sizes[0];
  if (w_hr.has_value()) {
    TORCH_CHECK(w_hr->dim() == 2, op, ": expected w_hr to be 2-D [proj_size, hidden_size], got ",
                w_hr->dim(), "-D");
    shape.state = w_hr->size(0);
    check_tensor_arg(op, "w_hr", *w_hr, input, {shape.state, shape.hidden});
  } else {
    shape.state = shape.hidden;
  }
  const int64_t gate_width = gates * shape.hidden;
  TORCH_CHECK(!w_ih.defined() || w_ih.dim() != 2 || w_ih.size(1) == shape.input_size, op,
              ": expected w_ih of shape [", gate_width, ", ", shape.input_size,
              "] (input_size from input), got ", shape_string(w_ih.sizes()));
  check_tensor_arg(op, "w_ih", w_ih, input, {gate_width, shape.input_size});
  check_tensor_arg(op, "w_hh", w_hh, input, {gate_width, shape.state});
  if (b_ih.has_value()) check_tensor_arg(op, "b_ih", *b_ih, input, {gate_width});
  if (b_hh.has_value()) check_tensor_arg(op, "b_hh", *b_hh, input, {gate_width});
  check_tensor_arg(op, "h0", h0, input, {shape.batch, shape.state});
  if (c0 != nullptr) check_tensor_arg(op, "c0", *c0, input, {shape.batch, shape.hidden});
  return shape;
}

void check_defined(const char* op, const char* name, const at::Tensor& tensor) {
  TORCH_CHECK(tensor.defined(), op, ": expected ", name, " to be a tensor, got None");
}

void check_tensor_arg(const char* op, const char* name, const at::Tensor& tensor,
                      const at::Tensor& input, at::IntArrayRef shape) {
  check_defined(op, name, tensor);
  TORCH_CHECK(tensor.scalar_type() == input.scalar_type(), op, ": expected ", name,
              " to have dtype ", input.scalar_type(), " (the dtype of input), got ",
              tensor.scalar_type());
  TORCH_CHECK(tensor.device() == input.device(), op, ": expected ", name, " on device ",
              input.device(), " (the device of input), got ", tensor.device());
  TORCH_CHECK(tensor.sizes() == shape, op, ": expected ", name, " of shape ",
              shape_string(shape), ", got ", shape_string(tensor.sizes()));
  TORCH_CHECK(tensor.is_contiguous(), op, ": expected ", name, " to be contiguous");
}

at::Tensor sum_biases(const std::optional<at::Tensor>& a, const std::optional<at::Tensor>& b) {
  if (a.has_value() && b.has_value()) return *a + *b;
  if (a.has_value()) return *a;
  if (b.has_value()) return *b;
  return at::Tensor();
}

at::Tensor grad_or_empty(const std::optional<at::Tensor>& param, const at::Tensor& grad) {
  return param.has_value() ? grad : at::empty({0}, grad.options());
}

}  // namespace rnnkernels
