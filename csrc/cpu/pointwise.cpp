// CPUBackend: runs each pointwise step, and the matrix-vector products of gemv.h, with the widest
// instruction set that both this build and the CPU support, as ATen does (at::get_cpu_capability,
// which also honours ATEN_CPU_CAPABILITY).
#include "backend.h"
#include "gemv.h"

#include "../build_info.h"
#include "../kernels/cell_list.h"

#include <ATen/Version.h>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <string>

namespace rnnkernels {

#define RNNKERNELS_DECLARE_POINTWISE(ns)                               \
  namespace ns {                                                       \
  template <typename Cell, typename T>                                 \
  void forward(const StepForwardParams<T>&);                           \
  template <typename Cell, typename T>                                 \
  void backward(const StepBackwardParams<T>&);                         \
  void gemv_rows(const float*, const float*, int64_t, int64_t, int64_t, float*, bool);    \
  void gemv_columns(const float*, const float*, int64_t, int64_t, int64_t, float*, bool); \
  }

RNNKERNELS_DECLARE_POINTWISE(isa_default)
#if defined(__x86_64__)
RNNKERNELS_DECLARE_POINTWISE(isa_avx2)
RNNKERNELS_DECLARE_POINTWISE(isa_avx512)
#endif
#undef RNNKERNELS_DECLARE_POINTWISE

namespace {

enum class Isa { kDefault, kAVX2, kAVX512 };

Isa cpu_isa() {
  static const Isa isa = [] {
#if defined(__x86_64__)
    const std::string capability = at::get_cpu_capability();
    if (capability == "AVX512") return Isa::kAVX512;
    if (capability == "AVX2") return Isa::kAVX2;
#endif
    return Isa::kDefault;
  }();
  return isa;
}

}  // namespace

const char* cpu_isa_name() {
  switch (cpu_isa()) {
    case Isa::kAVX512:
      return "AVX512";
    case Isa::kAVX2:
      return "AVX2";
    case Isa::kDefault:
      break;
  }
  return "default";
}

#if defined(__x86_64__)
#define RNNKERNELS_CALL_ISA(...)           \
  switch (cpu_isa()) {                     \
    case Isa::kAVX512:                     \
      return isa_avx512::__VA_ARGS__;      \
    case Isa::kAVX2:                       \
      return isa_avx2::__VA_ARGS__;        \
    case Isa::kDefault:                    \
      return isa_default::__VA_ARGS__;     \
  }
#else
#define RNNKERNELS_CALL_ISA(...) return isa_default::__VA_ARGS__;
#endif

template <typename Cell, typename T>
void CPUBackend::forward(const StepForwardParams<T>& p) {
  RNNKERNELS_CALL_ISA(template forward<Cell, T>(p))
}
template <typename Cell, typename T>
void CPUBackend::backward(const StepBackwardParams<T>& p) {
  RNNKERNELS_CALL_ISA(template backward<Cell, T>(p))
}
void gemv_rows(const float* x, const float* w, int64_t ld, int64_t k, int64_t n, float* y,
               bool accumulate) {
  RNNKERNELS_CALL_ISA(gemv_rows(x, w, ld, k, n, y, accumulate))
}
void gemv_columns(const float* x, const float* w, int64_t ld, int64_t k, int64_t n, float* y,
                  bool accumulate) {
  RNNKERNELS_CALL_ISA(gemv_columns(x, w, ld, k, n, y, accumulate))
}
#undef RNNKERNELS_CALL_ISA

#define RNNKERNELS_INSTANTIATE(Cell, T)                                      \
  template void CPUBackend::forward<Cell, T>(const StepForwardParams<T>&);   \
  template void CPUBackend::backward<Cell, T>(const StepBackwardParams<T>&);
RNNKERNELS_FOR_EACH_CELL(RNNKERNELS_FOR_EACH_DTYPE, RNNKERNELS_INSTANTIATE, c10::Half,
                         c10::BFloat16)
#undef RNNKERNELS_INSTANTIATE

}  // namespace rnnkernels
