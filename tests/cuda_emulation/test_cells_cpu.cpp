// The CPU pointwise driver (csrc/cpu/pointwise_kernels.h, portable instruction set) for the
// tests' cells (test_cells.h).
#include "test_cells.h"

#define RNNKERNELS_ISA isa_default
#define RNNKERNELS_DRIVER_CELLS RNNKERNELS_FOR_EACH_TEST_CELL
#include "cpu/pointwise_kernels.h"
