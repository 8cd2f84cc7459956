// The pointwise and matrix-vector kernels for any x86-64 (or other) CPU: at::vec's portable
// implementation.
#define RNNKERNELS_ISA isa_default
#include "gemv_kernels.h"
#include "pointwise_kernels.h"
