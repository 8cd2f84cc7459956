// The layer operators' step loops, written once for both backends.
//
// A Backend supplies the fused pointwise step of each cell (csrc/cpu/pointwise.h runs it on the
// CPU, csrc/cuda/ launches the CUDA kernels on the current stream) and its GEMMs:
//   template <typename T> static void lstm_forward(const LSTMForwardParams<T>&);
//   template <typename T> static void lstm_backward(const LSTMBackwardParams<T>&);
//   template <typename T> static void gru_forward(const GRUForwardParams<T>&);
//   template <typename T> static void gru_backward(const GRUBackwardParams<T>&);
//   template <typename T, bool Relu> static void rnn_forward(const RNNForwardParams<T>&);
//   template <typename T, bool Relu> static void rnn_backward(const RNNBackwardParams<T>&);
//   template <typename T> static void copy(T* dst, const T* src, int64_t count);
//   template <typename T> using RecurrentGemm = ...;  // as ATenRecurrentGemm (aten_gemm.h)
//   static at::Tensor addmm(const at::Tensor& bias, const at::Tensor& a, const at::Tensor& b);
//     // a [m, k] b [k, n] (+ bias [n] when defined) -> [m, n]; a and b may be transposed views
//   template <typename F>
//   static void for_each_batch_slice(int64_t batch, int64_t step_macs, const F& body);
//     // body(begin, end) over slices of the batch rows [0, batch), which may run concurrently;
//     // step_macs: multiply-adds of one step's recurrent GEMM over the whole batch (the same
//     // for the forward and the backward, whose per-step GEMM has the transposed shape)
// Everything else is ATen on the tensors' device; nothing here reads device memory, so there is
// no host synchronisation.
//
// The recipe (DESIGN.md): one GEMM projects the input of every step; per step one GEMM
// h_{t-1} W_hh^T into a preallocated buffer and one fused pointwise pass; the backward walks the
// steps in reverse with one pointwise pass and one GEMM per step, then computes dx, dW_ih, dW_hh
// and the biases with one GEMM or reduction each over all rows. All buffers are allocated before
// the step loop; inside it only views are taken.
//
// A sequence's recurrence reads only its own rows, so the step loops run over a slice of the
// batch rows [begin, end), and the Backend may run several slices at once: on the CPU each thread
// walks all steps of its own slice, with no synchronisation between steps.
//
// Shapes: N rows (packed, time-major), I input size, H hidden size, P state size (the projection
// size of a projected LSTM, else H), B = batch_sizes[0].
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <optional>
#include <string>
#include <tuple>

#include "aten_gemm.h"
#include "kernels/params.h"
#include "layer_common.h"

namespace rnnkernels {

template <typename T>
T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// Copies h_{t-1} of step t's rows among the batch rows [begin, end) into `h_prev` ([N, P], rows
// of step t), for dW_hh: rows that continue come from the previous step's output rows, rows that
// start here from h0.
template <typename Backend, typename T>
void gather_previous_state(const StepSchedule& schedule, int64_t t, int64_t begin, int64_t end,
                           const T* output, const T* h0, T* h_prev, int64_t width) {
  const int64_t rows = schedule.rows_in(t, begin, end);
  const int64_t continuing = schedule.continuing_in(t, begin, end);
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


// Returns output [N, P], h_n [B, P], c_n [B, H], reserve [N, 5H] (i, f, g, o, c per row; [0] when
// !train).
template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer(
    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
    const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
    const std::optional<at::Tensor>& w_hr, bool reverse, bool train) {
  const LayerShape s =
      check_layer_args("lstm_layer", 4, input, batch_sizes, h0, &c0, w_ih, w_hh, b_ih, b_hh, w_hr);
  const StepSchedule schedule(batch_sizes, reverse);
  const int64_t H = s.hidden;
  const bool projected = w_hr.has_value();

  // LSTM adds both biases at the same place, so they fold into the input projection.
  const at::Tensor xproj = Backend::addmm(sum_biases(b_ih, b_hh), input, w_ih.t());  // [N, 4H]
  at::Tensor output = at::empty({s.rows, s.state}, input.options());
  at::Tensor h = h0.clone();  // [B, P] state, ends as h_n
  at::Tensor c = c0.clone();  // [B, H] state, ends as c_n
  at::Tensor hproj = at::empty({s.batch, 4 * H}, input.options());
  at::Tensor reserve = at::empty({train ? s.rows : 0, 5 * H}, input.options());
  at::Tensor h_unprojected = projected ? at::empty({s.batch, H}, input.options()) : at::Tensor();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "lstm_layer", [&] {
    using Gemm = typename Backend::template RecurrentGemm<scalar_t>;
    const int64_t step_macs = s.batch * 4 * H * s.state;
    Backend::for_each_batch_slice(s.batch, step_macs, [&](int64_t begin, int64_t end) {
      Gemm recurrent(w_hh, /*transposed=*/true, end - begin, schedule.steps(),
                     /*accumulate=*/false);
      std::optional<Gemm> projection;
      if (projected) {
        projection.emplace(*w_hr, /*transposed=*/true, end - begin, schedule.steps(),
                           /*accumulate=*/false);
      }
      scalar_t* h_rows = h.data_ptr<scalar_t>() + begin * s.state;
      scalar_t* h_unprojected_rows = projected ? h_unprojected.data_ptr<scalar_t>() + begin * H
                                               : nullptr;
      scalar_t* hproj_rows = hproj.data_ptr<scalar_t>() + begin * 4 * H;
      for (int64_t k = 0; k < schedule.steps(); ++k) {
        const int64_t t = schedule.step(k);
        const int64_t rows = schedule.rows_in(t, begin, end);
        if (rows == 0) continue;
        const int64_t offset = schedule.offset(t) + begin;
        recurrent.run(h_rows, hproj_rows, rows);
        LSTMForwardParams<scalar_t> p;
        p.batch = rows;
        p.hidden = H;
        p.xproj = xproj.data_ptr<scalar_t>() + offset * 4 * H;
        p.hproj = hproj_rows;
        p.c = c.data_ptr<scalar_t>() + begin * H;
        p.h = projected ? h_unprojected_rows : h_rows;
        p.output = projected ? nullptr : output.data_ptr<scalar_t>() + offset * H;
        p.reserve = train ? reserve.data_ptr<scalar_t>() + offset * 5 * H : nullptr;
        Backend::template lstm_forward<scalar_t>(p);
        if (projected) {
          scalar_t* out_rows = output.data_ptr<scalar_t>() + offset * s.state;
          projection->run(h_unprojected_rows, out_rows, rows);
          Backend::copy(h_rows, out_rows, rows * s.state);
        }
      }
    });
  });
  return {output, h, c, reserve};
}

// Returns grad_input, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_w_hr;
// the gradient of an absent bias or w_hr is an empty tensor.
template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
lstm_layer_backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                    const at::Tensor& grad_c_n, const at::Tensor& input,
                    const at::Tensor& batch_sizes, const at::Tensor& h0, const at::Tensor& c0,
                    const at::Tensor& w_ih, const at::Tensor& w_hh,
                    const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
                    const std::optional<at::Tensor>& w_hr, const at::Tensor& output,
                    const at::Tensor& reserve, bool reverse) {
  constexpr const char* op = "lstm_layer_backward";
  const LayerShape s =
      check_layer_args(op, 4, input, batch_sizes, h0, &c0, w_ih, w_hh, b_ih, b_hh, w_hr);
  const int64_t H = s.hidden;
  check_tensor_arg(op, "grad_output", grad_output, input, {s.rows, s.state});
  check_tensor_arg(op, "grad_h_n", grad_h_n, input, {s.batch, s.state});
  check_tensor_arg(op, "grad_c_n", grad_c_n, input, {s.batch, H});
  check_tensor_arg(op, "output", output, input, {s.rows, s.state});
  TORCH_CHECK(reserve.defined(), op, ": expected reserve to be a tensor, got None");
  TORCH_CHECK(reserve.numel() > 0, op,
              ": reserve is empty: the forward ran with train=False, which saves nothing for "
              "the backward");
  check_tensor_arg(op, "reserve", reserve, input, {s.rows, 5 * H});
  const StepSchedule schedule(batch_sizes, reverse);
  const bool projected = w_hr.has_value();

  at::Tensor grad_gates = at::empty({s.rows, 4 * H}, input.options());
  at::Tensor h_prev = at::empty({s.rows, s.state}, input.options());  // h_{t-1} of every row
  at::Tensor grad_h = grad_h_n.clone();  // [B, P] carried dL/dh, ends as grad_h0
  at::Tensor grad_c = grad_c_n.clone();  // [B, H] carried dL/dc, ends as grad_c0
  // With a projection, dL/dh_t (width P) goes through W_hr to the cell (width H) by a GEMM; the
  // per-row dL/dh_t and unprojected h_t are kept for dW_hr.
  at::Tensor grad_h_rows = projected ? at::empty({s.rows, s.state}, input.options()) : at::Tensor();
  at::Tensor h_unprojected = projected ? at::empty({s.rows, H}, input.options()) : at::Tensor();
  at::Tensor grad_h_unprojected = projected ? at::empty({s.batch, H}, input.options()) : at::Tensor();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), op, [&] {
    using Gemm = typename Backend::template RecurrentGemm<scalar_t>;
    const int64_t step_macs = s.batch * 4 * H * s.state;
    Backend::for_each_batch_slice(s.batch, step_macs, [&](int64_t begin, int64_t end) {
      Gemm recurrent(w_hh, /*transposed=*/false, end - begin, schedule.steps(),
                     /*accumulate=*/false);
      std::optional<Gemm> projection;
      if (projected) {
        projection.emplace(*w_hr, /*transposed=*/false, end - begin, schedule.steps(),
                           /*accumulate=*/false);
      }
      scalar_t* grad_h_carried = grad_h.data_ptr<scalar_t>() + begin * s.state;
      for (int64_t k = schedule.steps() - 1; k >= 0; --k) {
        const int64_t t = schedule.step(k);
        const int64_t rows = schedule.rows_in(t, begin, end);
        if (rows == 0) continue;
        const int64_t offset = schedule.offset(t) + begin;
        const int64_t continuing = schedule.continuing_in(t, begin, end);
        gather_previous_state<Backend>(schedule, t, begin, end, output.data_ptr<scalar_t>(),
                                       h0.data_ptr<scalar_t>(), h_prev.data_ptr<scalar_t>(),
                                       s.state);
        LSTMBackwardParams<scalar_t> p;
        p.batch = rows;
        p.hidden = H;
        p.batch_continuing = continuing;
        p.reserve = reserve.data_ptr<scalar_t>() + offset * 5 * H;
        p.reserve_prev =
            continuing > 0 ? reserve.data_ptr<scalar_t>() +
                                 (schedule.offset(schedule.previous(t)) + begin) * 5 * H
                           : nullptr;
        p.c0 = c0.data_ptr<scalar_t>() + begin * H;
        p.grad_c = grad_c.data_ptr<scalar_t>() + begin * H;
        p.grad_gates = grad_gates.data_ptr<scalar_t>() + offset * 4 * H;
        if (projected) {
          at::Tensor grad_h_step = grad_h_rows.narrow(0, offset, rows);
          at::add_out(grad_h_step, grad_h.narrow(0, begin, rows),
                      grad_output.narrow(0, offset, rows));
          scalar_t* grad_h_unprojected_rows = grad_h_unprojected.data_ptr<scalar_t>() + begin * H;
          projection->run(grad_h_step.data_ptr<scalar_t>(), grad_h_unprojected_rows, rows);
          p.grad_h = grad_h_unprojected_rows;
          p.grad_output = nullptr;
          p.h = h_unprojected.data_ptr<scalar_t>() + offset * H;
        } else {
          p.grad_h = grad_h_carried;
          p.grad_output = grad_output.data_ptr<scalar_t>() + offset * H;
          p.h = nullptr;
        }
        Backend::template lstm_backward<scalar_t>(p);
        recurrent.run(p.grad_gates, grad_h_carried, rows);
      }
    });
  });

  const at::Tensor grad_gates_t = grad_gates.t();
  const at::Tensor grad_bias = grad_gates.sum(0);
  return {Backend::addmm({}, grad_gates, w_ih),
          grad_h,
          grad_c,
          Backend::addmm({}, grad_gates_t, input),
          Backend::addmm({}, grad_gates_t, h_prev),
          grad_or_empty(b_ih, grad_bias),
          grad_or_empty(b_hh, b_ih.has_value() ? grad_bias.clone() : grad_bias),
          projected ? Backend::addmm({}, grad_h_rows.t(), h_unprojected)
                    : at::empty({0}, input.options())};
}

// Returns output [N, H], h_n [B, H], reserve [N, 4H] (r, z, n, W_hn h + b_hn per row; [0] when
// !train).
template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_layer(
    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
    const std::optional<at::Tensor>& b_hh, bool reverse, bool train) {
  const LayerShape s = check_layer_args("gru_layer", 3, input, batch_sizes, h0, nullptr, w_ih,
                                        w_hh, b_ih, b_hh, std::nullopt);
  const StepSchedule schedule(batch_sizes, reverse);
  const int64_t H = s.hidden;

  // b_hr and b_hz add where b_ir and b_iz do; b_hn sits inside r * (W_hn h + b_hn) and stays apart.
  std::optional<at::Tensor> b_hh_rz;
  at::Tensor b_hn;
  if (b_hh.has_value()) {
    b_hh_rz = at::cat({b_hh->narrow(0, 0, 2 * H), at::zeros({H}, b_hh->options())});
    b_hn = b_hh->narrow(0, 2 * H, H).contiguous();
  }
  const at::Tensor xproj = Backend::addmm(sum_biases(b_ih, b_hh_rz), input, w_ih.t());  // [N, 3H]
  at::Tensor output = at::empty({s.rows, H}, input.options());
  at::Tensor h = h0.clone();  // [B, H] state, ends as h_n
  at::Tensor hproj = at::empty({s.batch, 3 * H}, input.options());
  at::Tensor reserve = at::empty({train ? s.rows : 0, 4 * H}, input.options());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "gru_layer", [&] {
    Backend::for_each_batch_slice(s.batch, s.batch * 3 * H * H, [&](int64_t begin, int64_t end) {
      typename Backend::template RecurrentGemm<scalar_t> recurrent(
          w_hh, /*transposed=*/true, end - begin, schedule.steps(), /*accumulate=*/false);
      scalar_t* h_rows = h.data_ptr<scalar_t>() + begin * H;
      scalar_t* hproj_rows = hproj.data_ptr<scalar_t>() + begin * 3 * H;
      for (int64_t k = 0; k < schedule.steps(); ++k) {
        const int64_t t = schedule.step(k);
        const int64_t rows = schedule.rows_in(t, begin, end);
        if (rows == 0) continue;
        const int64_t offset = schedule.offset(t) + begin;
        recurrent.run(h_rows, hproj_rows, rows);
        GRUForwardParams<scalar_t> p;
        p.batch = rows;
        p.hidden = H;
        p.xproj = xproj.data_ptr<scalar_t>() + offset * 3 * H;
        p.hproj = hproj_rows;
        p.b_hn = data_or_null<scalar_t>(b_hn);
        p.h = h_rows;
        p.output = output.data_ptr<scalar_t>() + offset * H;
        p.reserve = train ? reserve.data_ptr<scalar_t>() + offset * 4 * H : nullptr;
        Backend::template gru_forward<scalar_t>(p);
      }
    });
  });
  return {output, h, reserve};
}

// Returns grad_input, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh (empty when absent).
template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gru_layer_backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                   const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
                   const at::Tensor& w_ih, const at::Tensor& w_hh,
                   const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
                   const at::Tensor& output, const at::Tensor& reserve, bool reverse) {
  constexpr const char* op = "gru_layer_backward";
  const LayerShape s = check_layer_args(op, 3, input, batch_sizes, h0, nullptr, w_ih, w_hh, b_ih,
                                        b_hh, std::nullopt);
  const int64_t H = s.hidden;
  check_tensor_arg(op, "grad_output", grad_output, input, {s.rows, H});
  check_tensor_arg(op, "grad_h_n", grad_h_n, input, {s.batch, H});
  check_tensor_arg(op, "output", output, input, {s.rows, H});
  TORCH_CHECK(reserve.defined(), op, ": expected reserve to be a tensor, got None");
  TORCH_CHECK(reserve.numel() > 0, op,
              ": reserve is empty: the forward ran with train=False, which saves nothing for "
              "the backward");
  check_tensor_arg(op, "reserve", reserve, input, {s.rows, 4 * H});
  const StepSchedule schedule(batch_sizes, reverse);

  at::Tensor grad_gates_x = at::empty({s.rows, 3 * H}, input.options());
  at::Tensor grad_gates_h = at::empty({s.rows, 3 * H}, input.options());
  at::Tensor h_prev = at::empty({s.rows, H}, input.options());
  at::Tensor grad_h = grad_h_n.clone();  // [B, H] carried dL/dh, ends as grad_h0

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), op, [&] {
    Backend::for_each_batch_slice(s.batch, s.batch * 3 * H * H, [&](int64_t begin, int64_t end) {
      // Accumulates: the pointwise pass leaves the part of dL/dh_{t-1} that bypasses W_hh there.
      typename Backend::template RecurrentGemm<scalar_t> recurrent(
          w_hh, /*transposed=*/false, end - begin, schedule.steps(), /*accumulate=*/true);
      scalar_t* grad_h_carried = grad_h.data_ptr<scalar_t>() + begin * H;
      for (int64_t k = schedule.steps() - 1; k >= 0; --k) {
        const int64_t t = schedule.step(k);
        const int64_t rows = schedule.rows_in(t, begin, end);
        if (rows == 0) continue;
        const int64_t offset = schedule.offset(t) + begin;
        gather_previous_state<Backend>(schedule, t, begin, end, output.data_ptr<scalar_t>(),
                                       h0.data_ptr<scalar_t>(), h_prev.data_ptr<scalar_t>(),
                                       s.state);
        GRUBackwardParams<scalar_t> p;
        p.batch = rows;
        p.hidden = H;
        p.reserve = reserve.data_ptr<scalar_t>() + offset * 4 * H;
        p.h_prev = h_prev.data_ptr<scalar_t>() + offset * H;
        p.grad_output = grad_output.data_ptr<scalar_t>() + offset * H;
        p.grad_h = grad_h_carried;
        p.grad_gates_x = grad_gates_x.data_ptr<scalar_t>() + offset * 3 * H;
        p.grad_gates_h = grad_gates_h.data_ptr<scalar_t>() + offset * 3 * H;
        Backend::template gru_backward<scalar_t>(p);
        recurrent.run(p.grad_gates_h, grad_h_carried, rows);
      }
    });
  });

  return {Backend::addmm({}, grad_gates_x, w_ih),
          grad_h,
          Backend::addmm({}, grad_gates_x.t(), input),
          Backend::addmm({}, grad_gates_h.t(), h_prev),
          grad_or_empty(b_ih, grad_gates_x.sum(0)),
          grad_or_empty(b_hh, grad_gates_h.sum(0))};
}

inline bool is_relu(const char* op, const std::string& nonlinearity) {
  TORCH_CHECK(nonlinearity == "tanh" || nonlinearity == "relu", op,
              ": expected nonlinearity 'tanh' or 'relu', got '", nonlinearity, "'");
  return nonlinearity == "relu";
}

// Returns output [N, H], h_n [B, H], reserve (always [0]: the backward needs only the output).
template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor> rnn_layer(
    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
    const std::optional<at::Tensor>& b_hh, c10::string_view nonlinearity, bool reverse,
    bool train) {
  const bool relu = is_relu("rnn_layer", std::string(nonlinearity));
  const LayerShape s = check_layer_args("rnn_layer", 1, input, batch_sizes, h0, nullptr, w_ih,
                                        w_hh, b_ih, b_hh, std::nullopt);
  const StepSchedule schedule(batch_sizes, reverse);
  const int64_t H = s.hidden;

  const at::Tensor xproj = Backend::addmm(sum_biases(b_ih, b_hh), input, w_ih.t());  // [N, H]
  at::Tensor output = at::empty({s.rows, H}, input.options());
  at::Tensor h = h0.clone();  // [B, H] state, ends as h_n
  at::Tensor hproj = at::empty({s.batch, H}, input.options());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "rnn_layer", [&] {
    Backend::for_each_batch_slice(s.batch, s.batch * H * H, [&](int64_t begin, int64_t end) {
      typename Backend::template RecurrentGemm<scalar_t> recurrent(
          w_hh, /*transposed=*/true, end - begin, schedule.steps(), /*accumulate=*/false);
      scalar_t* h_rows = h.data_ptr<scalar_t>() + begin * H;
      scalar_t* hproj_rows = hproj.data_ptr<scalar_t>() + begin * H;
      for (int64_t k = 0; k < schedule.steps(); ++k) {
        const int64_t t = schedule.step(k);
        const int64_t rows = schedule.rows_in(t, begin, end);
        if (rows == 0) continue;
        const int64_t offset = schedule.offset(t) + begin;
        recurrent.run(h_rows, hproj_rows, rows);
        RNNForwardParams<scalar_t> p;
        p.batch = rows;
        p.hidden = H;
        p.xproj = xproj.data_ptr<scalar_t>() + offset * H;
        p.hproj = hproj_rows;
        p.h = h_rows;
        p.output = output.data_ptr<scalar_t>() + offset * H;
        if (relu) {
          Backend::template rnn_forward<scalar_t, true>(p);
        } else {
          Backend::template rnn_forward<scalar_t, false>(p);
        }
      }
    });
  });
  return {output, h, at::empty({0}, input.options())};
}

// Returns grad_input, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh (empty when absent).
template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
rnn_layer_backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                   const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
                   const at::Tensor& w_ih, const at::Tensor& w_hh,
                   const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
                   c10::string_view nonlinearity, const at::Tensor& output, bool reverse) {
  constexpr const char* op = "rnn_layer_backward";
  const bool relu = is_relu(op, std::string(nonlinearity));
  const LayerShape s = check_layer_args(op, 1, input, batch_sizes, h0, nullptr, w_ih, w_hh, b_ih,
                                        b_hh, std::nullopt);
  const int64_t H = s.hidden;
  check_tensor_arg(op, "grad_output", grad_output, input, {s.rows, H});
  check_tensor_arg(op, "grad_h_n", grad_h_n, input, {s.batch, H});
  check_tensor_arg(op, "output", output, input, {s.rows, H});
  const StepSchedule schedule(batch_sizes, reverse);

  at::Tensor grad_pre = at::empty({s.rows, H}, input.options());
  at::Tensor h_prev = at::empty({s.rows, H}, input.options());
  at::Tensor grad_h = grad_h_n.clone();  // [B, H] carried dL/dh, ends as grad_h0

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), op, [&] {
    Backend::for_each_batch_slice(s.batch, s.batch * H * H, [&](int64_t begin, int64_t end) {
      typename Backend::template RecurrentGemm<scalar_t> recurrent(
          w_hh, /*transposed=*/false, end - begin, schedule.steps(), /*accumulate=*/false);
      scalar_t* grad_h_carried = grad_h.data_ptr<scalar_t>() + begin * H;
      for (int64_t k = schedule.steps() - 1; k >= 0; --k) {
        const int64_t t = schedule.step(k);
        const int64_t rows = schedule.rows_in(t, begin, end);
        if (rows == 0) continue;
        const int64_t offset = schedule.offset(t) + begin;
        gather_previous_state<Backend>(schedule, t, begin, end, output.data_ptr<scalar_t>(),
                                       h0.data_ptr<scalar_t>(), h_prev.data_ptr<scalar_t>(),
                                       s.state);
        RNNBackwardParams<scalar_t> p;
        p.batch = rows;
        p.hidden = H;
        p.output = output.data_ptr<scalar_t>() + offset * H;
        p.grad_output = grad_output.data_ptr<scalar_t>() + offset * H;
        p.grad_h = grad_h_carried;
        p.grad_pre = grad_pre.data_ptr<scalar_t>() + offset * H;
        if (relu) {
          Backend::template rnn_backward<scalar_t, true>(p);
        } else {
          Backend::template rnn_backward<scalar_t, false>(p);
        }
        recurrent.run(p.grad_pre, grad_h_carried, rows);
      }
    });
  });

  const at::Tensor grad_bias = grad_pre.sum(0);
  return {Backend::addmm({}, grad_pre, w_ih),
          grad_h,
          Backend::addmm({}, grad_pre.t(), input),
          Backend::addmm({}, grad_pre.t(), h_prev),
          grad_or_empty(b_ih, grad_bias),
          grad_or_empty(b_hh, b_ih.has_value() ? grad_bias.clone() : grad_bias)};
}

}  // namespace rnnkernels
