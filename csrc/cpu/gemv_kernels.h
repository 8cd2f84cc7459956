// The matrix-vector kernels of gemv.h, compiled once per instruction set alongside the pointwise
// drivers (pointwise_default.cpp, pointwise_avx2.cpp, pointwise_avx512.cpp define RNNKERNELS_ISA
// and the at::vec capability macros, then include this file); pointwise.cpp picks one at run
// time.
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>

namespace rnnkernels {
namespace RNNKERNELS_ISA {
namespace gemv_detail {

using V = at::vec::Vectorized<float>;
constexpr int64_t kLanes = V::size();

// Rows [0, R) of gemv_rows: each row's dot product with x in its own accumulator, so that one
// load of x feeds R rows, then each reduced across its lanes.
template <int R>
C10_ALWAYS_INLINE void dot_rows(const float* x, const float* w, int64_t ld, int64_t k, float* y,
                                bool accumulate) {
  V acc[R];
  for (int i = 0; i < R; ++i) acc[i] = V(0);
  int64_t j = 0;
  for (; j + kLanes <= k; j += kLanes) {
    const V xs = V::loadu(x + j);
    for (int i = 0; i < R; ++i) acc[i] = at::vec::fmadd(xs, V::loadu(w + i * ld + j), acc[i]);
  }
  if (j < k) {
    // Past k the partial loads read zeros.
    const V xs = V::loadu(x + j, k - j);
    for (int i = 0; i < R; ++i) {
      acc[i] = at::vec::fmadd(xs, V::loadu(w + i * ld + j, k - j), acc[i]);
    }
  }
  for (int i = 0; i < R; ++i) {
    const float sum =
        at::vec::vec_reduce_all<float>([](const V& a, const V& b) { return a + b; }, acc[i]);
    y[i] = accumulate ? y[i] + sum : sum;
  }
}

// Columns [0, C * kLanes) of gemv_columns (`width` of them, fewer in the last block): x[r] times
// each row's stretch, added up in C vectors of accumulators.
template <int C, bool kFull>
C10_ALWAYS_INLINE void axpy_columns(const float* x, const float* w, int64_t ld, int64_t k,
                                    int64_t width, float* y, bool accumulate) {
  V acc[C];
  const auto lanes = [&](int c) { return std::clamp<int64_t>(width - c * kLanes, 0, kLanes); };
  for (int c = 0; c < C; ++c) {
    if (!accumulate) {
      acc[c] = V(0);
    } else {
      acc[c] = kFull ? V::loadu(y + c * kLanes) : V::loadu(y + c * kLanes, lanes(c));
    }
  }
  for (int64_t r = 0; r < k; ++r) {
    const V xr(x[r]);
    const float* row = w + r * ld;
    for (int c = 0; c < C; ++c) {
      const V ws = kFull ? V::loadu(row + c * kLanes) : V::loadu(row + c * kLanes, lanes(c));
      acc[c] = at::vec::fmadd(xr, ws, acc[c]);
    }
  }
  for (int c = 0; c < C; ++c) {
    if (kFull) {
      acc[c].store(y + c * kLanes);
    } else if (lanes(c) > 0) {
      acc[c].store(y + c * kLanes, lanes(c));
    }
  }
}

}  // namespace gemv_detail

void gemv_rows(const float* x, const float* w, int64_t ld, int64_t k, int64_t n, float* y,
               bool accumulate) {
  using namespace gemv_detail;
  int64_t r = 0;
  for (; r + 4 <= n; r += 4) dot_rows<4>(x, w + r * ld, ld, k, y + r, accumulate);
  for (; r < n; ++r) dot_rows<1>(x, w + r * ld, ld, k, y + r, accumulate);
}

void gemv_columns(const float* x, const float* w, int64_t ld, int64_t k, int64_t n, float* y,
                  bool accumulate) {
  using namespace gemv_detail;
  constexpr int C = 4;
  constexpr int64_t block = C * kLanes;
  int64_t u = 0;
  for (; u + block <= n; u += block) {
    axpy_columns<C, true>(x, w + u, ld, k, block, y + u, accumulate);
  }
  if (u < n) axpy_columns<C, false>(x, w + u, ld, k, n - u, y + u, accumulate);
}

}  // namespace RNNKERNELS_ISA
}  // namespace rnnkernels
