// Whether the CPU GEMMs of a half type run natively or widened to float32 (csrc/cpu/backend.h).
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>

namespace rnnkernels {

// Whether this CPU has dot-product instructions for `type`'s products with float32 accumulation
// (bfloat16: AVX512-BF16 or AMX-BF16; float16: AVX512-FP16 or AMX-FP16); true for float32 and
// float64. Without them ATen's GEMMs of the half types fall back to scalar loops, at 1-2% of
// float32's speed on an AVX2 CPU (docs/DESIGN.md, "CPU backend"), so the backend widens their
// operands to float32 instead. The environment variable RNNKERNELS_HALF_GEMM, read once, overrides
// the choice: "native" (oneDNN's matmul, or ATen's GEMMs where this oneDNN has no kernels for
// the type) or "widened".
bool has_native_dot(c10::ScalarType type);

// Whether `type` is one of the half types, bfloat16 or float16.
inline bool is_half(c10::ScalarType type) {
  return type == c10::kBFloat16 || type == c10::kHalf;
}

// Whether `type`'s GEMMs run natively: always for float32 and float64; for the half types where
// has_native_dot and the GEMMs are `large` enough to repay the native kernels' set-up, else the
// widened ones win (RNNKERNELS_HALF_GEMM, when set, decides for every size).
bool native_gemm(c10::ScalarType type, bool large);

}  // namespace rnnkernels
