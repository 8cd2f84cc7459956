// The CPU backend's settings from the environment.
#pragma once

#include <c10/util/Exception.h>

#include <cstddef>
#include <cstdlib>

namespace rnnkernels {

// The whole number in the environment variable `name`, at least `minimum`, or `fallback` where
// the variable is unset or empty; anything else raises, naming the variable and its value.
inline size_t environment_count(const char* name, size_t fallback, long long minimum) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  char* end = nullptr;
  const long long count = std::strtoll(value, &end, 10);
  TORCH_CHECK(*end == '\0' && count >= minimum, name, ": expected a whole number >= ", minimum,
              ", got '", value, "'");
  return static_cast<size_t>(count);
}

}  // namespace rnnkernels
