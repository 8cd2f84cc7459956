// The gate math of every cell, forward and backward, written once.
//
// Torch-free: included by the CPU kernels (csrc/cpu/) and the CUDA kernels (csrc/kernels/*.cu).
// Every function is templated on
//   M: the math policy that supplies the activations (ScalarMath below for one element; the CPU
//      path passes a policy over at::vec::Vectorized so one call handles a whole vector), and
//   V: the value type (float or double for ScalarMath; half types are computed in float).
// Only +, -, * and the policy's functions (sigmoid, tanh, relu, clip, rsqrt) are used, so the
// same code runs on scalars and vectors.
//
// Conventions: "*_pre" is a gate's pre-activation (input projection + hidden projection + biases),
// "d*" a gradient of the loss. Gate order is torch.nn's: LSTM (i, f, g, o), GRU (r, z, n).
#pragma once

#include <math.h>

// Inlined everywhere: the CPU driver runs a cell's whole step as one stretch of vector code, in
// which the activations of two vectors of units interleave (csrc/cpu/pointwise_kernels.h); left
// to itself, GCC keeps some of these functions out of line and passes their vectors through
// memory.
#if defined(__CUDACC__)
#define RNNKERNELS_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define RNNKERNELS_HD inline __attribute__((always_inline))
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

// Activations (and the clip of a cell, the rsqrt of a layer norm) on one float or double.
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
  // x limited to [-bound, bound] (NaN stays NaN), and its gradient given x: zero where x lies
  // outside, as torch.clamp's.
  template <typename V>
  static RNNKERNELS_HD V clip(V x, V bound) {
    return x < -bound ? -bound : (bound < x ? bound : x);
  }
  template <typename V>
  static RNNKERNELS_HD V clip_backward(V x, V bound, V dy) {
    return x < -bound || bound < x ? V(0) : dy;
  }
  // 1 / sqrt(x), for a layer norm's statistics.
  template <typename V>
  static RNNKERNELS_HD V rsqrt(V x) { return V(1) / sqrt_(x); }
};

template <typename V>
struct LSTMGates {
  V i, f, g, o;

  // Gate k in torch.nn's order.
  RNNKERNELS_HD const V& operator[](int k) const {
    return k == 0 ? i : k == 1 ? f : k == 2 ? g : o;
  }
};

// The pieces every LSTM cell (lstm, lstm_ext, layernorm_lstm) builds its step from.
//
// The cell update c = f * c_{t-1} + i * g: i, f and g activated from their pre-activations (o is
// the caller's, as it may depend on the new cell), and c returned.
template <typename M, typename V>
RNNKERNELS_HD V lstm_cell_update(const LSTMGates<V>& pre, V c_prev, LSTMGates<V>& act) {
  act.i = M::sigmoid(pre.i);
  act.f = M::sigmoid(pre.f);
  act.g = M::tanh(pre.g);
  return act.f * c_prev + act.i * act.g;
}

// Its backward, given the activated gates, c_{t-1} and dc = dL/dc (all of it): the gradients of
// i's, f's and g's pre-activations; returns the part of dL/dc_{t-1} through f.
template <typename V>
RNNKERNELS_HD V lstm_cell_update_backward(const LSTMGates<V>& act, V c_prev, V dc,
                                          LSTMGates<V>& dpre) {
  dpre.i = dc * act.g * act.i * (V(1) - act.i);
  dpre.f = dc * c_prev * act.f * (V(1) - act.f);
  dpre.g = dc * act.i * (V(1) - act.g * act.g);
  return dc * act.f;
}

// The output h = o * tanh(c), o the activated output gate (c: the cell, clipped for lstm_ext,
// normalised for layernorm_lstm).
template <typename M, typename V>
RNNKERNELS_HD V lstm_output(V o, V c) {
  return o * M::tanh(c);
}

// Its backward, given dh = dL/dh: tanh(c), the gradient of o's pre-activation and dL/dc through
// h.
template <typename M, typename V>
RNNKERNELS_HD void lstm_output_backward(V o, V c, V dh, V& tanh_c, V& do_pre, V& dc) {
  tanh_c = M::tanh(c);
  do_pre = dh * tanh_c * o * (V(1) - o);
  dc = dh * o * (V(1) - tanh_c * tanh_c);
}

// c_t = f * c_{t-1} + i * g,  h_t = o * tanh(c_t)   (h_t before any projection)
template <typename M, typename V>
RNNKERNELS_HD void lstm_forward(const LSTMGates<V>& pre, V c_prev, LSTMGates<V>& act, V& c, V& h) {
  c = lstm_cell_update<M>(pre, c_prev, act);
  act.o = M::sigmoid(pre.o);
  h = lstm_output<M>(act.o, c);
}

// Given the activated gates and c_t saved by the forward, dh = dL/dh_t (before projection) and
// dc = dL/dc_t carried from step t+1: the pre-activation gate gradients, dL/dc_{t-1}, and h_t
// recomputed (the projection's weight gradient needs it).
template <typename M, typename V>
RNNKERNELS_HD void lstm_backward(const LSTMGates<V>& act, V c, V c_prev, V dh, V dc,
                                 LSTMGates<V>& dpre, V& dc_prev, V& h) {
  V tanh_c, dc_h;
  lstm_output_backward<M>(act.o, c, dh, tanh_c, dpre.o, dc_h);
  dc_prev = lstm_cell_update_backward(act, c_prev, dc + dc_h, dpre);
  h = act.o * tanh_c;
}

// The extended LSTM's options (traits' LSTMExt), on top of the update above: peephole weights
// p (0 where there are none), a cell clip `bound` (infinity for none) and zoneout:
//   i = sigmoid(pre_i + p_i c_{t-1}),  f = sigmoid(pre_f + p_f c_{t-1}),  g = tanh(pre_g),
//   u = f c_{t-1} + i g,  c~ = clip(u, bound),  o = sigmoid(pre_o + p_o c~),  h~ = o tanh(c~);
// then c_t = zoneout(d_c, c_{t-1}, c~) and h_t = zoneout(d_h, h_{t-1}, h~).
template <typename V>
struct LSTMPeepholes {
  V i, f, o;
};

// u, c~ and h~ (before zoneout) and the activated gates.
template <typename M, typename V>
RNNKERNELS_HD void lstm_ext_forward(const LSTMGates<V>& pre, const LSTMPeepholes<V>& p, V c_prev,
                                    V bound, LSTMGates<V>& act, V& u, V& c, V& h) {
  u = lstm_cell_update<M>({pre.i + p.i * c_prev, pre.f + p.f * c_prev, pre.g, pre.o}, c_prev,
                          act);
  c = M::clip(u, bound);
  act.o = M::sigmoid(pre.o + p.o * c);
  h = lstm_output<M>(act.o, c);
}

// Given the activated gates, u and c_{t-1}, dh = dL/dh~ and dc = dL/dc~ (zoneout's shares of
// dL/dh_t and dL/dc_t): the pre-activation gate gradients, this element's part of the peepholes'
// gradients, and dL/dc_{t-1} through the new cell (zoneout's direct part not included).
template <typename M, typename V>
RNNKERNELS_HD void lstm_ext_backward(const LSTMGates<V>& act, const LSTMPeepholes<V>& p, V u,
                                     V c_prev, V bound, V dh, V dc, LSTMGates<V>& dpre,
                                     LSTMPeepholes<V>& dp, V& dc_prev) {
  const V c = M::clip(u, bound);
  V tanh_c, dc_h;
  lstm_output_backward<M>(act.o, c, dh, tanh_c, dpre.o, dc_h);
  const V du = M::clip_backward(u, bound, dc + dc_h + dpre.o * p.o);
  const V dc_prev_f = lstm_cell_update_backward(act, c_prev, du, dpre);
  dc_prev = dc_prev_f + dpre.i * p.i + dpre.f * p.f;
  dp.i = dpre.i * c_prev;
  dp.f = dpre.f * c_prev;
  dp.o = dpre.o * c;
}

// Zoneout (Krueger et al. 2016): a state keeps its previous value with weight d, a mask of 0 and
// 1 in training, its probability in eval (the mask's expectation). Exact for d = 0 and d = 1.
// The gradient splits likewise: d of it to `prev`, 1 - d to `next`.
template <typename V>
RNNKERNELS_HD V zoneout(V d, V prev, V next) {
  return d * prev + (V(1) - d) * next;
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

}  // namespace cells
}  // namespace rnnkernels
