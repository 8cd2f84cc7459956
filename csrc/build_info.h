// What this build of the library is: the torch it was compiled against, the oneDNN it links (if
// any), the CPU instruction set its pointwise kernels run with here, how its half-type CPU GEMMs
// run here, and the CUDA targets it holds. `python -m rnnkernels` prints it; the package warns at
// import when oneDNN is missing.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace rnnkernels {

// (name, value) pairs in a fixed order: "torch" (the version compiled against), "onednn" (its
// run-time version, or "" when the build has none), "cpu_isa" ("AVX512", "AVX2" or "default"),
// "half_gemms" (how the CPU GEMMs of bfloat16 and float16 run here: csrc/cpu/native_dot.h),
// "cuda_archs" (e.g. "sm_80 sm_90", or "" for a CPU-only build).
std::vector<std::pair<std::string, std::string>> build_info();

// The instruction set csrc/cpu/pointwise.cpp runs its kernels with on this CPU.
const char* cpu_isa_name();

}  // namespace rnnkernels
