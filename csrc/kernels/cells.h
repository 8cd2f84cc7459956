// The gate math of every cell, forward and backward, written once.
//
// Torch-free: included by the CPU kernels (csrc/cpu/) and the CUDA kernels (csrc/kernels/*.cu).
// Every function is templated on
//   M: the math policy that supplies the activations (ScalarMath below for one element; the CPU
//      path passes a policy over at::vec::Vectorized so one call handles a whole vector), and
//   V: the value type (float or double for ScalarMath; half types are computed in float).
// Only +, -, * and the policy's functions (sigmoid, tanh, relu, rsqrt) are used, so the same code
// runs on scalars and vectors.
//
// Conventions: "*_pre" is a gate's pre-activation (input projection + hidden projection + biases),
// "d*" a gradient of the loss. Gate order is torch.nn's: LSTM (i, f, g, o), GRU (r, z, n).
#pragma once

#include <math.h>

#if defined(__CUDACC__)
#define RNNKERNELS_HD __host__ __device__ __forceinline__
#else
#define RNNKERNELS_HD inline
#endif

namespace rnnkernels {
namespace cells {

RNNKERNELS_HD float exp_(float x) { return expf(x); }
RNNKERNELS_HD double exp_(double x) { return exp(x); }
RNNKERNELS_HD float tanh_(float x) { return tanhf(x); }
RNNKERNELS_HD double tanh_(double x) { return tanh(x); }
RNNKERNELS_HD float sqrt_(float x) { return sqrtf(x); }
RNNKERNELS_HD double sqrt_(double x) { return sqrt(x); }

// Activations (and the rsqrt of a layer norm) on one float or double.
struct ScalarMath {
  template <typename V>
  static RNNKERNELS_HD V sigmoid(V x) { return V(1) / (V(1) + exp_(-x)); }
  template <typename V>
  static RNNKERNELS_HD V tanh(V x) { return tanh_(x); }
  // `x < 0 ? 0 : x` (not `x > 0 ? x : 0`) so that NaN propagates, as torch.relu does.
  template <typename V>
  static RNNKERNELS_HD V relu(V x) { return x < V(0) ? V(0) : x; }
  // Gradient of relu given its output y: zero where y <= 0, as torch's threshold_backward.
  template <typename V>
  static RNNKERNELS_HD V relu_backward(V y, V dy) { return y <= V(0) ? V(0) : dy; }
  // 1 / sqrt(x), for a layer norm's statistics.
  template <typename V>
  static RNNKERNELS_HD V rsqrt(V x) { return V(1) / sqrt_(x); }
};

template <typename V>
struct LSTMGates {
  V i, f, g, o;
};

// The activated gates and c_t = f * c_{t-1} + i * g.
template <typename M, typename V>
RNNKERNELS_HD void lstm_cell_forward(const LSTMGates<V>& pre, V c_prev, LSTMGates<V>& act, V& c) {
  act.i = M::sigmoid(pre.i);
  act.f = M::sigmoid(pre.f);
  act.g = M::tanh(pre.g);
  act.o = M::sigmoid(pre.o);
  c = act.f * c_prev + act.i * act.g;
}

// c_t = f * c_{t-1} + i * g,  h_t = o * tanh(c_t)   (h_t before any projection)
template <typename M, typename V>
RNNKERNELS_HD void lstm_forward(const LSTMGates<V>& pre, V c_prev, LSTMGates<V>& act, V& c, V& h) {
  lstm_cell_forward<M>(pre, c_prev, act, c);
  h = act.o * M::tanh(c);
}

// The pre-activation gate gradients and dL/dc_{t-1}, given the activated gates, c_{t-1}, the
// tanh that h_t = o * tanh(...) took, dh = dL/dh_t and dc_total = dL/dc_t (all of it: carried
// from t+1 and through h_t).
template <typename V>
RNNKERNELS_HD void lstm_cell_backward(const LSTMGates<V>& act, V c_prev, V tanh_out, V dh,
                                      V dc_total, LSTMGates<V>& dpre, V& dc_prev) {
  dpre.i = dc_total * act.g * act.i * (V(1) - act.i);
  dpre.f = dc_total * c_prev * act.f * (V(1) - act.f);
  dpre.g = dc_total * act.i * (V(1) - act.g * act.g);
  dpre.o = dh * tanh_out * act.o * (V(1) - act.o);
  dc_prev = dc_total * act.f;
}

// Given the activated gates and c_t saved by the forward, dh = dL/dh_t (before projection) and
// dc = dL/dc_t carried from step t+1: the pre-activation gate gradients, dL/dc_{t-1}, and h_t
// recomputed (the projection's weight gradient needs it).
template <typename M, typename V>
RNNKERNELS_HD void lstm_backward(const LSTMGates<V>& act, V c, V c_prev, V dh, V dc,
                                 LSTMGates<V>& dpre, V& dc_prev, V& h) {
  const V tanh_c = M::tanh(c);
  lstm_cell_backward(act, c_prev, tanh_c, dh, dc + dh * act.o * (V(1) - tanh_c * tanh_c), dpre,
                     dc_prev);
  h = act.o * tanh_c;
}

// xr, xz, xn: input projections with b_ih (and b_hr, b_hz folded in);
// hr, hz: hidden projections; hn: the hidden projection of n plus b_hn (it sits inside r * (...)).
// n = tanh(xn + r * hn),  h_t = (1 - z) * n + z * h_{t-1}
template <typename M, typename V>
RNNKERNELS_HD void gru_forward(V xr, V xz, V xn, V hr, V hz, V hn, V h_prev,
                               V& r, V& z, V& n, V& h) {
  r = M::sigmoid(xr + hr);
  z = M::sigmoid(xz + hz);
  n = M::tanh(xn + r * hn);
  h = (V(1) - z) * n + z * h_prev;
}

// From the saved r, z, n, hn and dh = dL/dh_t: the gradients of the input-side pre-activations
// (dr, dz, dn), of the hidden projection of n (dhn = dn * r, the only gate where the two sides
// differ), and the part of dL/dh_{t-1} that bypasses W_hh (dh * z).
template <typename M, typename V>
RNNKERNELS_HD void gru_backward(V r, V z, V n, V hn, V h_prev, V dh,
                                V& dr_pre, V& dz_pre, V& dn_pre, V& dhn, V& dh_prev_direct) {
  const V dn = dh * (V(1) - z);
  const V dz = dh * (h_prev - n);
  dh_prev_direct = dh * z;
  dn_pre = dn * (V(1) - n * n);
  dhn = dn_pre * r;
  dr_pre = dn_pre * hn * r * (V(1) - r);
  dz_pre = dz * z * (V(1) - z);
}

// Elman RNN: h_t = act(pre); the backward needs only h_t itself.
template <typename M, bool Relu, typename V>
RNNKERNELS_HD V rnn_forward(V pre) {
  if constexpr (Relu) {
    return M::relu(pre);
  } else {
    return M::tanh(pre);
  }
}

template <typename M, bool Relu, typename V>
RNNKERNELS_HD V rnn_backward(V h, V dh) {
  if constexpr (Relu) {
    return M::relu_backward(h, dh);
  } else {
    return dh * (V(1) - h * h);
  }
}

// IndRNN: h_t = act(x + u * h_{t-1}), x the input projection with both biases, u the cell's
// recurrent weight (one per unit, no GEMM), act the Elman RNN's.
template <typename M, bool Relu, typename V>
RNNKERNELS_HD V indrnn_forward(V x, V u, V h_prev) {
  return rnn_forward<M, Relu>(x + u * h_prev);
}

// From h_t and dh = dL/dh_t: the pre-activation's gradient, this element's part of dL/du and
// dL/dh_{t-1} (all of it: nothing else carries h_{t-1} to step t).
template <typename M, bool Relu, typename V>
RNNKERNELS_HD void indrnn_backward(V h, V dh, V u, V h_prev, V& dpre, V& du, V& dh_prev) {
  dpre = rnn_backward<M, Relu>(h, dh);
  du = dpre * h_prev;
  dh_prev = dpre * u;
}

// Layer norm (Ba et al. 2016) of one value v of a row, given the row's mean and rstd =
// 1 / sqrt(variance + eps): the normalised value, to which the cell applies its gain and shift.
template <typename V>
RNNKERNELS_HD V layer_norm_forward(V v, V mean, V rstd) {
  return (v - mean) * rstd;
}

// dL/dv from the normalised value xhat, dxhat = dL/dxhat (the gain already applied), rstd, and
// the row's means of dxhat and of dxhat * xhat.
template <typename V>
RNNKERNELS_HD V layer_norm_backward(V xhat, V dxhat, V rstd, V mean_dxhat, V mean_dxhat_xhat) {
  return rstd * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat);
}

// The layer-normalised LSTM's output h_t = o * tanh(y), y its normalised c_t after the gain and
// shift; the backward gives tanh(y) (for the o gate's gradient) and dy = dL/dy from dh = dL/dh_t.
template <typename M, typename V>
RNNKERNELS_HD V layer_norm_lstm_output(V o, V y) {
  return o * M::tanh(y);
}
template <typename M, typename V>
RNNKERNELS_HD void layer_norm_lstm_output_backward(V o, V y, V dh, V& tanh_y, V& dy) {
  tanh_y = M::tanh(y);
  dy = dh * o * (V(1) - tanh_y * tanh_y);
}

}  // namespace cells
}  // namespace rnnkernels
