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

  // What the LSTM's variants share: the gates' pre-activations, their activations in reserve
  // slots 0 to 3, their gradients (LSTMExt all of it, LayerNormLSTM the slots).
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

// Zoneout of a cell's states (cells::zoneout), for a cell whose extra inputs from Mask hold the
// states' masks (kRowInput [N, H] each: 0 and 1 in training, absent in eval) and whose scalars
// from Probability their probabilities (0 with a mask, p in eval): state j's at Mask + j and
// Probability + j. Without zoneout (no mask, probability 0) the state takes its new value
// exactly, and its whole gradient goes there.
template <int Mask, int Probability>
struct Zoneout {
  // The weight of state j's previous value: its mask plus its probability.
  template <typename Step>
  static RNNKERNELS_HD typename Step::Value kept(const Step& s, int j) {
    return s.input(Mask + j) + s.scalar(Probability + j);
  }
  // dL/d state j's new value (before zoneout), from dL/d the state at t: the (1 - kept) share.
  template <typename Step>
  static RNNKERNELS_HD typename Step::Value new_grad(const Step& s, int j) {
    using V = typename Step::Value;
    return (V(1) - kept(s, j)) * s.grad_state(j);
  }
  // The kept share, which reaches the previous value directly (a part of dL/d state j at t-1).
  template <typename Step>
  static RNNKERNELS_HD typename Step::Value previous_grad(const Step& s, int j) {
    return kept(s, j) * s.grad_state(j);
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
  using Zoneouts = Zoneout<1, 1>;
  // i, f, g, o, c_t (after zoneout: the next step's c_{t-1}) and u (before the clip).
  static constexpr int kReserve = 6;
  static constexpr bool kDirectHiddenGrad = true;

  template <typename Step>
  static RNNKERNELS_HD cells::LSTMPeepholes<typename Step::Value> peepholes(const Step& s) {
    return {s.input(0, 0), s.input(0, 1), s.input(0, 2)};
  }
  template <typename Step>
  static RNNKERNELS_HD void forward(const Step& s) {
    using V = typename Step::Value;
    const V c_prev = s.state(1);
    cells::LSTMGates<V> act;
    V u, c, h;
    cells::lstm_ext_forward<typename Step::Math>(pre_activations(s), peepholes(s), c_prev,
                                                 s.scalar(0), act, u, c, h);
    c = cells::zoneout(Zoneouts::kept(s, 1), c_prev, c);
    h = cells::zoneout(Zoneouts::kept(s, 0), s.state(0), h);
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
    cells::LSTMGates<V> dpre;
    cells::LSTMPeepholes<V> dp;
    V dc_prev;
    cells::lstm_ext_backward<typename Step::Math>(
        saved_gates(s), peepholes(s), s.saved(5), s.previous_state(1), s.scalar(0),
        Zoneouts::new_grad(s, 0), Zoneouts::new_grad(s, 1), dpre, dp, dc_prev);
    set_grad_gates(s, dpre);
    s.add_input_grad(0, 0, dp.i);
    s.add_input_grad(0, 1, dp.f);
    s.add_input_grad(0, 2, dp.o);
    s.set_grad_state(1, dc_prev + Zoneouts::previous_grad(s, 1));
    s.set_grad_state(0, Zoneouts::previous_grad(s, 0));
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

  // What the GRU's variants (GRUExt, LayerNormGRU) share. The new h from both sides'
  // pre-activations (hn with b_hn), before anything a variant does to it, saving r, z, n and hn
  // in slots 0 to 3 for the backward; before set_state.
  template <typename Step, typename V>
  static RNNKERNELS_HD V update(const Step& s, V xr, V xz, V xn, V hr, V hz, V hn) {
    V r, z, n, h;
    cells::gru_forward<typename Step::Math>(xr, xz, xn, hr, hz, hn, s.state(0), r, z, n, h);
    s.save(0, r);
    s.save(1, z);
    s.save(2, n);
    s.save(3, hn);
    return h;
  }
  // The same from the step's GEMMs and b_hn.
  template <typename Step>
  static RNNKERNELS_HD typename Step::Value update(const Step& s) {
    return update(s, s.input_gate(0), s.input_gate(1), s.input_gate(2), s.hidden_gate(0),
                  s.hidden_gate(1), s.hidden_gate(2) + s.input(0));
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
  using Zoneouts = Zoneout<1, 0>;

  template <typename Step>
  static RNNKERNELS_HD void forward(const Step& s) {
    const auto h = cells::zoneout(Zoneouts::kept(s, 0), s.state(0), update(s));
    s.set_state(0, h);
    s.set_output(h);
  }

  template <typename Step>
  static RNNKERNELS_HD void backward(const Step& s) {
    s.set_grad_state(0, set_grad_gates(s, Zoneouts::new_grad(s, 0)) +
                            Zoneouts::previous_grad(s, 0));
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


// ---------------------------------------------------------------------------------------------
// Layer-normalised cells (Ba et al. 2016): row-wise (kRowwise), each layer norm's statistics
// reduced over the row inside the step, the biases added after the norms (BiasFold::kNone), the
// gains step params, the normalised values and the statistics in reserve slots.

namespace layer_norm {

// torch.nn.LayerNorm's.
constexpr double kEps = 1e-5;

// K values of one position of a row, one from each of K blocks of H.
template <typename V, int K>
struct Blocks {
  V v[K];
};

// A row's mean and rstd = 1 / sqrt(biased variance + eps).
template <typename V>
struct Moments {
  V mean, rstd;
};

// The row's means of dxhat and dxhat * xhat that a layer norm's backward needs.
template <typename V>
struct GradMoments {
  V mean_dxhat, mean_dxhat_xhat;
};

// The mean of the K*H values of a row, f(position) giving a position's K (Blocks).
template <int K, typename Row, typename F>
RNNKERNELS_HD typename Row::Value row_mean(const Row& r, const F& f) {
  using V = typename Row::Value;
  const V total = r.sum([&](const auto& s) {
    const Blocks<V, K> values = f(s);
    V sum = values.v[0];
    for (int k = 1; k < K; ++k) sum = sum + values.v[k];
    return sum;
  });
  return total * V(1.0 / (K * r.hidden()));
}

// A layer norm over the K*H values of a row (K blocks of H), for a cell whose reserve slots
// Xhat to Xhat + K - 1 hold the normalised values and slot Rstd the rstd, and whose extra inputs
// Gain and Shift ([K*H] each) scale and shift them (the shift may be a bias the cell adds after
// the norm).
template <int K, int Xhat, int Rstd, int Gain, int Shift>
struct Norm {
  // The row's statistics of values(position), a position's K values (Blocks).
  template <typename Row, typename F>
  static RNNKERNELS_HD Moments<typename Row::Value> moments(const Row& r, const F& values) {
    using V = typename Row::Value;
    const V mean = row_mean<K>(r, values);
    const V variance = row_mean<K>(r, [&](const auto& s) {
      Blocks<V, K> squares = values(s);
      for (int k = 0; k < K; ++k) {
        const V centred = squares.v[k] - mean;
        squares.v[k] = centred * centred;
      }
      return squares;
    });
    return {mean, Row::Math::rsqrt(variance + V(kEps))};
  }

  // Block k's output at a position, gain * xhat + shift, for its value v.
  template <typename Step, typename V>
  static RNNKERNELS_HD V output(const Step& s, int k, V v, const Moments<V>& m) {
    return cells::layer_norm_forward(v, m.mean, m.rstd) * s.input(Gain, k) + s.input(Shift, k);
  }

  // The same from the saved normalised value, in the backward.
  template <typename Step>
  static RNNKERNELS_HD typename Step::Value saved_output(const Step& s, int k) {
    return s.saved(Xhat + k) * s.input(Gain, k) + s.input(Shift, k);
  }

  // Saves a position's normalised values and the rstd.
  template <typename Step, typename V>
  static RNNKERNELS_HD void save(const Step& s, const Blocks<V, K>& values, const Moments<V>& m) {
    for (int k = 0; k < K; ++k) {
      s.save(Xhat + k, cells::layer_norm_forward(values.v[k], m.mean, m.rstd));
    }
    s.save(Rstd, m.rstd);
  }

  // The row's means for the backward, grads(position) giving a position's K dL/d outputs.
  template <typename Row, typename F>
  static RNNKERNELS_HD GradMoments<typename Row::Value> grad_moments(const Row& r, const F& grads) {
    using V = typename Row::Value;
    const auto grad_xhat = [&](const auto& s) {
      Blocks<V, K> d = grads(s);
      for (int k = 0; k < K; ++k) d.v[k] = d.v[k] * s.input(Gain, k);
      return d;
    };
    return {row_mean<K>(r, grad_xhat), row_mean<K>(r, [&](const auto& s) {
              Blocks<V, K> d = grad_xhat(s);
              for (int k = 0; k < K; ++k) d.v[k] = d.v[k] * s.saved(Xhat + k);
              return d;
            })};
  }

  // dL/d block k's value at a position, given dy = dL/d its output.
  template <typename Step, typename V>
  static RNNKERNELS_HD V input_grad(const Step& s, int k, V dy, const GradMoments<V>& m) {
    return cells::layer_norm_backward(s.saved(Xhat + k), dy * s.input(Gain, k), s.saved(Rstd),
                                      m.mean_dxhat, m.mean_dxhat_xhat);
  }

  // Adds this position's part of the gain's and shift's gradients.
  template <typename Step, typename V>
  static RNNKERNELS_HD void add_param_grads(const Step& s, int k, V dy) {
    s.add_input_grad(Gain, k, dy * s.saved(Xhat + k));
    s.add_input_grad(Shift, k, dy);
  }
};

// The layer norms of a step's G gate pre-activations on both sides, x W_ih^T (the input side)
// and h_{t-1} W_hh^T (the hidden side), each over all G*H values of the row and followed by its
// gain and bias, for a cell whose extra inputs 0 to 3 are b_ih, b_hh and the two sides' gains
// ([G*H] each) and whose reserve slots from First hold the two sides' normalised values (G
// each), then their rstds (kReserve slots in all).
template <int G, int First>
struct GateNorms {
  template <bool Hidden>
  using Side = Norm<G, First + (Hidden ? G : 0), First + 2 * G + (Hidden ? 1 : 0), Hidden ? 3 : 2,
                    Hidden ? 1 : 0>;
  static constexpr int kReserve = 2 * G + 2;

  template <typename V>
  struct Stats {
    Moments<V> input, hidden;
  };
  // dL/d each side's G outputs at a position.
  template <typename V>
  struct Grads {
    Blocks<V, G> input, hidden;
  };
  template <typename V>
  struct GradStats {
    GradMoments<V> input, hidden;
  };

  // One side's pre-activations at a position, as its GEMM gave them (forward).
  template <bool Hidden, typename Step>
  static RNNKERNELS_HD Blocks<typename Step::Value, G> projections(const Step& s) {
    Blocks<typename Step::Value, G> values;
    for (int k = 0; k < G; ++k) {
      if constexpr (Hidden) {
        values.v[k] = s.hidden_gate(k);
      } else {
        values.v[k] = s.input_gate(k);
      }
    }
    return values;
  }

  template <typename Row>
  static RNNKERNELS_HD Stats<typename Row::Value> statistics(const Row& r) {
    return {Side<false>::moments(r, [](const auto& s) { return projections<false>(s); }),
            Side<true>::moments(r, [](const auto& s) { return projections<true>(s); })};
  }

  // Gate k of the input or the hidden side at a position: LN(x W_ih^T) + b_ih, LN(h W_hh^T) + b_hh.
  template <typename Step, typename V>
  static RNNKERNELS_HD V input(const Step& s, int k, const Stats<V>& st) {
    return Side<false>::output(s, k, s.input_gate(k), st.input);
  }
  template <typename Step, typename V>
  static RNNKERNELS_HD V hidden(const Step& s, int k, const Stats<V>& st) {
    return Side<true>::output(s, k, s.hidden_gate(k), st.hidden);
  }

  template <typename Step, typename V>
  static RNNKERNELS_HD void save(const Step& s, const Stats<V>& st) {
    Side<false>::save(s, projections<false>(s), st.input);
    Side<true>::save(s, projections<true>(s), st.hidden);
  }

  // A row's backward. grads(position) gives a position's gradients, a struct whose `gates` are
  // dL/d each side's outputs (Grads); from them the norms' backward writes the gradients of both
  // sides' pre-activations and adds those of the gains and biases, then rest(position, its
  // gradients) writes the cell's own.
  template <typename Row, typename F, typename Rest>
  static RNNKERNELS_HD void backward(const Row& r, const F& grads, const Rest& rest) {
    const GradStats<typename Row::Value> m{
        Side<false>::grad_moments(r, [&](const auto& s) { return grads(s).gates.input; }),
        Side<true>::grad_moments(r, [&](const auto& s) { return grads(s).gates.hidden; })};
    r.for_each([&](const auto& s) {
      const auto g = grads(s);
      for (int k = 0; k < G; ++k) {
        Side<false>::add_param_grads(s, k, g.gates.input.v[k]);
        Side<true>::add_param_grads(s, k, g.gates.hidden.v[k]);
        s.set_grad_input_gate(k, Side<false>::input_grad(s, k, g.gates.input.v[k], m.input));
        s.set_grad_hidden_gate(k, Side<true>::input_grad(s, k, g.gates.hidden.v[k], m.hidden));
      }
      rest(s, g);
    });
  }
};

}  // namespace layer_norm

// Layer-normalised LSTM: gates = LN(x W_ih^T; w_ih) + b_ih + LN(h_{t-1} W_hh^T; w_hh) + b_hh,
// each norm over all 4H values of the row; c~ = f * c_{t-1} + i * g as the LSTM's;
// h~ = o * tanh(LN(c~; w_c, b_c)); then zoneout, c_t = zoneout(d_c, c_{t-1}, c~) and h_t =
// zoneout(d_h, h_{t-1}, h~), as LSTMExt's: masks zoneout_h and zoneout_c (inputs 6 and 7) plus
// probabilities (scalars 0 and 1); without them c_t = c~ and h_t = h~. c_t itself is carried.
struct LayerNormLSTM : CellDefaults {
  static constexpr const char* kName = "layernorm_lstm";
  static constexpr int kGates = 4;
  static constexpr std::array<const char*, 2> kStates{"h", "c"};
  static constexpr std::array<ParamSpec, 6> kParams{{{"ln_w_ih", ParamRole::kStepParam, 4},
                                                     {"ln_w_hh", ParamRole::kStepParam, 4},
                                                     {"ln_w_c", ParamRole::kStepParam, 1},
                                                     {"ln_b_c", ParamRole::kStepParam, 1},
                                                     {"zoneout_h", ParamRole::kRowInput, 1},
                                                     {"zoneout_c", ParamRole::kRowInput, 1}}};
  // Inputs 0 to 7: b_ih, b_hh, ln_w_ih, ln_w_hh, ln_w_c, ln_b_c, zoneout_h, zoneout_c.
  static constexpr std::array<StepInputSpec, 8> kInputs{{{InputSource::kInputBias},
                                                         {InputSource::kHiddenBias},
                                                         {InputSource::kParam, 0},
                                                         {InputSource::kParam, 1},
                                                         {InputSource::kParam, 2},
                                                         {InputSource::kParam, 3},
                                                         {InputSource::kParam, 4},
                                                         {InputSource::kParam, 5}}};
  static constexpr int kScalars = 2;
  using Zoneouts = Zoneout<6, 0>;
  // Slots: i, f, g, o (0-3), c_t (4, after zoneout: the next step's c_{t-1}), c~ normalised (5)
  // and its rstd (6), the gates' norms'.
  using Gates = layer_norm::GateNorms<4, 7>;
  using CellNorm = layer_norm::Norm<1, 5, 6, 4, 5>;
  static constexpr int kReserve = 7 + Gates::kReserve;
  static constexpr RNNKERNELS_HD int saved_slot(int state) { return state == 1 ? 4 : -1; }
  static constexpr BiasFold kBiasFold = BiasFold::kNone;
  static constexpr bool kSeparateHiddenGrad = true;
  // Zoneout's kept share of dL/dh_t (0 without zoneout).
  static constexpr bool kDirectHiddenGrad = true;
  static constexpr bool kRowwise = true;

  template <typename Step, typename V>
  static RNNKERNELS_HD V pre(const Step& s, int k, const Gates::Stats<V>& gates) {
    return Gates::input(s, k, gates) + Gates::hidden(s, k, gates);
  }

  template <typename Row>
  static RNNKERNELS_HD void forward(const Row& r) {
    using V = typename Row::Value;
    using M = typename Row::Math;
    const auto gates = Gates::statistics(r);
    r.for_each([&](const auto& s) {
      const cells::LSTMGates<V> pre_act{pre(s, 0, gates), pre(s, 1, gates), pre(s, 2, gates),
                                        pre(s, 3, gates)};
      cells::LSTMGates<V> act;
      const V c_prev = s.state(1);
      const V c_new = cells::lstm_cell_update<M>(pre_act, c_prev, act);
      act.o = M::sigmoid(pre_act.o);
      const V c = cells::zoneout(Zoneouts::kept(s, 1), c_prev, c_new);
      s.set_state(1, c);
      // c~ waits in the output for the passes below; the last writes h_t over it.
      s.set_output(c_new);
      LSTM::save_gates(s, act);
      s.save(4, c);
      Gates::save(s, gates);
    });
    // h_t from c~'s norm; o from its pre-activation again, as inference saves nothing.
    const auto cell = [](const auto& s) { return layer_norm::Blocks<V, 1>{{s.output()}}; };
    const auto c_stats = CellNorm::moments(r, cell);
    r.for_each([&](const auto& s) {
      const V h_new = cells::lstm_output<M>(M::sigmoid(pre(s, 3, gates)),
                                            CellNorm::output(s, 0, s.output(), c_stats));
      CellNorm::save(s, cell(s), c_stats);
      const V h = cells::zoneout(Zoneouts::kept(s, 0), s.state(0), h_new);
      s.set_state(0, h);
      s.set_output(h);
    });
  }

  // A position's gradients: both sides' gates (the same), dL/dc_{t-1} and dL/d c~'s norm's
  // output.
  template <typename V>
  struct Grads {
    Gates::Grads<V> gates;
    V dc_prev, dy;
  };

  template <typename Row>
  static RNNKERNELS_HD void backward(const Row& r) {
    using V = typename Row::Value;
    using M = typename Row::Math;
    // dL/d c~'s norm's output, and the gradient of o's pre-activation, from dL/dh~.
    const auto output_grad = [](const auto& s, V& do_pre) {
      V tanh_y, dy;
      cells::lstm_output_backward<M>(s.saved(3), CellNorm::saved_output(s, 0),
                                     Zoneouts::new_grad(s, 0), tanh_y, do_pre, dy);
      return dy;
    };
    const auto c_moments = CellNorm::grad_moments(r, [&](const auto& s) {
      V do_pre;
      return layer_norm::Blocks<V, 1>{{output_grad(s, do_pre)}};
    });
    const auto grads = [&](const auto& s) {
      Grads<V> g;
      cells::LSTMGates<V> dpre;
      g.dy = output_grad(s, dpre.o);
      const V dc = Zoneouts::new_grad(s, 1) + CellNorm::input_grad(s, 0, g.dy, c_moments);
      g.dc_prev = cells::lstm_cell_update_backward(LSTM::saved_gates(s), s.previous_state(1), dc,
                                                   dpre) +
                  Zoneouts::previous_grad(s, 1);
      g.gates.input = {{dpre.i, dpre.f, dpre.g, dpre.o}};
      g.gates.hidden = g.gates.input;
      return g;
    };
    Gates::backward(r, grads, [](const auto& s, const Grads<V>& g) {
      CellNorm::add_param_grads(s, 0, g.dy);
      s.set_grad_state(1, g.dc_prev);
      s.set_grad_state(0, Zoneouts::previous_grad(s, 0));
    });
  }
};

// Layer-normalised GRU: (xr, xz, xn) = LN(x W_ih^T; w_ih) + b_ih, (hr, hz, hn) =
// LN(h_{t-1} W_hh^T; w_hh) + b_hh, each norm over all 3H values of the row, then the GRU's
// equations for h~, and h_t = zoneout(d_h, h_{t-1}, h~) as GRUExt's: mask zoneout_h (input 4)
// plus probability (scalar 0); without them h_t = h~.
struct LayerNormGRU : CellDefaults {
  static constexpr const char* kName = "layernorm_gru";
  static constexpr int kGates = 3;
  static constexpr std::array<const char*, 1> kStates{"h"};
  static constexpr std::array<ParamSpec, 3> kParams{{{"ln_w_ih", ParamRole::kStepParam, 3},
                                                     {"ln_w_hh", ParamRole::kStepParam, 3},
                                                     {"zoneout_h", ParamRole::kRowInput, 1}}};
  // Inputs 0 to 4: b_ih, b_hh, ln_w_ih, ln_w_hh, zoneout_h.
  static constexpr std::array<StepInputSpec, 5> kInputs{{{InputSource::kInputBias},
                                                         {InputSource::kHiddenBias},
                                                         {InputSource::kParam, 0},
                                                         {InputSource::kParam, 1},
                                                         {InputSource::kParam, 2}}};
  static constexpr int kScalars = 1;
  using Zoneouts = Zoneout<4, 0>;
  // Slots: r, z, n, hn (0-3, GRU::update's), the gates' norms'.
  using Gates = layer_norm::GateNorms<3, 4>;
  static constexpr int kReserve = 4 + Gates::kReserve;
  static constexpr BiasFold kBiasFold = BiasFold::kNone;
  static constexpr bool kSeparateHiddenGrad = true;
  static constexpr bool kDirectHiddenGrad = true;
  static constexpr bool kRowwise = true;

  template <typename Row>
  static RNNKERNELS_HD void forward(const Row& r) {
    const auto gates = Gates::statistics(r);
    r.for_each([&](const auto& s) {
      const auto h_new = GRU::update(s, Gates::input(s, 0, gates), Gates::input(s, 1, gates),
                                     Gates::input(s, 2, gates), Gates::hidden(s, 0, gates),
                                     Gates::hidden(s, 1, gates), Gates::hidden(s, 2, gates));
      const auto h = cells::zoneout(Zoneouts::kept(s, 0), s.state(0), h_new);
      s.set_state(0, h);
      s.set_output(h);
      Gates::save(s, gates);
    });
  }

  // A position's gradients: both sides' gates and the part of dL/dh_{t-1} that bypasses W_hh.
  template <typename V>
  struct Grads {
    Gates::Grads<V> gates;
    V dh_prev;
  };

  template <typename Row>
  static RNNKERNELS_HD void backward(const Row& r) {
    using V = typename Row::Value;
    const auto grads = [](const auto& s) {
      Grads<V> g;
      V dr, dz, dn, dhn;
      cells::gru_backward<typename Row::Math>(s.saved(0), s.saved(1), s.saved(2), s.saved(3),
                                              s.previous_state(0), Zoneouts::new_grad(s, 0), dr,
                                              dz, dn, dhn, g.dh_prev);
      g.dh_prev = g.dh_prev + Zoneouts::previous_grad(s, 0);
      g.gates.input = {{dr, dz, dn}};
      g.gates.hidden = {{dr, dz, dhn}};
      return g;
    };
    Gates::backward(r, grads,
                    [](const auto& s, const Grads<V>& g) { s.set_grad_state(0, g.dh_prev); });
  }
};

}  // namespace rnnkernels
