// CPUBackend: runs each pointwise step with the widest instruction set that both this build and
// the CPU support, as ATen does (at::get_cpu_capability, which also honours ATEN_CPU_CAPABILITY).
#include "backend.h"

#include "../build_info.h"

#include <ATen/Version.h>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <string>

namespace rnnkernels {

#define RNNKERNELS_DECLARE_POINTWISE(ns)                                      \
  namespace ns {                                                              \
  template <typename T> void lstm_forward(const LSTMForwardParams<T>&);       \
  template <typename T> void lstm_backward(const LSTMBackwardParams<T>&);     \
  template <typename T> void gru_forward(const GRUForwardParams<T>&);         \
  template <typename T> void gru_backward(const GRUBackwardParams<T>&);       \
  template <typename T, bool Relu> void rnn_forward(const RNNForwardParams<T>&);   \
  template <typename T, bool Relu> void rnn_backward(const RNNBackwardParams<T>&); \
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

template <typename T>
void CPUBackend::lstm_forward(const LSTMForwardParams<T>& p) {
  RNNKERNELS_CALL_ISA(lstm_forward<T>(p))
}
template <typename T>
void CPUBackend::lstm_backward(const LSTMBackwardParams<T>& p) {
  RNNKERNELS_CALL_ISA(lstm_backward<T>(p))
}
template <typename T>
void CPUBackend::gru_forward(const GRUForwardParams<T>& p) {
  RNNKERNELS_CALL_ISA(gru_forward<T>(p))
}
template <typename T>
void CPUBackend::gru_backward(const GRUBackwardParams<T>& p) {
  RNNKERNELS_CALL_ISA(gru_backward<T>(p))
}
template <typename T, bool Relu>
void CPUBackend::rnn_forward(const RNNForwardParams<T>& p) {
  RNNKERNELS_CALL_ISA(template rnn_forward<T, Relu>(p))
}
template <typename T, bool Relu>
void CPUBackend::rnn_backward(const RNNBackwardParams<T>& p) {
  RNNKERNELS_CALL_ISA(template rnn_backward<T, Relu>(p))
}
#undef RNNKERNELS_CALL_ISA

#define RNNKERNELS_INSTANTIATE_BACKEND(T)                                          \
  template void CPUBackend::lstm_forward<T>(const LSTMForwardParams<T>&);          \
  template void CPUBackend::lstm_backward<T>(const LSTMBackwardParams<T>&);        \
  template void CPUBackend::gru_forward<T>(const GRUForwardParams<T>&);            \
  template void CPUBackend::gru_backward<T>(const GRUBackwardParams<T>&);          \
  template void CPUBackend::rnn_forward<T, false>(const RNNForwardParams<T>&);     \
  template void CPUBackend::rnn_forward<T, true>(const RNNForwardParams<T>&);      \
  template void CPUBackend::rnn_backward<T, false>(const RNNBackwardParams<T>&);   \
  template void CPUBackend::rnn_backward<T, true>(const RNNBackwardParams<T>&);

RNNKERNELS_INSTANTIATE_BACKEND(float)
RNNKERNELS_INSTANTIATE_BACKEND(double)
RNNKERNELS_INSTANTIATE_BACKEND(c10::Half)
RNNKERNELS_INSTANTIATE_BACKEND(c10::BFloat16)
#undef RNNKERNELS_INSTANTIATE_BACKEND

}  // namespace rnnkernels
