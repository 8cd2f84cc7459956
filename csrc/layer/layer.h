// The step loops of every layer operator: one forward and one backward, templated on the cell
// (csrc/kernels/traits.h) and the backend, in the manner of PyTorch's ATen RNN.cpp (a cell as a
// parameter of scan-like layers) and of rnnkernels/reference.py's _scan(cell).
//
// A Backend supplies the cell's pointwise step and the GEMMs (CPUBackend, csrc/cpu/backend.h;
// KernelBackend, csrc/cuda/backend.h):
//   template <typename Cell, typename T> static void forward(const StepForwardParams<T>&);
//   template <typename Cell, typename T> static void backward(const StepBackwardParams<T>&);
//   template <typename T> static void copy(T* dst, const T* src, int64_t count);
//   template <typename T> using RecurrentGemm = ...;  // as ATenRecurrentGemm (aten_gemm.h)
//   static at::Tensor addmm(const at::Tensor& bias, const at::Tensor& a, const at::Tensor& b);
//     // a [m, k] b [k, n] (+ bias [n] when defined) -> [m, n]; a and b may be transposed views,
//     // with rows (or columns) farther apart than their length
//   static at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& options);
//   static at::Tensor empty_rows(int64_t rows, int64_t width, const at::TensorOptions& options);
//     // [rows, width] with the row stride the backend's GEMMs read best, width or more: for the
//     // buffers a weight gradient reads transposed
//   template <typename F>
//   static void for_each_slice(const StepProblem& problem, const F& body);
//     // body(const StepSlice&) over slices of the step's work (below), which the backend may
//     // run concurrently, one thread each. How many slices, and of what, is the backend's choice.
// Everything else is ATen on the tensors' device; nothing here reads device memory, so there is
// no host synchronisation.
//
// The recipe (docs/DESIGN.md, "Data flow"): one GEMM projects the input of every step; per step
// one GEMM h_{t-1} W_hh^T into a preallocated buffer (none without a dense recurrence) and one
// fused pointwise pass, then the projection's GEMM if there is one; the backward walks the steps
// in reverse with one pointwise pass and one GEMM per step, then computes dx, dW_ih, dW_hh and
// the biases with one GEMM or reduction each over all rows. All buffers are allocated before the
// step loop; inside it only pointers move.
//
// Shapes: N rows (packed, time-major), I input size, H hidden size, G gates, R reserve slots, P
// state size (the projection size with a projection, else H), B = batch_sizes[0].
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "../kernels/params.h"
#include "../kernels/traits.h"
#include "layer_common.h"

namespace rnnkernels {

// The forward's results: output [N, P], the final states (h_n [B, P], c_n [B, H], ...), and
// reserve [N, R*H] ([0, R*H] without train; [0] for a cell that saves nothing).
struct LayerOutputs {
  at::Tensor output;
  std::vector<at::Tensor> states;
  at::Tensor reserve;
};

// The backward's results: the gradients of input, of the initial states and of every param (an
// empty tensor for an absent one).
struct LayerGrads {
  at::Tensor input;
  std::vector<at::Tensor> states;
  std::vector<at::Tensor> params;
};

// A step's size, from which a backend picks its threading (csrc/cpu/backend.h).
struct StepProblem {
  int64_t steps;         // T
  int64_t batch;         // B: rows of the widest step
  int64_t hidden;        // H
  int64_t gate_width;    // G*H: columns of the step's GEMM
  int64_t state_width;   // P: its inner dimension
  bool dense;            // whether a step has a GEMM at all
  bool separable_units;  // whether a batch of one may be split by hidden units (StepSlice)
  at::ScalarType dtype;  // the layer's: how fast its GEMMs run
};

// What one thread runs of every step of a layer: the batch rows [begin, end) and, of those, the
// hidden units [unit_begin, unit_end).
// - Slices of the batch take every unit. They are independent: a sequence's recurrence reads
//   only its own rows, so each slice walks every step of its rows alone.
// - Slices of the units, for a batch of one only (begin 0, end 1), share the row. A step's
//   recurrent GEMM reads all of h_{t-1} (forward) or all of the step's gate gradients
//   (backward), which every slice writes a part of: each step ends with sync(), a barrier
//   among them. Each slice's GEMM covers its own units (SliceRecurrentGemm), its pointwise pass
//   its own units of every gate and state, so only element-wise cells without a projection or a
//   recurrent mask qualify (StepProblem::separable_units).
struct StepSlice {
  int64_t begin, end;
  int64_t unit_begin, unit_end;
  std::function<void()> barrier;  // set for slices of the units, and only for them

  bool splits_units() const { return static_cast<bool>(barrier); }
  void sync() const {
    if (barrier) barrier();
  }
};

namespace layer_detail {

template <typename T>
T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// The bias the input GEMM adds once per row, by the cell's rule (traits' kBiasFold).
template <typename Cell>
at::Tensor folded_bias(const LayerArgs& args, int64_t hidden) {
  if constexpr (Cell::kBiasFold == BiasFold::kAllButHiddenLastGate) {
    if (!args.b_hh().has_value()) return sum_biases(args.b_ih(), std::nullopt);
    const int64_t kept = (Cell::kGates - 1) * hidden;
    const at::Tensor folded = args.b_hh()->narrow(0, 0, kept);
    if (!args.b_ih().has_value()) {
      return at::cat({folded, at::zeros({hidden}, folded.options())});
    }
    const at::Tensor& b_ih = *args.b_ih();
    return at::cat({b_ih.narrow(0, 0, kept) + folded, b_ih.narrow(0, kept, hidden)});
  } else if constexpr (Cell::kBiasFold == BiasFold::kAll) {
    return sum_biases(args.b_ih(), args.b_hh());
  } else {
    return at::Tensor();
  }
}

// The step's extra inputs (traits' kInputs): their tensors (undefined where absent), widths, and
// whether each is per row; and for each, whether it gets a gradient summed over the rows
// (add_input_grad), and into which of the LayerArgs params that goes.
struct StepInputs {
  std::vector<at::Tensor> tensors;
  std::vector<int64_t> widths;
  std::vector<bool> per_row;
  std::vector<int64_t> grad_of;  // index in LayerArgs::params, or -1: no gradient
};

template <typename Cell>
StepInputs step_inputs(const LayerArgs& args, int64_t hidden) {
  StepInputs inputs;
  for (const StepInputSpec& input : Cell::kInputs) {
    at::Tensor tensor;
    bool per_row = false;
    int64_t grad_of = -1;
    switch (input.source) {
      case InputSource::kHiddenBiasLastGate:
        if (args.b_hh().has_value()) {
          tensor = args.b_hh()->narrow(0, (Cell::kGates - 1) * hidden, hidden).contiguous();
        }
        break;
      case InputSource::kInputBias:
      case InputSource::kHiddenBias:
        grad_of = input.source == InputSource::kInputBias ? 2 : 3;
        tensor = args.params[grad_of].value_or(at::Tensor());
        break;
      case InputSource::kRecurrentWeight:
        tensor = args.w_hh();
        grad_of = 1;
        break;
      case InputSource::kParam: {
        const int64_t index = 4 + input.param;
        tensor = args.params[index].value_or(at::Tensor());
        per_row = Cell::kParams[input.param].role == ParamRole::kRowInput;
        if (!per_row) grad_of = index;
        break;
      }
    }
    inputs.widths.push_back(input.source == InputSource::kParam
                                ? Cell::kParams[input.param].blocks * hidden
                                : tensor.defined() ? tensor.numel() : hidden);
    inputs.tensors.push_back(tensor);
    inputs.per_row.push_back(per_row);
    inputs.grad_of.push_back(grad_of);
  }
  return inputs;
}

// What both directions' params share, filled from a zeroed struct.
// `offset`: the step's first packed row, where a per-row input's rows start.
template <typename T, typename Params>
Params step_params(int64_t rows, int64_t offset, int64_t hidden, int64_t gate_stride,
                   const StepSlice& slice, const StepInputs& inputs,
                   const std::vector<double>& scalars) {
  Params p = {};
  p.rows = rows;
  p.hidden = hidden;
  p.gate_stride = gate_stride;
  p.unit_begin = slice.unit_begin;
  p.unit_end = slice.unit_end;
  for (size_t i = 0; i < inputs.tensors.size(); ++i) {
    T* data = data_or_null<T>(inputs.tensors[i]);
    if (data != nullptr && inputs.per_row[i]) data += offset * inputs.widths[i];
    p.inputs[i] = {data, inputs.widths[i], inputs.per_row[i]};
  }
  for (size_t i = 0; i < scalars.size(); ++i) p.scalars[i] = scalars[i];
  return p;
}

// Copies h_{t-1} of step t's rows among the slice's rows into `h_prev` ([N, P], rows of step t):
// rows that continue come from the previous step's output rows, rows that start here from h0. A
// slice of the units copies its units (of the batch of one's row).
template <typename Backend, typename T>
void gather_previous_state(const StepSchedule& schedule, int64_t t, const StepSlice& slice,
                           const T* output, const T* h0, T* h_prev, int64_t width) {
  const int64_t begin = slice.begin;
  const int64_t rows = schedule.rows_in(t, begin, slice.end);
  const int64_t continuing = schedule.continuing_in(t, begin, slice.end);
  if (slice.splits_units()) {
    const T* src = continuing > 0 ? output + schedule.offset(schedule.previous(t)) * width : h0;
    Backend::copy(h_prev + schedule.offset(t) * width + slice.unit_begin,
                  src + slice.unit_begin, slice.unit_end - slice.unit_begin);
    return;
  }
  T* dst = h_prev + (schedule.offset(t) + begin) * width;
  if (continuing > 0) {
    Backend::copy(dst, output + (schedule.offset(schedule.previous(t)) + begin) * width,
                  continuing * width);
  }
  if (continuing < rows) {
    Backend::copy(dst + continuing * width, h0 + (begin + continuing) * width,
                  (rows - continuing) * width);
  }
}

// A slice's recurrent GEMM (forward: h_{t-1} W_hh^T; backward: dL/d hidden_gates W_hh, added to
// what the step left with `accumulate`), taking and giving whole rows. A slice of the units
// multiplies by its units' part of W_hh, views of it: the forward by their rows of each gate,
// one GEMM a gate, writing its units' columns of the gates; the backward by their columns,
// writing its units of dL/dh_{t-1}. A slice of the units has one row, which is what lets a
// GEMM write its columns of the row as if they were whole rows.
template <typename Backend, typename T>
class SliceRecurrentGemm {
  using Gemm = typename Backend::template RecurrentGemm<T>;

 public:
  SliceRecurrentGemm(const at::Tensor& w_hh, bool forward, bool accumulate, int64_t a_stride,
                     int64_t rows, int64_t steps, const StepSlice& slice, int64_t hidden) {
    const auto add = [&](const at::Tensor& weight, int64_t column) {
      parts_.push_back(
          {std::make_unique<Gemm>(weight, /*transposed=*/forward, a_stride, rows, steps,
                                  accumulate),
           column});
    };
    if (!slice.splits_units()) {
      add(w_hh, 0);
      return;
    }
    TORCH_INTERNAL_ASSERT(rows == 1, "a slice of the units has one row, got ", rows);
    const int64_t units = slice.unit_end - slice.unit_begin;
    if (!forward) {
      add(w_hh.narrow(1, slice.unit_begin, units), slice.unit_begin);
      return;
    }
    for (int64_t gate = 0; gate < w_hh.size(0) / hidden; ++gate) {
      const int64_t column = gate * hidden + slice.unit_begin;
      add(w_hh.narrow(0, column, units), column);
    }
  }

  void run(const T* a, T* c, int64_t rows) {
    for (Part& part : parts_) part.gemm->run(a, c + part.column, rows);
  }

 private:
  struct Part {
    std::unique_ptr<Gemm> gemm;
    int64_t column;  // where its results go in a row of the whole GEMM's
  };
  std::vector<Part> parts_;
};

// The per-step GEMMs of one slice: the recurrent one where the recurrence is dense and the
// projection's where there is one (h W_hr^T; dL/dh W_hr). Their left operands' row strides: the
// backward's are the strides of its gate gradients and of dL/dh.
template <typename Backend, typename T>
struct SliceGemms {
  std::optional<SliceRecurrentGemm<Backend, T>> recurrent;
  std::optional<typename Backend::template RecurrentGemm<T>> projection;

  SliceGemms(const LayerArgs& args, const OptionalTensor& w_hr, bool dense, bool forward,
             bool accumulate, const StepSlice& slice, int64_t steps, int64_t recurrent_stride,
             int64_t projection_stride, int64_t hidden) {
    const int64_t rows = slice.end - slice.begin;
    if (dense) {
      recurrent.emplace(args.w_hh(), forward, accumulate, recurrent_stride, rows, steps, slice,
                        hidden);
    }
    if (w_hr.has_value()) {
      projection.emplace(*w_hr, /*transposed=*/forward, projection_stride, rows, steps,
                         /*accumulate=*/false);
    }
  }
};

// The recurrent mask (ParamRole::kRecurrentMask) [B, P], where the cell takes one and it came:
// h_{t-1} times the mask enters the recurrent GEMM in place of h_{t-1}, in the forward and in
// dW_hh, and the GEMM's part of dL/dh_{t-1} is multiplied by it likewise. A slice's or step's
// rows [begin, begin + rows) are those batch rows (a step's rows are the first of the batch), and
// so are the mask's and the scratch buffer's rows it uses.
class RecurrentMask {
 public:
  RecurrentMask(const CellSignature& cell, const LayerArgs& args, int64_t batch, int64_t width) {
    const int64_t index = cell.param_index(ParamRole::kRecurrentMask);
    if (index >= 0 && args.params[index].has_value()) {
      mask_ = *args.params[index];
      scratch_ = at::empty({batch, width}, mask_.options());
    }
  }

  bool present() const { return mask_.defined(); }

  // Forward: the GEMM's input, h's rows (of h [B, P]) times the mask's, in the scratch rows.
  template <typename T>
  const T* masked(const at::Tensor& h, int64_t begin, int64_t rows) const {
    at::Tensor out = scratch(begin, rows);
    at::mul_out(out, h.narrow(0, begin, rows), mask(begin, rows));
    return out.data_ptr<T>();
  }
  // Backward: where the GEMM writes its dL/dh_{t-1}, the scratch rows; then carry() multiplies
  // it by the mask into `carried`'s rows, added to what the step left there with `accumulate`.
  template <typename T>
  T* gemm_output(int64_t begin) const {
    return scratch_.data_ptr<T>() + begin * scratch_.size(1);
  }
  void carry(const at::Tensor& carried, int64_t begin, int64_t rows, bool accumulate) const {
    at::Tensor out = carried.narrow(0, begin, rows);
    if (accumulate) {
      out.addcmul_(scratch(begin, rows), mask(begin, rows));
    } else {
      at::mul_out(out, scratch(begin, rows), mask(begin, rows));
    }
  }
  // `rows` [rows, P] (a step's h_{t-1}, for dW_hh) times the mask's rows, in place.
  void apply(at::Tensor rows, int64_t begin) const { rows.mul_(mask(begin, rows.size(0))); }
  // The mask's rows, as a differentiable recomputation multiplies them in (differentiable.h).
  at::Tensor mask(int64_t begin, int64_t rows) const { return mask_.narrow(0, begin, rows); }

 private:
  at::Tensor scratch(int64_t begin, int64_t rows) const { return scratch_.narrow(0, begin, rows); }

  at::Tensor mask_, scratch_;
};

// New buffers holding `tensors` (contiguous, as the checks require), copied by the backend:
// cloning each through ATen costs a single step more than its own work.
template <typename Backend>
std::vector<at::Tensor> copies(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> out;
  out.reserve(tensors.size());
  for (const at::Tensor& t : tensors) {
    out.push_back(at::empty(t.sizes(), t.options()));
    if (t.numel() > 0) {
      Backend::copy(static_cast<char*>(out.back().data_ptr()),
                    static_cast<const char*>(t.data_ptr()), static_cast<int64_t>(t.nbytes()));
    }
  }
  return out;
}

template <typename Cell>
constexpr bool has_projection() {
  for (const ParamSpec& param : Cell::kParams) {
    if (param.role == ParamRole::kProjection) return true;
  }
  return false;
}

template <typename Cell>
void check_traits() {
  static_assert(Cell::kStates.size() <= kMaxStates && Cell::kInputs.size() <= kMaxInputs &&
                    Cell::kScalars <= kMaxScalars,
                "raise kMaxStates, kMaxInputs or kMaxScalars (csrc/kernels/params.h)");
  static_assert(Cell::kRecurrence == Recurrence::kDense || Cell::kDirectHiddenGrad,
                "without a recurrent GEMM the step writes all of dL/dh_{t-1}");
  static_assert(!(has_projection<Cell>() && Cell::kDirectHiddenGrad),
                "a projection carries dL/dh at the projected width, where a direct part cannot go");
}

}  // namespace layer_detail

template <typename Cell, typename Backend>
LayerOutputs layer_forward(const LayerArgs& args, bool train) {
  using namespace layer_detail;
  check_traits<Cell>();
  const CellSignature& cell = cell_signature<Cell>();
  const LayerShape s = check_layer_args(cell.forward_op, cell, args);
  const StepSchedule schedule(args.batch_sizes, args.reverse);
  const int64_t H = s.hidden, G = Cell::kGates, R = Cell::kReserve;
  constexpr bool dense = Cell::kRecurrence == Recurrence::kDense;
  const int64_t projection = cell.param_index(ParamRole::kProjection);
  const OptionalTensor w_hr = projection >= 0 ? args.params[projection] : std::nullopt;
  const bool projected = w_hr.has_value();
  const auto options = args.input.options();

  const at::Tensor input_gates =
      Backend::addmm(folded_bias<Cell>(args, H), args.input, args.w_ih().t());  // [N, G*H]
  const StepInputs inputs = step_inputs<Cell>(args, H);
  at::Tensor output = Backend::empty({s.rows, s.state}, options);
  // [B, width] each, the initial states' copies; end as finals
  std::vector<at::Tensor> states = copies<Backend>(args.states);
  at::Tensor hidden_gates = dense ? at::empty({s.batch, G * H}, options) : at::Tensor();
  at::Tensor reserve = R > 0 ? Backend::empty({train ? s.rows : 0, R * H}, options)
                             : at::empty({0}, options);
  at::Tensor unprojected = projected ? at::empty({s.batch, H}, options) : at::Tensor();
  const RecurrentMask mask(cell, args, s.batch, s.state);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.input.scalar_type(),
                                  "layer_forward", [&] {
    const StepProblem problem{schedule.steps(), s.batch, H, G * H, s.state, dense,
                              !Cell::kRowwise && !projected && !mask.present(),
                              args.input.scalar_type()};
    Backend::for_each_slice(problem, [&](const StepSlice& slice) {
      const int64_t begin = slice.begin, end = slice.end;
      SliceGemms<Backend, scalar_t> gemms(args, w_hr, dense, /*forward=*/true,
                                          /*accumulate=*/false, slice, schedule.steps(),
                                          s.state, H, H);
      scalar_t* h_rows = states[0].data_ptr<scalar_t>() + begin * s.state;
      scalar_t* unprojected_rows = projected ? unprojected.data_ptr<scalar_t>() + begin * H
                                             : nullptr;
      scalar_t* hidden_gate_rows = dense ? hidden_gates.data_ptr<scalar_t>() + begin * G * H
                                         : nullptr;
      for (int64_t k = 0; k < schedule.steps(); ++k) {
        const int64_t t = schedule.step(k);
        const int64_t rows = schedule.rows_in(t, begin, end);
        if (rows == 0) continue;
        const int64_t offset = schedule.offset(t) + begin;
        if (dense) {
          // h_{t-1}: the slice's rows of h, which the step overwrites. A slice of the units
          // reads all of the row, which the other slices overwrite meanwhile, so it reads h0 as
          // it came and then the previous step's output.
          const scalar_t* h_previous =
              !slice.splits_units() ? (mask.present()
                                           ? mask.masked<scalar_t>(states[0], begin, rows)
                                           : h_rows)
              : k == 0 ? args.states[0].data_ptr<scalar_t>()
                       : output.data_ptr<scalar_t>() +
                             schedule.offset(schedule.previous(t)) * s.state;
          gemms.recurrent->run(h_previous, hidden_gate_rows, rows);
        }
        auto p = step_params<scalar_t, StepForwardParams<scalar_t>>(
            rows, offset, H, G * H, slice, inputs, args.scalars);
        p.input_gates = input_gates.data_ptr<scalar_t>() + offset * G * H;
        p.hidden_gates = hidden_gate_rows;
        p.states[0] = projected ? unprojected_rows : h_rows;
        for (size_t j = 1; j < states.size(); ++j) {
          p.states[j] = states[j].data_ptr<scalar_t>() + begin * H;
        }
        p.output = projected ? nullptr : output.data_ptr<scalar_t>() + offset * H;
        p.reserve = train && R > 0 ? reserve.data_ptr<scalar_t>() + offset * R * H : nullptr;
        Backend::template forward<Cell>(p);
        if (projected) {
          scalar_t* out_rows = output.data_ptr<scalar_t>() + offset * s.state;
          gemms.projection->run(unprojected_rows, out_rows, rows);
          Backend::copy(h_rows, out_rows, rows * s.state);
        }
        slice.sync();
      }
    });
  });
  return {output, states, reserve};
}

// grads: dL/d output [N, P] and dL/d each final state; output and reserve as the forward (with
// train) returned them.
template <typename Cell, typename Backend>
LayerGrads layer_backward(const LayerArgs& args, const at::Tensor& grad_output,
                          const std::vector<at::Tensor>& grad_states, const at::Tensor& output,
                          const at::Tensor& reserve) {
  using namespace layer_detail;
  check_traits<Cell>();
  const CellSignature& cell = cell_signature<Cell>();
  const std::string& op = cell.backward_op;
  const LayerShape s = check_layer_args(op, cell, args);
  const int64_t H = s.hidden, G = Cell::kGates, R = Cell::kReserve;
  constexpr bool dense = Cell::kRecurrence == Recurrence::kDense;
  const at::Tensor& input = args.input;
  check_tensor_arg(op, "grad_output", grad_output, input, {s.rows, s.state});
  TORCH_CHECK(grad_states.size() == args.states.size(), op, ": expected ", args.states.size(),
              " state gradients, got ", grad_states.size());
  for (size_t j = 0; j < grad_states.size(); ++j) {
    check_tensor_arg(op, "grad_" + cell.states[j] + "_n", grad_states[j], input,
                     {s.batch, j == 0 ? s.state : H});
  }
  check_tensor_arg(op, "output", output, input, {s.rows, s.state});
  if (R > 0) {
    check_defined(op, "reserve", reserve);
    TORCH_CHECK(reserve.numel() > 0, op,
                ": reserve is empty: the forward ran with train=False, which saves nothing for "
                "the backward");
    check_tensor_arg(op, "reserve", reserve, input, {s.rows, R * H});
  }
  const StepSchedule schedule(args.batch_sizes, args.reverse);
  const int64_t projection = cell.param_index(ParamRole::kProjection);
  const OptionalTensor w_hr = projection >= 0 ? args.params[projection] : std::nullopt;
  const bool projected = w_hr.has_value();
  const auto options = input.options();

  const StepInputs inputs = step_inputs<Cell>(args, H);
  at::Tensor grad_input_gates = Backend::empty_rows(s.rows, G * H, options);
  at::Tensor grad_hidden_gates =
      Cell::kSeparateHiddenGrad ? Backend::empty_rows(s.rows, G * H, options) : grad_input_gates;
  const int64_t gate_stride = grad_input_gates.stride(0);
  TORCH_INTERNAL_ASSERT(grad_hidden_gates.stride(0) == gate_stride);
  at::Tensor h_prev = Backend::empty({s.rows, s.state}, options);  // h_{t-1} of every row
  // [B, width] carried dL/d state, ending as the initial's
  std::vector<at::Tensor> grads = copies<Backend>(grad_states);
  // Each batch row's part of dL/d a per-layer input that is a param (w_hh without a dense
  // recurrence, a kStepParam), added to step after step and summed over the rows at the end.
  std::vector<at::Tensor> input_grads(inputs.tensors.size());
  for (size_t i = 0; i < inputs.tensors.size(); ++i) {
    if (inputs.grad_of[i] >= 0 && inputs.tensors[i].defined()) {
      input_grads[i] = at::zeros({s.batch, inputs.widths[i]}, options);
    }
  }
  // With a projection, dL/dh_t (width P) goes through W_hr to the cell (width H) by a GEMM; the
  // per-row dL/dh_t and unprojected h_t are kept for dW_hr.
  at::Tensor grad_h_rows =
      projected ? Backend::empty_rows(s.rows, s.state, options) : at::Tensor();
  at::Tensor h_unprojected = projected ? at::empty({s.rows, H}, options) : at::Tensor();
  at::Tensor grad_unprojected = projected ? at::empty({s.batch, H}, options) : at::Tensor();
  const RecurrentMask mask(cell, args, s.batch, s.state);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "layer_backward", [&] {
    const StepProblem problem{schedule.steps(), s.batch, H, G * H, s.state, dense,
                              !Cell::kRowwise && !projected && !mask.present(),
                              input.scalar_type()};
    Backend::for_each_slice(problem, [&](const StepSlice& slice) {
      const int64_t begin = slice.begin, end = slice.end;
      // Accumulates where the pointwise pass leaves a part of dL/dh_{t-1}, unless a mask comes
      // between.
      SliceGemms<Backend, scalar_t> gemms(
          args, w_hr, dense, /*forward=*/false, Cell::kDirectHiddenGrad && !mask.present(),
          slice, schedule.steps(), gate_stride, projected ? grad_h_rows.stride(0) : s.state, H);
      scalar_t* grad_h_carried = grads[0].data_ptr<scalar_t>() + begin * s.state;
      for (int64_t k = schedule.steps() - 1; k >= 0; --k) {
        const int64_t t = schedule.step(k);
        const int64_t rows = schedule.rows_in(t, begin, end);
        if (rows == 0) continue;
        const int64_t offset = schedule.offset(t) + begin;
        const int64_t continuing = schedule.continuing_in(t, begin, end);
        gather_previous_state<Backend>(schedule, t, slice, output.data_ptr<scalar_t>(),
                                       args.states[0].data_ptr<scalar_t>(),
                                       h_prev.data_ptr<scalar_t>(), s.state);
        auto p = step_params<scalar_t, StepBackwardParams<scalar_t>>(
            rows, offset, H, gate_stride, slice, inputs, args.scalars);
        p.reserve = R > 0 ? reserve.data_ptr<scalar_t>() + offset * R * H : nullptr;
        p.continuing = continuing;
        p.reserve_previous =
            R > 0 && continuing > 0
                ? reserve.data_ptr<scalar_t>() +
                      (schedule.offset(schedule.previous(t)) + begin) * R * H
                : nullptr;
        for (size_t j = 1; j < grads.size(); ++j) {
          p.initial[j] = args.states[j].data_ptr<scalar_t>() + begin * H;
          p.grad_states[j] = grads[j].data_ptr<scalar_t>() + begin * H;
        }
        p.grad_input_gates = grad_input_gates.data_ptr<scalar_t>() + offset * gate_stride;
        p.grad_hidden_gates = grad_hidden_gates.data_ptr<scalar_t>() + offset * gate_stride;
        for (size_t i = 0; i < input_grads.size(); ++i) {
          p.grad_inputs[i] = input_grads[i].defined()
                                 ? input_grads[i].data_ptr<scalar_t>() + begin * inputs.widths[i]
                                 : nullptr;
        }
        if (projected) {
          at::Tensor grad_h_step = grad_h_rows.narrow(0, offset, rows);
          at::add_out(grad_h_step, grads[0].narrow(0, begin, rows),
                      grad_output.narrow(0, offset, rows));
          scalar_t* grad_unprojected_rows = grad_unprojected.data_ptr<scalar_t>() + begin * H;
          gemms.projection->run(grad_h_step.data_ptr<scalar_t>(), grad_unprojected_rows, rows);
          p.grad_states[0] = grad_unprojected_rows;
          p.unprojected = h_unprojected.data_ptr<scalar_t>() + offset * H;
        } else {
          p.grad_states[0] = grad_h_carried;
          p.grad_output = grad_output.data_ptr<scalar_t>() + offset * H;
          p.output = output.data_ptr<scalar_t>() + offset * H;
          p.h_previous = h_prev.data_ptr<scalar_t>() + offset * H;
        }
        Backend::template backward<Cell>(p);
        // The step's gate gradients are whole: a slice of the units multiplies all of them.
        slice.sync();
        if (dense && mask.present()) {
          gemms.recurrent->run(p.grad_hidden_gates, mask.gemm_output<scalar_t>(begin), rows);
          mask.carry(grads[0], begin, rows, Cell::kDirectHiddenGrad);
          mask.apply(h_prev.narrow(0, offset, rows), begin);
        } else if (dense) {
          gemms.recurrent->run(p.grad_hidden_gates, grad_h_carried, rows);
        }
      }
    });
  });

  LayerGrads result;
  result.input = Backend::addmm({}, grad_input_gates, args.w_ih());
  result.states = grads;
  // dW = g^T x.
  result.params = {Backend::addmm({}, grad_input_gates.t(), input),
                   dense ? Backend::addmm({}, grad_hidden_gates.t(), h_prev) : at::Tensor()};
  if constexpr (Cell::kBiasFold != BiasFold::kNone) {
    // A folded bias adds to every row's pre-activation: its gradient is their sum.
    const at::Tensor grad_b_ih = grad_input_gates.sum(0);
    const at::Tensor grad_b_hh =
        Cell::kSeparateHiddenGrad ? grad_hidden_gates.sum(0) : grad_b_ih;
    result.params.push_back(grad_or_empty(args.b_ih(), grad_b_ih));
    // Never the same tensor twice: an operator's results must not alias.
    result.params.push_back(grad_or_empty(
        args.b_hh(),
        args.b_ih().has_value() && !Cell::kSeparateHiddenGrad ? grad_b_hh.clone() : grad_b_hh));
  }
  // The projection's, those the steps added up, and for the rest (absent params, per-row inputs)
  // an empty tensor.
  result.params.resize(args.params.size());
  if (projected) {
    result.params[projection] = Backend::addmm({}, grad_h_rows.t(), h_unprojected);
  }
  for (size_t i = 0; i < input_grads.size(); ++i) {
    if (input_grads[i].defined()) result.params[inputs.grad_of[i]] = input_grads[i].sum(0);
  }
  for (at::Tensor& grad : result.params) {
    if (!grad.defined()) grad = at::empty({0}, options);
  }
  return result;
}

}  // namespace rnnkernels
