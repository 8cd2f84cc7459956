// The CUDA backend of the step loops (csrc/layer/layer.h): each cell's pointwise step through
// the launch helpers of csrc/kernels/ (launchers.h), the GEMMs through ATen (cuBLAS for CUDA
// tensors, on the current stream) and a single batch slice, as every launch covers the whole
// batch. Written once over a Runtime, which says where the kernels run:
//   static cudaStream_t stream();                      // the stream to launch on
//   static void check(cudaError_t error);              // raises on a failed launch
//   static void copy(void* dst, const void* src, size_t bytes);  // ordered on that stream
// CUDARuntime (runtime.h) is the device's; the tests' CUDA emulation supplies a host one
// (tests/cuda_emulation/).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../kernels/launchers.h"
#include "../layer/aten_gemm.h"
#include "../layer/layer.h"

namespace rnnkernels {

// The CUDA type with the same bits as an ATen scalar type.
template <typename T>
struct KernelScalar {
  using type = T;
};
template <>
struct KernelScalar<c10::Half> {
  using type = __half;
};
template <>
struct KernelScalar<c10::BFloat16> {
  using type = __nv_bfloat16;
};

// The same params with every pointer retyped to the kernels' scalar type. The params structs
// hold only integers, floats and pointers, so both instantiations have one layout; copying the
// bytes is C++17's way to reinterpret all the pointers at once.
template <template <typename> class Params, typename T>
Params<typename KernelScalar<T>::type> to_kernel(const Params<T>& params) {
  using Out = Params<typename KernelScalar<T>::type>;
  static_assert(sizeof(Out) == sizeof(Params<T>) && std::is_trivially_copyable_v<Out>,
                "params structs must be plain data of one layout");
  Out out;
  std::memcpy(&out, &params, sizeof(out));
  return out;
}

// T is the ATen scalar type (float, double, c10::Half, c10::BFloat16); the pointers are memory
// the Runtime's kernels can reach.
template <typename Runtime>
struct KernelBackend {
  template <typename Cell, typename T>
  static void forward(const StepForwardParams<T>& p) {
    Runtime::check(launch_forward<Cell>(to_kernel(p), Runtime::stream()));
  }
  template <typename Cell, typename T>
  static void backward(const StepBackwardParams<T>& p) {
    Runtime::check(launch_backward<Cell>(to_kernel(p), Runtime::stream()));
  }
  template <typename T>
  static void copy(T* dst, const T* src, int64_t count) {
    Runtime::copy(dst, src, count * sizeof(T));
  }

  template <typename T>
  using RecurrentGemm = ATenRecurrentGemm<T>;
  static at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
    return at::empty(sizes, options);
  }
  static at::Tensor empty_rows(int64_t rows, int64_t width, const at::TensorOptions& options) {
    return at::empty({rows, width}, options);
  }
  static at::Tensor addmm(const at::Tensor& bias, const at::Tensor& a, const at::Tensor& b) {
    return aten_addmm(bias, a, b);
  }

  template <typename F>
  static void for_each_slice(const StepProblem& problem, const F& body) {
    body(StepSlice{0, problem.batch, 0, problem.hidden, {}});
  }
};

}  // namespace rnnkernels
