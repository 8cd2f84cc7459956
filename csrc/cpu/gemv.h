// Matrix-vector products on the calling thread, for the per-step GEMMs of a single row (a batch
// of one, or one thread's slice of its hidden units): vectorised per instruction set
// (gemv_kernels.h), no call set-up, and weights read where they lie, as views with rows `ld`
// elements apart. Against dnnl_sgemm of one row, which costs about a microsecond a call in
// set-up: docs/DESIGN.md, "CPU backend".
#pragma once

#include <cstdint>

namespace rnnkernels {

// y[n] = W x: y[r] = sum_i x[i] w[r * ld + i], W [n, k] (the forward's h_{t-1} W_hh^T); added to
// y with `accumulate`.
void gemv_rows(const float* x, const float* w, int64_t ld, int64_t k, int64_t n, float* y,
               bool accumulate);

// y[n] = x W: y[u] = sum_r x[r] w[r * ld + u], W [k, n] (the backward's dL/d gates W_hh); added
// to y with `accumulate`.
void gemv_columns(const float* x, const float* w, int64_t ld, int64_t k, int64_t n, float* y,
                  bool accumulate);

}  // namespace rnnkernels
