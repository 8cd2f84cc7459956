// A cell for the tests only, in the three pieces a cell of the library has (docs/DESIGN.md,
// "Adding a cell"): its math, its traits and its list. It takes in one cell hooks that the
// library's cells take apart, so that CI runs them together: a per-row input (a zoneout-style
// mask) and a scalar (scale), as lstm_ext; no dense recurrence, as IndRNN (h_{t-1} enters as
// u * h_{t-1}, u = w_hh [H]); biases read by the step rather than folded into the input GEMM, a
// reduction over the row (the pre-activation is centred) and a per-layer param with a gradient
// (gain), as the layer-normalised cells:
//   pre = x W_ih^T + b_ih + b_hh + u * h_{t-1},   c = pre - mean(pre over the row's H units),
//   h = tanh(scale * gain * c),   h_t = mask * h + (1 - mask) * h_{t-1}.
// tests/test_cuda_emulation.py checks it against a PyTorch reference on the CPU driver, the CUDA
// kernels under emulation and the differentiable recomputation.
#pragma once

#include "kernels/cell_list.h"
#include "kernels/traits.h"

namespace rnnkernels {

namespace cells {

// h = tanh(scale * gain * c) and the state after the mask.
template <typename M, typename V>
RNNKERNELS_HD void centred_forward(V c, V gain, V scale, V mask, V h_prev, V& h, V& h_next) {
  h = M::tanh(scale * gain * c);
  h_next = mask * h + (V(1) - mask) * h_prev;
}

// dL/d(scale * gain * c) from dL/dh_t (g) and the saved h.
template <typename M, typename V>
RNNKERNELS_HD V centred_backward(V h, V mask, V g) {
  return g * mask * (V(1) - h * h);
}

}  // namespace cells

struct CentredIndRNN : CellDefaults {
  static constexpr const char* kName = "centred_indrnn";
  static constexpr int kGates = 1;
  static constexpr std::array<const char*, 1> kStates{"h"};
  static constexpr std::array<ParamSpec, 2> kParams{
      {{"gain", ParamRole::kStepParam, 1}, {"mask", ParamRole::kRowInput, 1}}};
  // Inputs 0 to 4: u, b_ih, b_hh, gain, mask.
  static constexpr std::array<StepInputSpec, 5> kInputs{{{InputSource::kRecurrentWeight},
                                                         {InputSource::kInputBias},
                                                         {InputSource::kHiddenBias},
                                                         {InputSource::kParam, 0},
                                                         {InputSource::kParam, 1}}};
  static constexpr int kScalars = 1;
  static constexpr int kReserve = 2;  // h, c
  static constexpr BiasFold kBiasFold = BiasFold::kNone;
  static constexpr Recurrence kRecurrence = Recurrence::kElementwise;
  static constexpr bool kDirectHiddenGrad = true;
  static constexpr bool kRowwise = true;

  // In the forward, before set_state: state(0) is h_{t-1}.
  template <typename Step>
  static RNNKERNELS_HD typename Step::Value pre(const Step& s) {
    return s.input_gate(0) + s.input(1) + s.input(2) + s.input(0) * s.state(0);
  }

  // The mean of f over the row, as mean(f + 1) - 1: a lane past the row's end reads zeros, so a
  // driver that let such lanes count would be off by their number.
  template <typename Row, typename F>
  static RNNKERNELS_HD typename Row::Value mean(const Row& r, const F& f) {
    using V = typename Row::Value;
    return r.sum([&](const auto& s) { return f(s) + V(1); }) * V(1.0 / r.hidden()) - V(1);
  }

  template <typename Row>
  static RNNKERNELS_HD void forward(const Row& r) {
    using V = typename Row::Value;
    const V mean_pre = mean(r, [](const auto& s) { return pre(s); });
    r.for_each([&](const auto& s) {
      const V c = pre(s) - mean_pre;
      V h, h_next;
      cells::centred_forward<typename Row::Math>(c, s.input(3), s.scalar(0), s.input(4),
                                                 s.state(0), h, h_next);
      s.save(0, h);
      s.save(1, c);
      s.set_state(0, h_next);
      s.set_output(h_next);
    });
  }

  template <typename Row>
  static RNNKERNELS_HD void backward(const Row& r) {
    using V = typename Row::Value;
    // dL/dc, and through the centring dL/dpre = dL/dc - mean(dL/dc).
    const auto grad_c = [](const auto& s) {
      return cells::centred_backward<typename Row::Math>(s.saved(0), s.input(4),
                                                         s.grad_state(0)) *
             s.scalar(0) * s.input(3);
    };
    const V mean_grad_c = mean(r, grad_c);
    r.for_each([&](const auto& s) {
      const V g = s.grad_state(0), mask = s.input(4), h_prev = s.previous_state(0);
      const V grad_pre = grad_c(s) - mean_grad_c;
      s.add_input_grad(0, 0, grad_pre * h_prev);
      s.add_input_grad(1, 0, grad_pre);
      s.add_input_grad(2, 0, grad_pre);
      s.add_input_grad(3, 0,
                       cells::centred_backward<typename Row::Math>(s.saved(0), mask, g) *
                           s.scalar(0) * s.saved(1));
      s.set_grad_gate(0, grad_pre);
      s.set_grad_state(0, g * (V(1) - mask) + grad_pre * s.input(0));
    });
  }
};

}  // namespace rnnkernels

// The tests' list of cells (cell_list.h).
#define RNNKERNELS_FOR_EACH_TEST_CELL(X, ...) X(CentredIndRNN, __VA_ARGS__)
