// Large CPU buffers backed by transparent huge pages where the system allows them.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace rnnkernels {

// at::empty, with the kernel asked (madvise MADV_HUGEPAGE, on Linux) to back the whole 2 MiB
// pages inside the buffer with huge pages. A buffer above glibc's mmap threshold (32 MiB at
// most) is fresh memory on every call, and first-touching it in 4 KiB pages costs about 2 us a
// page on the machines we measure: 29 ms for a 50 MB buffer, which the hint cuts to 6 ms
// (docs/DESIGN.md, "CPU backend"). Only a hint: where huge pages are off, nothing changes.
inline at::Tensor empty_huge_pages(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor buffer = at::empty(sizes, options);
#ifdef __linux__
  constexpr std::uintptr_t kHugePage = std::uintptr_t{1} << 21;
  const auto begin = reinterpret_cast<std::uintptr_t>(buffer.data_ptr());
  const std::uintptr_t first = (begin + kHugePage - 1) & ~(kHugePage - 1);
  const std::uintptr_t last = (begin + buffer.nbytes()) & ~(kHugePage - 1);
  // A refusal (no transparent huge pages in this kernel) leaves the 4 KiB pages.
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
  return buffer;
}

}  // namespace rnnkernels
