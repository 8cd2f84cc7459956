// The CUDA pointwise drivers (csrc/kernels/pointwise.cuh) for the tests' cells (test_cells.h),
// compiled as host C++ under the CUDA emulation.
#include "kernels/pointwise.cuh"
#include "test_cells.h"

namespace rnnkernels {

RNNKERNELS_INSTANTIATE_LAUNCHERS_FOR(RNNKERNELS_FOR_EACH_TEST_CELL)

}  // namespace rnnkernels
