// The CPU layers' large buffers, kept for reuse between calls (docs/DESIGN.md, "CPU backend").
#pragma once

#include <ATen/ATen.h>

#include <cstddef>
#include <cstdint>

namespace rnnkernels {

// at::empty on the CPU, with a buffer of at least kMinPooledBytes taken from the pool of buffers
// that earlier ones left: fresh memory costs a page fault per page on its first touch, and glibc
// maps every buffer above its mmap threshold (32 MiB at most) afresh on each call. The tensor's
// storage is resizable, as at::empty's; its memory goes back to the pool when the storage is
// freed. Pooled buffers are backed by transparent huge pages where the system allows them.
at::Tensor empty_pooled(at::IntArrayRef sizes, const at::TensorOptions& options);

// Returns the pool's free buffers to the system; buffers still in use go back to the pool when
// freed, as before.
void release_pooled_buffers();

// The pool's free bytes now, and its bound on them: RNNKERNELS_CPU_BUFFER_CACHE_BYTES, read once
// (0 keeps nothing), else kDefaultBufferCacheBytes.
size_t pooled_free_bytes();
size_t pooled_free_bytes_limit();

// A row stride for rows of `width` elements of `element_size` bytes: whole cache lines of 64
// bytes, an odd number of them. With a row stride of a multiple of 1 KiB (in float32, widths of
// 256, 512, 768, 1024, ...: the gate widths of the usual hidden sizes) the rows of a block of
// columns fall into few sets of the L1 cache, and oneDNN's matmul ran at half its speed or less
// on a per-step weight of such rows, three quarters on a weight gradient's left operand
// (docs/DESIGN.md, "CPU backend").
inline int64_t padded_row_stride(int64_t width, int64_t element_size) {
  const int64_t per_line = 64 / element_size;
  int64_t lines = (width + per_line - 1) / per_line;
  if (lines % 2 == 0) ++lines;
  return lines * per_line;
}

constexpr size_t kMinPooledBytes = size_t{1} << 20;
constexpr size_t kDefaultBufferCacheBytes = size_t{1} << 30;

}  // namespace rnnkernels
