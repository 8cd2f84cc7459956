// The CPU pointwise step kernels, compiled once per instruction set: pointwise_default.cpp,
// pointwise_avx2.cpp and pointwise_avx512.cpp each define RNNKERNELS_ISA (the namespace) and the
// at::vec capability macros, enable the instructions, then include this file; pointwise.cpp picks
// one at run time. Without this, at::vec falls back to scalar loops and the activations (exp,
// tanh) cost more than the per-step GEMM.
//
// Loops over the rows of a step (parallel over rows with at::parallel_for) and over the hidden
// units (vectorised with at::vec for float and double), calling the cell math of cells.h.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "../kernels/cells.h"
#include "../kernels/params.h"

namespace rnnkernels {
namespace RNNKERNELS_ISA {
namespace {

// Activations on a whole at::vec::Vectorized at once.
struct VecMath {
  // at::vec's inline polynomial exp (float: at most 20 ulp; double: Sleef's exp), several times
  // cheaper than Sleef's float exp, a function call. It would turn NaN into a number, so NaN
  // lanes are put back.
  template <typename V>
  static V exp(V x) { return V::blendv(x.exp_u20(), x, x.isnan()); }
  // 1 / d for the d >= 1 (or NaN) of sigmoid and tanh.
  template <typename V>
  static V reciprocal(V d) { return V(1) / d; }
#if defined(CPU_CAPABILITY_AVX512)
  // The hardware's 14-bit estimate and one Newton step, r (2 - d r): within about an ulp, at a
  // fraction of a division's cost. The step would make 1 / inf NaN: those lanes keep 0, so that
  // sigmoid(-inf) is exactly 0, as torch.nn's.
  static at::vec::Vectorized<float> reciprocal(at::vec::Vectorized<float> d) {
    const __m512 r = _mm512_rcp14_ps(d);
    const __m512 refined = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.f)));
    const __mmask16 infinite = _mm512_cmp_ps_mask(d, _mm512_set1_ps(INFINITY), _CMP_EQ_OQ);
    return _mm512_mask_blend_ps(infinite, refined, _mm512_setzero_ps());
  }
#endif
  template <typename V>
  static V sigmoid(V x) { return reciprocal(V(1) + exp(x.neg())); }
  // float: tanh(x) = 2 sigmoid(2x) - 1, one exp and one reciprocal, several times cheaper than
  // Sleef's tanh, which dominated the step. Its error is absolute (about 1e-7), so near 0, where
  // that would be a large relative error, |x| < 1/4 takes tanh's series to x^7 instead (its
  // truncation error there is below 4e-7 relative). NaN and +-inf map as tanh does. double:
  // Sleef's tanh (1 ulp), full precision everywhere; double is the precise path, not the fast
  // one.
  template <typename V>
  static V tanh(V x) {
    if constexpr (std::is_same_v<V, at::vec::Vectorized<double>>) {
      return x.tanh();
    } else {
      const V via_sigmoid = V(2) * reciprocal(V(1) + exp(x * V(-2))) - V(1);
      const V x2 = x * x;
      const V series = x + x * x2 * (V(-1.f / 3) + x2 * (V(2.f / 15) + x2 * V(-17.f / 315)));
      return V::blendv(via_sigmoid, series, x.abs() < V(0.25f));
    }
  }
  template <typename V>
  static V relu(V x) { return at::vec::clamp_min(x, V(0)); }
  template <typename V>
  static V relu_backward(V y, V dy) { return V::blendv(dy, V(0), y <= V(0)); }
};

// How the loops read and write T: float and double a vector at a time; the half types one element
// at a time, computing in float.
template <typename T, typename Enable = void>
struct Lanes {
  using V = float;
  using M = cells::ScalarMath;
  static constexpr int64_t width = 1;
  static V load(const T* p, int64_t) { return static_cast<float>(*p); }
  static void store(T* p, V v, int64_t) { *p = static_cast<T>(v); }
};

template <typename T>
struct Lanes<T, std::enable_if_t<std::is_same_v<T, float> || std::is_same_v<T, double>>> {
  using V = at::vec::Vectorized<T>;
  using M = VecMath;
  static constexpr int64_t width = V::size();
  static V load(const T* p, int64_t n) { return n == width ? V::loadu(p) : V::loadu(p, n); }
  static void store(T* p, const V& v, int64_t n) {
    if (n == width) {
      v.store(p);
    } else {
      v.store(p, n);
    }
  }
};

// Calls body(row, unit, lanes) for every `lanes`-wide chunk of every row. The chunks are
// independent, so they split across threads, by rows and within rows (a batch of one still
// splits). The grain, in chunks, keeps a split's work well above the cost of waking a thread
// (about a microsecond): a chunk is a few dozen flops per lane.
template <typename T, typename Body>
void for_each_chunk(int64_t batch, int64_t hidden, const Body& body) {
  constexpr int64_t width = Lanes<T>::width;
  constexpr int64_t grain = 1024 / width;
  const int64_t chunks_per_row = (hidden + width - 1) / width;
  at::parallel_for(0, batch * chunks_per_row, grain, [&](int64_t begin, int64_t end) {
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t row = chunk / chunks_per_row;
      const int64_t unit = (chunk - row * chunks_per_row) * width;
      body(row, unit, std::min(width, hidden - unit));
    }
  });
}

}  // namespace

template <typename T>
void lstm_forward(const LSTMForwardParams<T>& p) {
  using L = Lanes<T>;
  using V = typename L::V;
  const int64_t H = p.hidden;
  for_each_chunk<T>(p.batch, H, [&](int64_t b, int64_t j, int64_t n) {
    const T* x = p.xproj + b * 4 * H + j;
    const T* hp = p.hproj + b * 4 * H + j;
    cells::LSTMGates<V> pre{L::load(x, n) + L::load(hp, n),
                            L::load(x + H, n) + L::load(hp + H, n),
                            L::load(x + 2 * H, n) + L::load(hp + 2 * H, n),
                            L::load(x + 3 * H, n) + L::load(hp + 3 * H, n)};
    cells::LSTMGates<V> act;
    V c, h;
    cells::lstm_forward<typename L::M>(pre, L::load(p.c + b * H + j, n), act, c, h);
    L::store(p.c + b * H + j, c, n);
    L::store(p.h + b * H + j, h, n);
    if (p.output != nullptr) L::store(p.output + b * H + j, h, n);
    if (p.reserve != nullptr) {
      T* r = p.reserve + b * 5 * H + j;
      L::store(r, act.i, n);
      L::store(r + H, act.f, n);
      L::store(r + 2 * H, act.g, n);
      L::store(r + 3 * H, act.o, n);
      L::store(r + 4 * H, c, n);
    }
  });
}

template <typename T>
void lstm_backward(const LSTMBackwardParams<T>& p) {
  using L = Lanes<T>;
  using V = typename L::V;
  const int64_t H = p.hidden;
  for_each_chunk<T>(p.batch, H, [&](int64_t b, int64_t j, int64_t n) {
    const T* r = p.reserve + b * 5 * H + j;
    const cells::LSTMGates<V> act{L::load(r, n), L::load(r + H, n), L::load(r + 2 * H, n),
                                  L::load(r + 3 * H, n)};
    const V c_prev = b < p.batch_continuing ? L::load(p.reserve_prev + b * 5 * H + 4 * H + j, n)
                                            : L::load(p.c0 + b * H + j, n);
    V dh = L::load(p.grad_h + b * H + j, n);
    if (p.grad_output != nullptr) dh = dh + L::load(p.grad_output + b * H + j, n);
    cells::LSTMGates<V> dpre;
    V dc_prev, h;
    cells::lstm_backward<typename L::M>(act, L::load(r + 4 * H, n), c_prev, dh,
                                        L::load(p.grad_c + b * H + j, n), dpre, dc_prev, h);
    T* g = p.grad_gates + b * 4 * H + j;
    L::store(g, dpre.i, n);
    L::store(g + H, dpre.f, n);
    L::store(g + 2 * H, dpre.g, n);
    L::store(g + 3 * H, dpre.o, n);
    L::store(p.grad_c + b * H + j, dc_prev, n);
    if (p.h != nullptr) L::store(p.h + b * H + j, h, n);
  });
}

template <typename T>
void gru_forward(const GRUForwardParams<T>& p) {
  using L = Lanes<T>;
  using V = typename L::V;
  const int64_t H = p.hidden;
  for_each_chunk<T>(p.batch, H, [&](int64_t b, int64_t j, int64_t n) {
    const T* x = p.xproj + b * 3 * H + j;
    const T* hp = p.hproj + b * 3 * H + j;
    V hn = L::load(hp + 2 * H, n);
    if (p.b_hn != nullptr) hn = hn + L::load(p.b_hn + j, n);
    V r, z, g, h;
    cells::gru_forward<typename L::M>(L::load(x, n), L::load(x + H, n), L::load(x + 2 * H, n),
                                      L::load(hp, n), L::load(hp + H, n), hn,
                                      L::load(p.h + b * H + j, n), r, z, g, h);
    L::store(p.h + b * H + j, h, n);
    L::store(p.output + b * H + j, h, n);
    if (p.reserve != nullptr) {
      T* res = p.reserve + b * 4 * H + j;
      L::store(res, r, n);
      L::store(res + H, z, n);
      L::store(res + 2 * H, g, n);
      L::store(res + 3 * H, hn, n);
    }
  });
}

template <typename T>
void gru_backward(const GRUBackwardParams<T>& p) {
  using L = Lanes<T>;
  using V = typename L::V;
  const int64_t H = p.hidden;
  for_each_chunk<T>(p.batch, H, [&](int64_t b, int64_t j, int64_t n) {
    const T* res = p.reserve + b * 4 * H + j;
    const V dh = L::load(p.grad_h + b * H + j, n) + L::load(p.grad_output + b * H + j, n);
    V dr, dz, dn, dhn, dh_prev;
    cells::gru_backward<typename L::M>(L::load(res, n), L::load(res + H, n),
                                       L::load(res + 2 * H, n), L::load(res + 3 * H, n),
                                       L::load(p.h_prev + b * H + j, n), dh, dr, dz, dn, dhn,
                                       dh_prev);
    T* gx = p.grad_gates_x + b * 3 * H + j;
    T* gh = p.grad_gates_h + b * 3 * H + j;
    L::store(gx, dr, n);
    L::store(gx + H, dz, n);
    L::store(gx + 2 * H, dn, n);
    L::store(gh, dr, n);
    L::store(gh + H, dz, n);
    L::store(gh + 2 * H, dhn, n);
    L::store(p.grad_h + b * H + j, dh_prev, n);
  });
}

template <typename T, bool Relu>
void rnn_forward(const RNNForwardParams<T>& p) {
  using L = Lanes<T>;
  using V = typename L::V;
  const int64_t H = p.hidden;
  for_each_chunk<T>(p.batch, H, [&](int64_t b, int64_t j, int64_t n) {
    const int64_t i = b * H + j;
    const V h = cells::rnn_forward<typename L::M, Relu>(L::load(p.xproj + i, n) +
                                                        L::load(p.hproj + i, n));
    L::store(p.h + i, h, n);
    L::store(p.output + i, h, n);
  });
}

template <typename T, bool Relu>
void rnn_backward(const RNNBackwardParams<T>& p) {
  using L = Lanes<T>;
  const int64_t H = p.hidden;
  for_each_chunk<T>(p.batch, H, [&](int64_t b, int64_t j, int64_t n) {
    const int64_t i = b * H + j;
    L::store(p.grad_pre + i,
             cells::rnn_backward<typename L::M, Relu>(
                 L::load(p.output + i, n), L::load(p.grad_h + i, n) + L::load(p.grad_output + i, n)),
             n);
  });
}

#define RNNKERNELS_INSTANTIATE_CPU(T)                                        \
  template void lstm_forward<T>(const LSTMForwardParams<T>&);                \
  template void lstm_backward<T>(const LSTMBackwardParams<T>&);              \
  template void gru_forward<T>(const GRUForwardParams<T>&);                  \
  template void gru_backward<T>(const GRUBackwardParams<T>&);                \
  template void rnn_forward<T, false>(const RNNForwardParams<T>&);           \
  template void rnn_forward<T, true>(const RNNForwardParams<T>&);            \
  template void rnn_backward<T, false>(const RNNBackwardParams<T>&);         \
  template void rnn_backward<T, true>(const RNNBackwardParams<T>&);

RNNKERNELS_INSTANTIATE_CPU(float)
RNNKERNELS_INSTANTIATE_CPU(double)
RNNKERNELS_INSTANTIATE_CPU(c10::Half)
RNNKERNELS_INSTANTIATE_CPU(c10::BFloat16)

#undef RNNKERNELS_INSTANTIATE_CPU

}  // namespace RNNKERNELS_ISA
}  // namespace rnnkernels
