// Argument checks and the step schedule of csrc/layer/layer_common.h.
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

std::string CellSignature::param_name(size_t i) const {
  static const char* const kCommon[] = {"w_ih", "w_hh", "b_ih", "b_hh"};
  return i < 4 ? kCommon[i] : params[i - 4].name;
}

int64_t CellSignature::param_index(ParamRole role) const {
  for (size_t i = 0; i < params.size(); ++i) {
    if (params[i].role == role) return static_cast<int64_t>(i + 4);
  }
  return -1;
}

namespace {

// "h0, c0" or "w_ih, w_hh, b_ih, b_hh, w_hr": what a count message lists.
template <typename Name>
std::string joined(size_t count, const Name& name) {
  std::string s;
  for (size_t i = 0; i < count; ++i) s += (i > 0 ? ", " : "") + name(i);
  return s;
}

}  // namespace

LayerShape check_layer_args(const std::string& op, const CellSignature& cell,
                            const LayerArgs& args) {
  const at::Tensor &input = args.input, &batch_sizes = args.batch_sizes;
  TORCH_CHECK(args.states.size() == cell.states.size(), op, ": expected ", cell.states.size(),
              " states (",
              joined(cell.states.size(), [&](size_t j) { return cell.states[j] + "0"; }),
              "), got ", args.states.size());
  TORCH_CHECK(args.params.size() == 4 + cell.params.size(), op, ": expected ",
              4 + cell.params.size(), " params (",
              joined(4 + cell.params.size(), [&](size_t i) { return cell.param_name(i); }),
              "), got ", args.params.size());
  TORCH_CHECK(static_cast<int64_t>(args.scalars.size()) == cell.scalars, op, ": expected ",
              cell.scalars, " scalars, got ", args.scalars.size());
  const at::Tensor w_ih = args.params[0].value_or(at::Tensor());
  const at::Tensor w_hh = args.params[1].value_or(at::Tensor());
  // torch.ops passes None for a Tensor argument on as an undefined tensor.
  for (const auto& [name, tensor] : {std::pair<const char*, const at::Tensor*>{"input", &input},
                                     {"batch_sizes", &batch_sizes},
                                     {"w_hh", &w_hh}}) {
    check_defined(op, name, *tensor);
  }
  TORCH_CHECK(input.dim() == 2, op,
              ": expected input to be 2-D [rows, input_size] or contiguous 3-D [steps, batch, "
              "input_size], got ",
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

  const int64_t gates = cell.gates;
  if (cell.dense) {
    TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) > 0 && w_hh.size(0) % gates == 0, op,
                ": expected w_hh to be 2-D [", gates, " * hidden_size, state_size], got shape ",
                shape_string(w_hh.sizes()));
  } else {
    TORCH_CHECK(w_hh.dim() == 1 && w_hh.size(0) > 0 && w_hh.size(0) % gates == 0, op,
                ": expected w_hh to be 1-D [", gates, " * hidden_size], got shape ",
                shape_string(w_hh.sizes()));
  }
  LayerShape shape;
  shape.rows = rows;
  shape.input_size = input.size(1);
  shape.hidden = w_hh.size(0) / gates;
  shape.batch = sizes[0];
  const int64_t projection = cell.param_index(ParamRole::kProjection);
  const OptionalTensor w_hr = projection >= 0 ? args.params[projection] : std::nullopt;
  if (w_hr.has_value()) {
    TORCH_CHECK(w_hr->dim() == 2, op, ": expected w_hr to be 2-D [proj_size, hidden_size], got ",
                w_hr->dim(), "-D");
    shape.state = w_hr->size(0);
    check_tensor_arg(op, cell.param_name(projection), *w_hr, input, {shape.state, shape.hidden});
  } else {
    shape.state = shape.hidden;
  }
  const int64_t gate_width = gates * shape.hidden;
  TORCH_CHECK(!w_ih.defined() || w_ih.dim() != 2 || w_ih.size(1) == shape.input_size, op,
              ": expected w_ih of shape [", gate_width, ", ", shape.input_size,
              "] (input_size from input), got ", shape_string(w_ih.sizes()));
  check_tensor_arg(op, "w_ih", w_ih, input, {gate_width, shape.input_size});
  if (cell.dense) {
    check_tensor_arg(op, "w_hh", w_hh, input, {gate_width, shape.state});
  } else {
    check_tensor_arg(op, "w_hh", w_hh, input, {gate_width});
  }
  for (const size_t i : {2, 3}) {
    if (args.params[i].has_value()) {
      check_tensor_arg(op, cell.param_name(i), *args.params[i], input, {gate_width});
    }
  }
  for (size_t j = 0; j < args.states.size(); ++j) {
    check_tensor_arg(op, cell.states[j] + "0", args.states[j], input,
                     {shape.batch, j == 0 ? shape.state : shape.hidden});
  }
  for (size_t i = 0; i < cell.params.size(); ++i) {
    const ParamSpec& spec = cell.params[i];
    const OptionalTensor& param = args.params[4 + i];
    if (!param.has_value() || spec.role == ParamRole::kProjection) continue;
    const int64_t width = spec.blocks * shape.hidden;
    if (spec.role == ParamRole::kRowInput) {
      check_tensor_arg(op, spec.name, *param, input, {rows, width});
    } else if (spec.role == ParamRole::kRecurrentMask) {
      check_tensor_arg(op, spec.name, *param, input, {shape.batch, shape.state});
    } else {
      check_tensor_arg(op, spec.name, *param, input, {width});
    }
  }
  return shape;
}

void check_defined(const std::string& op, const std::string& name, const at::Tensor& tensor) {
  TORCH_CHECK(tensor.defined(), op, ": expected ", name, " to be a tensor, got None");
}

void check_tensor_arg(const std::string& op, const std::string& name, const at::Tensor& tensor,
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

at::Tensor sum_biases(const OptionalTensor& a, const OptionalTensor& b) {
  if (a.has_value() && b.has_value()) return *a + *b;
  if (a.has_value()) return *a;
  if (b.has_value()) return *b;
  return at::Tensor();
}

at::Tensor grad_or_empty(const OptionalTensor& param, const at::Tensor& grad) {
  return param.has_value() ? grad : at::empty({0}, grad.options());
}

}  // namespace rnnkernels
