// The CUDA pointwise drivers (pointwise.cuh) for the list of cells (cell_list.h).
#include "cell_list.h"
#include "pointwise.cuh"

namespace rnnkernels {

RNNKERNELS_INSTANTIATE_LAUNCHERS_FOR(RNNKERNELS_FOR_EACH_CELL)

}  // namespace rnnkernels
