// The CPU pointwise driver, compiled once per instruction set: pointwise_default.cpp,
// pointwise_avx2.cpp and pointwise_avx512.cpp each define RNNKERNELS_ISA (the namespace) and the
// at::vec capability macros, enable the instructions, then include this file and instantiate
// the drivers for the list of cells; pointwise.cpp picks one at run time. Without this, at::vec
// falls back to scalar loops and the activations (exp, tanh) cost more than the per-step GEMM.
//
// Loops over the rows of a step (parallel over rows with at::parallel_for) and over the hidden
// units (vectorised with at::vec; the half types as float), running each cell's element functions
// (csrc/kernels/traits.h) on a vector of units at a time, or a row at a time for a cell that
// reduces over rows.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <type_traits>

#include "../kernels/cell_list.h"
#include "../kernels/params.h"
#include "../kernels/step.h"

namespace rnnkernels {
namespace RNNKERNELS_ISA {
namespace {

// Activations on a whole at::vec::Vectorized at once, always inlined (see Pair). kCoarse: for
// bfloat16's steps, whose every stored value is rounded to 8 bits, float32 math within 2e-4
// relative, a tenth of that rounding's half-ulp or less, at two thirds of the instructions;
// float16, with 11 bits, and float32 get the precise math. Against float64, bfloat16 layers'
// errors did not change measurably (docs/DESIGN.md, "CPU backend").
template <bool kCoarse>
struct VecMath {
  // at::vec's inline polynomial exp (float: at most 20 ulp; double: Sleef's exp), several times
  // cheaper than Sleef's float exp, a function call. It would turn NaN into a number, so NaN
  // lanes are put back.
  template <typename V>
  C10_ALWAYS_INLINE static V exp(V x) { return V::blendv(x.exp_u20(), x, x.isnan()); }
#if defined(CPU_CAPABILITY_AVX512)
  // exp(x) = 2^n exp(r), n = round(x / ln 2), |r| <= ln(2) / 2: a degree-5 polynomial for exp(r)
  // (coefficients fitted here for relative error, 9e-8 on that interval; coarse: degree 3, 1.0e-4)
  // and the hardware's scalef for the 2^n, which makes overflow inf and underflow 0 and keeps
  // NaN. Half of exp_u20's instructions; relative error 4e-7, measured over [-87, 88]. x is
  // clamped first: for infinite x, n would be infinite and r NaN. The clamp takes x as the second
  // operand, which vmaxps and vminps return when either is NaN.
  C10_ALWAYS_INLINE static at::vec::Vectorized<float> exp(at::vec::Vectorized<float> x) {
    const __m512 clamped = _mm512_min_ps(_mm512_set1_ps(88.8f),
                                         _mm512_max_ps(_mm512_set1_ps(-104.f), x));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(clamped, _mm512_set1_ps(1.44269504f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693147181f), clamped);
    __m512 p;
    if constexpr (kCoarse) {
      p = _mm512_fmadd_ps(r, _mm512_set1_ps(0.16517556f), _mm512_set1_ps(0.50412376f));
      p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(1.00019555f));
    } else {
      p = _mm512_fmadd_ps(r, _mm512_set1_ps(0.00829024f), _mm512_set1_ps(0.04189778f));
      p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(0.16667636f));
      p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(0.49999151f));
      p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(0.99999971f));
    }
    p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(1.f));
    return _mm512_scalef_ps(p, n);
  }
#endif
  // 1 / d for the d >= 1 (or NaN) of sigmoid and tanh.
  template <typename V>
  C10_ALWAYS_INLINE static V reciprocal(V d) { return V(1) / d; }
#if defined(CPU_CAPABILITY_AVX512)
  // The hardware's 14-bit estimate (coarse: alone, within 6.1e-5 relative) and one Newton step,
  // r (2 - d r): within about an ulp, at a fraction of a division's cost. The step would make
  // 1 / inf NaN: those lanes keep 0, so that sigmoid(-inf) is exactly 0, as torch.nn's.
  C10_ALWAYS_INLINE static at::vec::Vectorized<float> reciprocal(at::vec::Vectorized<float> d) {
    const __m512 r = _mm512_rcp14_ps(d);
    if constexpr (kCoarse) return r;
    const __m512 refined = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.f)));
    const __mmask16 infinite = _mm512_cmp_ps_mask(d, _mm512_set1_ps(INFINITY), _CMP_EQ_OQ);
    return _mm512_mask_blend_ps(infinite, refined, _mm512_setzero_ps());
  }
#endif
  template <typename V>
  C10_ALWAYS_INLINE static V sigmoid(V x) { return reciprocal(V(1) + exp(x.neg())); }
  // float: tanh(x) = x P(x^2) / Q(x^2), P and Q polynomials of degree 5 and 3, their
  // coefficients fitted here for relative error on [0, 8.5] (3.5e-8 in float64; 3.5e-7 measured
  // in float32, against 9e-7 for the form 2 sigmoid(2x) - 1 with tanh's series near 0 that it
  // replaces, at half the instructions). Q >= 1: one reciprocal. Past 8.5 the fraction grows
  // above 1 (by 5e-6 at 9.5, where x is clamped), so the clamp of the result to [-1, 1] makes
  // tanh exactly +-1 from there on, as torch.tanh's float is from about 9, and +-inf map to +-1.
  // at::vec::clamp keeps NaN. Coarse: P and Q of degree 2, fitted on [0, 5] (8.1e-5 in float32;
  // the fraction passes 1 at 5.06, where tanh is within 1e-4 of it). double: Sleef's tanh
  // (1 ulp), full precision everywhere; double is the precise path, not the fast one.
  template <typename V>
  C10_ALWAYS_INLINE static V tanh(V x) {
    if constexpr (std::is_same_v<V, at::vec::Vectorized<double>>) {
      return x.tanh();
    } else if constexpr (kCoarse) {
      const V c = at::vec::clamp(x, V(-9.5f), V(9.5f));
      const V t = c * c;
      V p = at::vec::fmadd(t, V(6.7079009e-04f), V(1.0242555e-01f));
      p = at::vec::fmadd(t, p, V(9.9994867e-01f));
      V q = at::vec::fmadd(t, V(1.2822197e-02f), V(4.3544168e-01f));
      q = at::vec::fmadd(t, q, V(1.f));
      return at::vec::clamp(c * p * reciprocal(q), V(-1.f), V(1.f));
    } else {
      const V c = at::vec::clamp(x, V(-9.5f), V(9.5f));
      const V t = c * c;
      V p = at::vec::fmadd(t, V(2.0728629e-11f), V(-1.3720812e-08f));
      p = at::vec::fmadd(t, p, V(9.5743887e-06f));
      p = at::vec::fmadd(t, p, V(2.9539507e-03f));
      p = at::vec::fmadd(t, p, V(1.2949960e-01f));
      p = at::vec::fmadd(t, p, V(9.9999997e-01f));
      V q = at::vec::fmadd(t, V(2.3271320e-04f), V(2.3898601e-02f));
      q = at::vec::fmadd(t, q, V(4.6283264e-01f));
      q = at::vec::fmadd(t, q, V(1.f));
      return at::vec::clamp(c * p * reciprocal(q), V(-1.f), V(1.f));
    }
  }
  template <typename V>
  C10_ALWAYS_INLINE static V relu(V x) { return at::vec::clamp_min(x, V(0)); }
  template <typename V>
  C10_ALWAYS_INLINE static V relu_backward(V y, V dy) {
    return V::blendv(dy, V(0), y <= V(0));
  }
  // As cells::ScalarMath's: at::vec's minimum and maximum propagate NaN.
  template <typename V>
  C10_ALWAYS_INLINE static V clip(V x, V bound) {
    return at::vec::minimum(at::vec::maximum(x, bound.neg()), bound);
  }
  template <typename V>
  C10_ALWAYS_INLINE static V clip_backward(V x, V bound, V dy) {
    return V::blendv(dy, V(0), x.abs() > bound);
  }
  // A layer norm's 1 / sqrt(x): at::vec's, a square root and a division.
  template <typename V>
  C10_ALWAYS_INLINE static V rsqrt(V x) { return x.rsqrt(); }
};

// How the loops read and write T, a vector or a pair of vectors at a time: vectors of T for float
// and double; for the half types vectors of float, converted on load and store, so their
// activations run as float's. The conversions are vector instructions on a half-type vector, which
// holds twice float's lanes: a pair converts one whole, a single vector its low half. at::vec::
// convert between arrays takes a scalar loop below a full half-type vector, which made the
// bfloat16 LSTM's pointwise step 4x slower than float32's.
template <typename T, typename Enable = void>
struct Lanes {
  using V = at::vec::Vectorized<float>;
  using M = VecMath<std::is_same_v<T, c10::BFloat16>>;
  static constexpr int64_t width = V::size();
  static_assert(at::vec::Vectorized<T>::size() == 2 * width);
  C10_ALWAYS_INLINE static V load(const T* p, int64_t n) {
    return std::get<0>(at::vec::convert_to_float<T>(at::vec::Vectorized<T>::loadu(p, n)));
  }
  C10_ALWAYS_INLINE static void store(T* p, const V& v, int64_t n) {
    at::vec::convert_from_float<T>(v, v).store(p, n);
  }
  C10_ALWAYS_INLINE static std::tuple<V, V> load_pair(const T* p, int64_t n) {
    using H = at::vec::Vectorized<T>;
    return at::vec::convert_to_float<T>(n == H::size() ? H::loadu(p) : H::loadu(p, n));
  }
  C10_ALWAYS_INLINE static void store_pair(T* p, const V& a, const V& b, int64_t n) {
    const at::vec::Vectorized<T> v = at::vec::convert_from_float<T>(a, b);
    if (n == v.size()) {
      v.store(p);
    } else {
      v.store(p, n);
    }
  }
};

template <typename T>
struct Lanes<T, std::enable_if_t<std::is_same_v<T, float> || std::is_same_v<T, double>>> {
  using V = at::vec::Vectorized<T>;
  using M = VecMath<false>;
  static constexpr int64_t width = V::size();
  C10_ALWAYS_INLINE static V load(const T* p, int64_t n) {
    return n == width ? V::loadu(p) : V::loadu(p, n);
  }
  C10_ALWAYS_INLINE static void store(T* p, const V& v, int64_t n) {
    if (n == width) {
      v.store(p);
    } else {
      v.store(p, n);
    }
  }
  C10_ALWAYS_INLINE static std::tuple<V, V> load_pair(const T* p, int64_t n) {
    if (n <= width) return {load(p, n), V(0)};
    return {load(p, width), load(p + width, n - width)};
  }
  C10_ALWAYS_INLINE static void store_pair(T* p, const V& a, const V& b, int64_t n) {
    if (n <= width) {
      store(p, a, n);
    } else {
      store(p, a, width);
      store(p + width, b, n - width);
    }
  }
};

// Two vectors of units as one value, for the element-wise cells: every operation runs on both, so
// each activation's chain of dependent instructions (two dozen, a latency apiece) has an
// independent twin beside it, and the step's code is one inlined stretch (VecMath, cells.h's
// RNNKERNELS_HD). Against one vector at a time with GCC's own inlining, bfloat16 inference at the
// grid's mid shapes took 0.85-0.92x the time (docs/DESIGN.md, "CPU backend").
template <typename V>
struct Pair {
  V a, b;
  Pair() = default;
  Pair(V a_, V b_) : a(a_), b(b_) {}
  explicit Pair(typename V::value_type x) : a(x), b(x) {}
  Pair operator+(const Pair& o) const { return {a + o.a, b + o.b}; }
  Pair operator-(const Pair& o) const { return {a - o.a, b - o.b}; }
  Pair operator*(const Pair& o) const { return {a * o.a, b * o.b}; }
  Pair operator-() const { return {a.neg(), b.neg()}; }
};

// Math's functions (a VecMath) on both vectors of a Pair.
template <typename Math>
struct PairMath {
#define RNNKERNELS_ON_BOTH(f)                            \
  template <typename... P>                               \
  C10_ALWAYS_INLINE static auto f(const P&... x) {       \
    return Pair{Math::f(x.a...), Math::f(x.b...)};       \
  }
  RNNKERNELS_ON_BOTH(sigmoid)
  RNNKERNELS_ON_BOTH(tanh)
  RNNKERNELS_ON_BOTH(relu)
  RNNKERNELS_ON_BOTH(relu_backward)
  RNNKERNELS_ON_BOTH(clip)
  RNNKERNELS_ON_BOTH(clip_backward)
  RNNKERNELS_ON_BOTH(rsqrt)
#undef RNNKERNELS_ON_BOTH
};

// Calls body(row, unit, lanes) for every chunk of `width` units of [unit_begin, unit_end) (the
// last of a row narrower) of every row. The chunks are independent, so they split across
// threads, by rows and within rows (a batch of one still splits). The grain, 1024 units in whole
// chunks, keeps a split's work well above the cost of waking a thread: a unit is a few dozen
// flops. A split finds its first chunk's row by one division and then steps along; a division
// per chunk cost the bfloat16 RNN (50, 128, 128) 2-15% of its inference (docs/DESIGN.md, "CPU
// backend").
template <int64_t width, typename Body>
void for_each_chunk(int64_t batch, int64_t unit_begin, int64_t unit_end, const Body& body) {
  constexpr int64_t grain = 1024 / width;
  const int64_t chunks_per_row = (unit_end - unit_begin + width - 1) / width;
  at::parallel_for(0, batch * chunks_per_row, grain, [&](int64_t begin, int64_t end) {
    int64_t row = begin / chunks_per_row;
    int64_t unit = unit_begin + (begin - row * chunks_per_row) * width;
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      body(row, unit, std::min(width, unit_end - unit));
      unit += width;
      if (unit >= unit_end) {
        unit = unit_begin;
        ++row;
      }
    }
  });
}

// The IO policy of the step accessors (csrc/kernels/step.h): `lanes` consecutive units at once.
template <typename T>
struct LanesIO {
  using Value = typename Lanes<T>::V;
  using Math = typename Lanes<T>::M;
  int64_t lanes;
  C10_ALWAYS_INLINE Value load(const T* p) const { return Lanes<T>::load(p, lanes); }
  C10_ALWAYS_INLINE void store(T* p, const Value& v) const { Lanes<T>::store(p, v, lanes); }
};

// The same over a Pair of vectors: `lanes` consecutive units, up to twice a vector's width.
template <typename T>
struct PairIO {
  using Value = Pair<typename Lanes<T>::V>;
  using Math = PairMath<typename Lanes<T>::M>;
  static constexpr int64_t width = 2 * Lanes<T>::width;
  int64_t lanes;
  C10_ALWAYS_INLINE Value load(const T* p) const {
    const auto [a, b] = Lanes<T>::load_pair(p, lanes);
    return {a, b};
  }
  C10_ALWAYS_INLINE void store(T* p, const Value& v) const {
    Lanes<T>::store_pair(p, v.a, v.b, lanes);
  }
};

// A row (csrc/kernels/step.h) on this thread: its positions are the row's chunks of lanes, in
// order.
template <typename Cell, typename T, typename Params>
class LanesRow : public RowBase<LanesIO<T>, Params> {
  using Base = RowBase<LanesIO<T>, Params>;
  using Position = Step<Cell, T, LanesIO<T>, Params>;
  static constexpr int64_t width = Lanes<T>::width;

 public:
  using typename Base::Value;
  using Base::Base;

  template <typename F>
  void for_each(const F& f) const {
    for (int64_t unit = 0; unit < this->p_.hidden; unit += width) f(position(unit));
  }
  template <typename F>
  Value sum(const F& f) const {
    Value total(0);
    for (int64_t unit = 0; unit < this->p_.hidden; unit += width) {
      const Value value = f(position(unit));
      const int64_t lanes = std::min(width, this->p_.hidden - unit);
      // The lanes past the row's end hold what f made of zeros: they must not count.
      total = total + (lanes == width ? value : Value::set(Value(0), value, lanes));
    }
    return Value(at::vec::vec_reduce_all<typename Value::value_type>(
        [](Value a, Value b) { return a + b; }, total));
  }

 private:
  Position position(int64_t unit) const {
    return Position(this->p_, this->row_, unit,
                    LanesIO<T>{std::min(width, this->p_.hidden - unit)});
  }
};

// One direction's step of any cell: its element functions (csrc/kernels/traits.h) on every chunk
// of units of every row, or, for a row-wise cell, on every row (in parallel over rows, with a
// grain that keeps a split's work, in units, as for_each_chunk's).
template <typename Cell, typename Direction, typename T>
void run(const typename Direction::template Params<T>& p) {
  using Params = typename Direction::template Params<T>;
  if constexpr (Cell::kRowwise) {
    const int64_t chunks_per_row = (p.hidden + Lanes<T>::width - 1) / Lanes<T>::width;
    const int64_t grain = std::max<int64_t>(1, 1024 / Lanes<T>::width / chunks_per_row);
    at::parallel_for(0, p.rows, grain, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        Direction::template run<Cell>(LanesRow<Cell, T, Params>(p, row));
      }
    });
  } else {
    for_each_chunk<PairIO<T>::width>(p.rows, p.unit_begin, p.unit_end, [&](int64_t row,
                                                                            int64_t unit,
                                                                            int64_t lanes) {
      Direction::template run<Cell>(Step<Cell, T, PairIO<T>, Params>(p, row, unit,
                                                                     PairIO<T>{lanes}));
    });
  }
}

}  // namespace

template <typename Cell, typename T>
void forward(const StepForwardParams<T>& p) {
  run<Cell, Forward, T>(p);
}

template <typename Cell, typename T>
void backward(const StepBackwardParams<T>& p) {
  run<Cell, Backward, T>(p);
}

// The drivers of every cell of an X-macro list (csrc/kernels/cell_list.h): the library's, or
// the one an includer names in RNNKERNELS_DRIVER_CELLS (the tests' CUDA emulation does).
#ifndef RNNKERNELS_DRIVER_CELLS
#define RNNKERNELS_DRIVER_CELLS RNNKERNELS_FOR_EACH_CELL
#endif
#define RNNKERNELS_INSTANTIATE(Cell, T)                          \
  template void forward<Cell, T>(const StepForwardParams<T>&);   \
  template void backward<Cell, T>(const StepBackwardParams<T>&);
RNNKERNELS_DRIVER_CELLS(RNNKERNELS_FOR_EACH_DTYPE, RNNKERNELS_INSTANTIATE, c10::Half,
                        c10::BFloat16)
#undef RNNKERNELS_INSTANTIATE

}  // namespace RNNKERNELS_ISA
}  // namespace rnnkernels
