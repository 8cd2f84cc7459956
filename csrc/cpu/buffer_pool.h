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

constexpr size_t kMinPooledBytes = size_t{1} << 20;
constexpr size_t kDefaultBufferCacheBytes = size_t{1} << 30;

}  // namespace rnnkernels
