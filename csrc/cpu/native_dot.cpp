#include "native_dot.h"

#include <ATen/cpu/Utils.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <optional>
#include <string>

namespace rnnkernels {
namespace {

bool cpu_has(const char* capability) {
  const auto capabilities = at::cpu::get_cpu_capabilities();
  const auto found = capabilities.find(capability);
  return found != capabilities.end() && found->second.isBool() && found->second.toBool();
}

// RNNKERNELS_HALF_GEMM: true for "native", false for "widened", nothing when unset or empty.
std::optional<bool> native_override() {
  const char* value = std::getenv("RNNKERNELS_HALF_GEMM");
  if (value == nullptr || *value == '\0') return std::nullopt;
  const std::string choice(value);
  TORCH_CHECK(choice == "native" || choice == "widened",
              "RNNKERNELS_HALF_GEMM: expected 'native' or 'widened', got '", choice, "'");
  return choice == "native";
}

const std::optional<bool>& forced() {
  static const std::optional<bool> choice = native_override();
  return choice;
}

}  // namespace

bool has_native_dot(c10::ScalarType type) {
  static const bool bfloat16 = forced().value_or(cpu_has("avx512_bf16") || cpu_has("amx_bf16"));
  static const bool float16 = forced().value_or(cpu_has("avx512_fp16") || cpu_has("amx_fp16"));
  switch (type) {
    case c10::kBFloat16:
      return bfloat16;
    case c10::kHalf:
      return float16;
    default:
      return true;
  }
}

bool native_gemm(c10::ScalarType type, bool large) {
  if (!is_half(type)) return true;
  return has_native_dot(type) && (forced().has_value() || large);
}

}  // namespace rnnkernels
