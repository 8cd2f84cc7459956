// The CPU kernels of the generic layer operators: csrc/ops/layer_kernels.h over CPUBackend, for
// the list of cells.
#include <torch/library.h>

#include "../ops/layer_kernels.h"
#include "backend.h"

namespace rnnkernels {

TORCH_LIBRARY_IMPL(rnnkernels, CPU, m) {
  m.impl("layer", &layer_kernel<Cells, CPUBackend>);
  m.impl("layer_backward", &layer_backward_kernel<Cells, CPUBackend>);
}

}  // namespace rnnkernels
