// GEMMs through ATen, for backends without a faster GEMM of their own (see layer.h).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace rnnkernels {

// The per-step GEMM of a recurrence through ATen (cuBLAS for CUDA tensors, on the current
// stream): C[rows, n] = A[rows, k] op(W), or C += ... with `accumulate`, where W is
// [n, k] used as W^T when `transposed`, else [k, n]; A and C are row-major, A's rows a_stride
// (k or more) apart, C's contiguous. max_rows (the largest row count) and steps (how many runs)
// are hints for GEMMs that prepare the weight.
// Backends with a faster GEMM provide their own class with the same interface.
template <typename T>
class ATenRecurrentGemm {
 public:
  ATenRecurrentGemm(const at::Tensor& weight, bool transposed, int64_t a_stride,
                    int64_t /*max_rows*/, int64_t /*steps*/, bool accumulate)
      : weight_(transposed ? weight.t() : weight), a_stride_(a_stride), accumulate_(accumulate) {}

  void run(const T* a, T* c, int64_t rows) {
    const at::Tensor a_rows = at::from_blob(const_cast<T*>(a), {rows, weight_.size(0)},
                                            {a_stride_, 1}, weight_.options());
    at::Tensor c_rows = at::from_blob(c, {rows, weight_.size(1)}, weight_.options());
    if (accumulate_) {
      c_rows.addmm_(a_rows, weight_);
    } else {
      at::mm_out(c_rows, a_rows, weight_);
    }
  }

 private:
  at::Tensor weight_;
  int64_t a_stride_;
  bool accumulate_;
};

inline at::Tensor aten_addmm(const at::Tensor& bias, const at::Tensor& a, const at::Tensor& b) {
  return bias.defined() ? at::addmm(bias, a, b) : at::mm(a, b);
}

}  // namespace rnnkernels
