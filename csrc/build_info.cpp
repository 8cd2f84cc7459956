#include "build_info.h"

#include "cpu/native_dot.h"

#ifdef RNNKERNELS_WITH_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#endif

// setup.py (and CMakeLists.txt) pass these as bare tokens, stringified here, so that no quoting
// has to survive the build tools' command lines.
#define RNNKERNELS_STRINGIFY_(x) #x
#define RNNKERNELS_STRINGIFY(x) RNNKERNELS_STRINGIFY_(x)

namespace rnnkernels {

std::vector<std::pair<std::string, std::string>> build_info() {
#ifdef RNNKERNELS_BUILT_WITH_TORCH
  const std::string torch = RNNKERNELS_STRINGIFY(RNNKERNELS_BUILT_WITH_TORCH);
#else
  const std::string torch = "unknown";
#endif
  std::string onednn;
#ifdef RNNKERNELS_WITH_ONEDNN
  const dnnl_version_t* version = dnnl_version();
  onednn = std::to_string(version->major) + "." + std::to_string(version->minor) + "." +
           std::to_string(version->patch);
#endif
  // Listed as sm_80/sm_90: a slash keeps the list one token.
  std::string cuda_archs;
#ifdef RNNKERNELS_CUDA_ARCHS
  cuda_archs = RNNKERNELS_STRINGIFY(RNNKERNELS_CUDA_ARCHS);
  for (char& c : cuda_archs) {
    if (c == '/') c = ' ';
  }
#endif
  const auto half_gemm = [](c10::ScalarType type) {
    return has_native_dot(type) ? "native" : "widened to float32";
  };
  const std::string half_gemms = std::string("bfloat16 ") + half_gemm(c10::kBFloat16) +
                                 ", float16 " + half_gemm(c10::kHalf);
  return {{"torch", torch}, {"onednn", onednn}, {"cpu_isa", cpu_isa_name()},
          {"half_gemms", half_gemms}, {"cuda_archs", cuda_archs}};
}

}  // namespace rnnkernels
