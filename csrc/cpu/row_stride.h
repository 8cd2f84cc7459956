// The row stride of the CPU buffers and weights that oneDNN's matmul reads down their columns.
// Torch-free: the benchmark's GEMM floor (bench/native.cpp) pads its operands by the same rule.
#pragma once

#include <cstdint>

namespace rnnkernels {

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

}  // namespace rnnkernels
