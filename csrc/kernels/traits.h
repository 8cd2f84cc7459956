// Cell traits: everything the step loops (csrc/layer/layer.h), the pointwise drivers (CPU:
// csrc/cpu/pointwise_kernels.h; CUDA: pointwise.cuh) and the differentiable recomputation
// (csrc/layer/differentiable.h) know about a cell, and its element functions, which read and
// write one step through an accessor (step.h) and call the math of cells.h. docs/DESIGN.md
// ("Cell traits") explains every member; "Adding a cell" walks through one.
//
// Torch-free; the element functions are templates over the accessor, so the same code runs per
// element on CUDA, per vector of units on the CPU and on whole tensors for double backward.
#pragma once

#include <array>

#include "cells.h"

namespace rnnkernels {

// Where the biases go. torch.nn's cells all take b_ih and b_hh of G*H.
enum class BiasFold {
  kAll,                      // both into the input GEMM: b_ih + b_hh added once per row
  kAllButHiddenLastGate,     // the same, but b_hh's last gate stays apart (GRU's b_hn, which sits
                             // inside r * (...)) and reaches the step as an extra input
  kNone,                     // neither: the step reads them as extra inputs (kInputBias,
                             // kHiddenBias), e.g. to add them after a layer norm
};

// How h_{t-1} enters a step.
enum class Recurrence {
  kDense,        // h_{t-1} W_hh^T, one GEMM a step (w_hh [G*H, P])
  kElementwise,  // no GEMM: w_hh [G*H] reaches the step as an extra input (IndRNN)
};

// An extra tensor argument of a cell beyond w_ih, w_hh, b_ih and b_hh (kParams), and what it is
// for. Each is optional at the operators: an absent projection is none, an absent step input
// reads as zeros.
enum class ParamRole {
  kProjection,  // w_hr [P, H]: h_t W_hr^T is the output and the state (LSTM's proj_size)
  kStepParam,   // [K*H], read by the step (a layer norm's gain, peephole weights); it gets a
                // gradient, summed over the rows the step adds to (add_input_grad)
  kRowInput,    // [N, K*H], a row of it per packed row, read by the step (dropout or zoneout
                // masks); no gradient
  kRecurrentMask,  // [B, P], a row per sequence, no gradient: the loop multiplies h_{t-1} by it
                   // where h_{t-1} enters the recurrent GEMM, and only there (recurrent
                   // dropout); the carried state and the step see h_{t-1} unmasked
};
// Whether the operators give a param of this role a gradient.
constexpr bool has_gradient(ParamRole role) {
  return role != ParamRole::kRowInput && role != ParamRole::kRecurrentMask;
}
struct ParamSpec {
  const char* name;
  ParamRole role;
  int blocks = 0;  // kStepParam and kRowInput: K, the width's multiple of H
};

// Where each of a step's extra inputs comes from (kInputs; StepParams::inputs).
enum class InputSource {
  kHiddenBiasLastGate,  // b_hh's last gate [H] (kAllButHiddenLastGate), absent without b_hh
  kInputBias,           // b_ih [G*H] (kNone), with a gradient (add_input_grad)
  kHiddenBias,          // b_hh [G*H] (kNone), with a gradient (add_input_grad)
  kRecurrentWeight,     // w_hh [G*H] (kElementwise), with a gradient (add_input_grad)
  kParam,               // the cell's own param `param` (kStepParam or kRowInput)
};
struct StepInputSpec {
  InputSource source;
  int param = -1;  // with kParam: its index in kParams
};

// What a cell has unless its traits say otherwise: no extra arguments, a dense recurrence, both
// biases folded, one gradient for both sides of a gate, element-wise math.
struct CellDefaults {
  static constexpr std::array<ParamSpec, 0> kParams{};
  static constexpr std::array<StepInputSpec, 0> kInputs{};
  static constexpr int kScalars = 0;
  static constexpr BiasFold kBiasFold = BiasFold::kAll;
  static constexpr Recurrence kRecurrence = Recurrence::kDense;
  // Whether dL/d hidden_gates differs from dL/d input_gates (set_grad_hidden_gate).
  static constexpr bool kSeparateHiddenGrad = false;
  // Whether the backward writes a part of dL/dh_{t-1} that bypasses W_hh (set_grad_state(0)),
  // to which the recurrent GEMM then adds.
  static constexpr bool kDirectHiddenGrad = false;
  // Whether the step reduces over a row (layer norm): the drivers then call forward and backward
  // with a whole row (step.h, Row) instead of one position.
  static constexpr bool kRowwise = false;
  // The reserve slot holding state j's value at t, which the backward reads back as the next
  // step's state at t-1 (previous_state). h has none: the loop gathers it from the output.
  static constexpr RNNKERNELS_HD int saved_slot(int /*state*/) { return -1; }
};

// Long short-term memory, gate order (i, f, g, o), with an optional projection.
struct LSTM : CellDefaults {
  static constexpr const char* kName = "lstm";
  static constexpr int kGates = 4;
  static constexpr std::array<const char*, 2> kStates{"h", "c"};
  static constexpr std::array<ParamSpec, 1> kParams{{{"w_hr", ParamRole::kProjection}}};
  // i, f, g, o and c_t: the backward's activations and, from the previous step, its c_{t-1}.
  static constexpr int kReserve = 5;
  static constexpr RNNKERNELS_HD int saved_slot(int state) { return state == 1 ? 4 : -1; }

  template <typename Step>
  static RNNKERNELS_HD void forward(const Step& s) {
    using V = typename Step::Value;
    cells::LSTMGates<V> act;
    V c, h;
    cells::lstm_forward<typename Step::Math>(pre_activations(s), s.state(1), act, c, h);
    s.set_state(1, c);
    s.set_state(0, h);
    s.set_output(h);
    save_gates(s, act);
    s.save(4, c);
  }

  template <typename Step>
  static RNNKERNELS_HD void backward(const Step& s) {
    using V = typename Step::Value;
    cells::LSTMGates<V> dpre;
    V dc_prev, h;
    cells::lstm_backward<typename Step::Math>(saved_gates(s), s.saved(4), s.previous_state(1),
                                              s.grad_state(0), s.grad_state(1), dpre, dc_prev, h);
    set_grad_gates(s, dpre);
    s.set_grad_state(1, dc_prev);
    s.set_unprojected(h);
  }

  // What the LSTM's variants (LSTMExt) share: the gates' pre-activations, their activations in
  // reserve slots 0 to 3, their gradients.
  template <typename Step>
  static RNNKERNELS_HD cells::LSTMGates<typename Step::Value> pre_activations(const Step& s) {
    return {s.input_gate(0) + s.hidden_gate(0), s.input_gate(1) + s.hidden_gate(1),
            s.input_gate(2) + s.hidden_gate(2), s.input_gate(3) + s.hidden_gate(3)};
  }
  template <typename Step>
  static RNNKERNELS_HD void save_gates(const Step& s,
                                       const cells::LSTMGates<typename Step::Value>& act) {
    for (int k = 0; k < 4; ++k) s.save(k, act[k]);
  }
  template <typename Step>
  static RNNKERNELS_HD cells::LSTMGates<typename Step::Value> saved_gates(const Step& s) {
    return {s.saved(0), s.saved(1), s.saved(2), s.saved(3)};
  }
  template <typename Step>
  static RNNKERNELS_HD void set_grad_gates(const Step& s,
                                           const cells::LSTMGates<typename Step::Value>& dpre) {
    for (int k = 0; k < 4; ++k) s.set_grad_gate(k, dpre[k]);
  }
};

// The LSTM with its options (cells::lstm_ext_forward), all chosen at run time, so that one cell
// serves every combination: peephole weights w_ch [3H] = (p_i, p_f, p_o), a kStepParam (zeros
// when absent); the cell clip, scalar 0 (infinity: none); zoneout of h and of c, each a mask of
// 0 and 1 [N, H] (training) plus a probability, scalars 1 and 2 (eval; 0 with a mask); and the
// loop's recurrent mask (recurrent dropout). No projection: zoneout writes a part of
// dL/dh_{t-1} that bypasses W_hh, which a projection cannot carry.
struct LSTMExt : LSTM {
  static constexpr const char* kName = "lstm_ext";
  static constexpr std::array<ParamSpec, 4> kParams{{{"w_ch", ParamRole::kStepParam, 3},
                                                     {"zoneout_h", ParamRole::kRowInput, 1},
                                                     {"zoneout_c", ParamRole::kRowInput, 1},
                                                     {"recurrent_mask",
                                                      ParamRole::kRecurrentMask}}};
  static constexpr std::array<StepInputSpec, 3> kInputs{
      {{InputSource::kParam, 0}, {InputSource::kParam, 1}, {InputSource::kParam, 2}}};
  static constexpr int kScalars = 3;
  // i, f, g, o, c_t (after zoneout: the next step's c_{t-1}) and u (before the clip).
  static constexpr int kReserve = 6;
  static constexpr bool kDirectHiddenGrad = true;

  template <typename Step>
  static RNNKERNELS_HD cells::LSTMPeepholes<typename Step::Value> peepholes(const Step& s) {
    return {s.input(0, 0), s.input(0, 1), s.input(0, 2)};
  }
  // Zoneout's weight of the previous value of state j (h 0, c 1): its mask plus its probability.
  template <typename Step>
  static RNNKERNELS_HD typename Step::Value kept(const Step& s, int j) {
    return s.input(1 + j) + s.scalar(1 + j);
  }

  template <typename Step>
  static RNNKERNELS_HD void forward(const Step& s) {
    using V = typename Step::Value;
    const V c_prev = s.state(1);
    cells::LSTMGates<V> act;
    V u, c, h;
    cells::lstm_ext_forward<typename Step::Math>(pre_activations(s), peepholes(s), c_prev,
                                                 s.scalar(0), act, u, c, h);
    c = cells::zoneout(kept(s, 1), c_prev, c);
    h = cells::zoneout(kept(s, 0), s.state(0), h);
    s.set_state(1, c);
    s.set_state(0, h);
    s.set_output(h);
    save_gates(s, act);
    s.save(4, c);
    s.save(5, u);
  }

  template <typename Step>
  static RNNKERNELS_HD void backward(const Step& s) {
    using V = typename Step::Value;
    const V dh = s.grad_state(0), dc = s.grad_state(1), kept_h = kept(s, 0), kept_c = kept(s, 1);
    cells::LSTMGates<V> dpre;
    cells::LSTMPeepholes<V> dp;
    V dc_prev;
    cells::lstm_ext_backward<typename Step::Math>(
        saved_gates(s), peepholes(s), s.saved(5), s.previous_state(1), s.scalar(0),
        (V(1) - kept_h) * dh, (V(1) - kept_c) * dc, dpre, dp, dc_prev);
    set_grad_gates(s, dpre);
    s.add_input_grad(0, 0, dp.i);
    s.add_input_grad(0, 1, dp.f);
    s.add_input_grad(0, 2, dp.o);
    s.set_grad_state(1, dc_prev + kept_c * dc);
    s.set_grad_state(0, kept_h * dh);
  }
};

// Gated recurrent unit, gate order (r, z, n).
struct GRU : CellDefaults {
  static constexpr const char* kName = "gru";
  static constexpr int kGates = 3;
  static constexpr std::array<const char*, 1> kStates{"h"};
  static constexpr std::array<StepInputSpec, 1> kInputs{{{InputSource::kHiddenBiasLastGate}}};
  // r, z, n and the hidden projection of n with b_hn (the backward's dr needs it).
  static constexpr int kReserve = 4;
  static constexpr BiasFold kBiasFold = BiasFold::kAllButHiddenLastGate;
  // n's two sides differ (the hidden one is scaled by r), and dh * z bypasses W_hh.
  static constexpr bool kSeparateHiddenGrad = true;
  static constexpr bool kDirectHiddenGrad = true;

  template <typename Step>
  static RNNKERNELS_HD void forward(const Step& s) {
    const auto h = update(s);
    s.set_state(0, h);
    s.set_output(h);
  }

  template <typename Step>
  static RNNKERNELS_HD void backward(const Step& s) {
    s.set_grad_state(0, set_grad_gates(s, s.grad_state(0)));
  }

  // What the GRU's variants (GRUExt) share. The new h (before anything a variant does to it),
  // saving what the backward reads; before set_state.
  template <typename Step>
  static RNNKERNELS_HD typename Step::Value update(const Step& s) {
    using V = typename Step::Value;
    const V hn = s.hidden_gate(2) + s.input(0);
    V r, z, n, h;
    cells::gru_forward<typename Step::Math>(s.input_gate(0), s.input_gate(1), s.input_gate(2),
                                            s.hidden_gate(0), s.hidden_gate(1), hn, s.state(0),
                                            r, z, n, h);
    s.save(0, r);
    s.save(1, z);
    s.save(2, n);
    s.save(3, hn);
    return h;
  }
  // The gates' gradients from dh = dL/d that new h; returns the part of dL/dh_{t-1} that
  // bypasses W_hh.
  template <typename Step>
  static RNNKERNELS_HD typename Step::Value set_grad_gates(const Step& s,
                                                          typename Step::Value dh) {
    using V = typename Step::Value;
    V dr, dz, dn, dhn, dh_prev;
    cells::gru_backward<typename Step::Math>(s.saved(0), s.saved(1), s.saved(2), s.saved(3),
                                             s.previous_state(0), dh, dr, dz, dn, dhn, dh_prev);
    s.set_grad_gate(0, dr);
    s.set_grad_gate(1, dz);
    s.set_grad_input_gate(2, dn);
    s.set_grad_hidden_gate(2, dhn);
    return dh_prev;
  }
};

// The GRU with its options, chosen at run time: zoneout of h, a mask of 0 and 1 [N, H]
// (training) plus a probability, scalar 0 (eval; 0 with a mask), and the loop's recurrent mask
// (recurrent dropout).
struct GRUExt : GRU {
  static constexpr const char* kName = "gru_ext";
  static constexpr std::array<ParamSpec, 2> kParams{
      {{"zoneout_h", ParamRole::kRowInput, 1}, {"recurrent_mask", ParamRole::kRecurrentMask}}};
  static constexpr std::array<StepInputSpec, 2> kInputs{
      {{InputSource::kHiddenBiasLastGate}, {InputSource::kParam, 0}}};
  static constexpr int kScalars = 1;

  template <typename Step>
  static RNNKERNELS_HD void forward(const Step& s) {
    const auto h = cells::zoneout(s.input(1) + s.scalar(0), s.state(0), update(s));
    s.set_state(0, h);
    s.set_output(h);
  }

  template <typename Step>
  static RNNKERNELS_HD void backward(const Step& s) {
    using V = typename Step::Value;
    const V dh = s.grad_state(0), kept = s.input(1) + s.scalar(0);
    s.set_grad_state(0, set_grad_gates(s, (V(1) - kept) * dh) + kept * dh);
  }
};

// Elman RNN, h_t = tanh(pre) or relu(pre); the backward needs only h_t, the output.
template <bool Relu>
struct Elman : CellDefaults {
  static constexpr const char* kName = Relu ? "rnn_relu" : "rnn_tanh";
  static constexpr int kGates = 1;
  static constexpr std::array<const char*, 1> kStates{"h"};
  static constexpr int kReserve = 0;

  template <typename Step>
  static RNNKERNELS_HD void forward(const Step& s) {
    const auto h =
        cells::rnn_forward<typename Step::Math, Relu>(s.input_gate(0) + s.hidden_gate(0));
    s.set_state(0, h);
    s.set_output(h);
  }

  template <typename Step>
  static RNNKERNELS_HD void backward(const Step& s) {
    s.set_grad_gate(0, cells::rnn_backward<typename Step::Math, Relu>(s.output(), s.grad_state(0)));
  }
};

// Independently recurrent network (Li et al. 2018), h_t = tanh or relu(x W_ih^T + b_ih + b_hh +
// u * h_{t-1}) with u = w_hh [H]: no dense recurrence, so w_hh reaches the step as an input (with
// a gradient) and the step writes all of dL/dh_{t-1}. The backward needs only h_t, the output.
template <bool Relu>
struct IndRNN : CellDefaults {
  static constexpr const char* kName = Relu ? "indrnn_relu" : "indrnn_tanh";
  static constexpr int kGates = 1;
  static constexpr std::array<const char*, 1> kStates{"h"};
  static constexpr std::array<StepInputSpec, 1> kInputs{{{InputSource::kRecurrentWeight}}};
  static constexpr int kReserve = 0;
  static constexpr Recurrence kRecurrence = Recurrence::kElementwise;
  static constexpr bool kDirectHiddenGrad = true;

  template <typename Step>
  static RNNKERNELS_HD void forward(const Step& s) {
    const auto h = cells::indrnn_forward<typename Step::Math, Relu>(s.input_gate(0), s.input(0),
                                                                    s.state(0));
    s.set_state(0, h);
    s.set_output(h);
  }

  template <typename Step>
  static RNNKERNELS_HD void backward(const Step& s) {
    using V = typename Step::Value;
    V dpre, du, dh_prev;
    cells::indrnn_backward<typename Step::Math, Relu>(s.output(), s.grad_state(0), s.input(0),
                                                      s.previous_state(0), dpre, du, dh_prev);
    s.set_grad_gate(0, dpre);
    s.add_input_grad(0, 0, du);
    s.set_grad_state(0, dh_prev);
  }
};

}  // namespace rnnkernels
