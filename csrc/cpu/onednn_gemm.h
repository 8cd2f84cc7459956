// GEMMs through oneDNN's matmul: float32's, which on this project's AVX-512 machines runs faster
// than ATen's at::mm (MKL, which does not use AVX-512 on AMD CPUs), and those of bfloat16 and
// float16 (float32 accumulation, the result rounded once) where the CPU has dot products for
// them, which ATen's at::mm runs through oneDNN too but at a set-up cost of tens of microseconds
// a call: docs/DESIGN.md, "CPU backend".
// Built only when oneDNN's headers and library are found (setup.py: RNNKERNELS_WITH_ONEDNN).
//
// oneDNN compiles a kernel for every problem shape, which costs far more than a run, so the matmul
// primitives are cached by shape, process-wide, the kDefaultPrimitiveCacheCapacity most recently
// used ones (the environment variable RNNKERNELS_PRIMITIVE_CACHE_CAPACITY, read at the first
// GEMM, sets another bound); weights are never cached (a tensor's data can change without its
// version counter knowing, e.g. through .data).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>

namespace rnnkernels {

// How many matmul primitives the cache keeps. The once-per-layer GEMMs take their row count at
// run time, so a layer needs a few primitives whatever its packed lengths, plus one per distinct
// step size of its per-step GEMMs (at most the batch size); this bounds what many distinct layer
// and batch sizes can hold.
constexpr size_t kDefaultPrimitiveCacheCapacity = 1024;

// The per-step GEMM of a recurrence: C[rows, n] = A[rows, k] op(W) (C += ... with `accumulate`),
// for one fixed weight and a row count that changes from step to step (packed batches). A and C
// are row-major, A's rows a_stride (k or more) apart, C's contiguous; T is float, c10::BFloat16
// or c10::Half.
//   weight: [n, k] used as W^T when `transposed` (x W^T, as in a linear layer), else [k, n].
//   max_rows: the largest row count; steps: how many times it will run, which decides whether
//   copying the weight (one pass over it) pays off: into the blocked layout oneDNN's kernels
//   read (the half types; float32 with AVX-512), else into a padded row stride.
// One object runs on one thread at a time (it keeps per-step state); objects on different
// threads run concurrently. Inside a parallel region the GEMM runs on the calling thread alone.
struct OneDnnRecurrentGemmState;

template <typename T>
class OneDnnRecurrentGemm {
 public:
  OneDnnRecurrentGemm(const at::Tensor& weight, bool transposed, int64_t a_stride,
                      int64_t max_rows, int64_t steps, bool accumulate);
  ~OneDnnRecurrentGemm();
  OneDnnRecurrentGemm(const OneDnnRecurrentGemm&) = delete;
  OneDnnRecurrentGemm& operator=(const OneDnnRecurrentGemm&) = delete;

  void run(const T* a, T* c, int64_t rows);

 private:
  std::unique_ptr<OneDnnRecurrentGemmState> state_;
};

extern template class OneDnnRecurrentGemm<float>;
extern template class OneDnnRecurrentGemm<c10::BFloat16>;
extern template class OneDnnRecurrentGemm<c10::Half>;

// The same product through oneDNN's BLAS-like dnnl_sgemm: no primitive to look up and no memory
// objects, so a cheaper call than a matmul primitive's or ATen's at::mm (docs/DESIGN.md), but
// slower kernels than a matmul with a prepacked weight: for recurrences too small to repay one.
class OneDnnSmallGemm {
 public:
  OneDnnSmallGemm(const at::Tensor& weight, bool transposed, int64_t a_stride, int64_t max_rows,
                  int64_t steps, bool accumulate);

  void run(const float* a, float* c, int64_t rows);

 private:
  const float* weight_;
  int64_t k_, n_, a_stride_;
  bool transposed_, accumulate_;
};

// a [m, k] b [k, n] (+ bias [n] when defined) -> [m, n], for float32, bfloat16 or float16 CPU
// tensors (a and b of one dtype, the bias of any of these) of any 2-D strides (a transposed view
// costs nothing). For the large once-per-layer GEMMs, and all of the half types'.
at::Tensor onednn_addmm(const at::Tensor& bias, const at::Tensor& a, const at::Tensor& b);

// Whether this oneDNN has matmul kernels for `type` on this CPU (float32 always; the half types
// need AVX-512 at least), asked once per type.
bool onednn_supports(at::ScalarType type);

// onednn_addmm through dnnl_sgemm, for small products (see OneDnnSmallGemm).
at::Tensor onednn_small_addmm(const at::Tensor& bias, const at::Tensor& a, const at::Tensor& b);

}  // namespace rnnkernels
