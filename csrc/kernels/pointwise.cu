// The CUDA pointwise drivers: one kernel a direction for every cell, one thread per (row, hidden
// unit) element, running the cell's element functions (traits.h) through the step accessors
// (step.h); and their launch helpers (launchers.h), instantiated for the list of cells.
#include "cell_list.h"
#include "launch.h"
#include "launchers.h"
#include "step.h"

namespace rnnkernels {
namespace kernels {

template <typename Cell, typename T>
__global__ void forward_kernel(StepForwardParams<T> p) {
  for_each_element(p.rows, p.hidden, [&](int64_t row, int64_t unit) {
    Cell::forward(ForwardStep<Cell, T, ScalarIO<T>>(p, row, unit, {}));
  });
}

template <typename Cell, typename T>
__global__ void backward_kernel(StepBackwardParams<T> p) {
  for_each_element(p.rows, p.hidden, [&](int64_t row, int64_t unit) {
    Cell::backward(BackwardStep<Cell, T, ScalarIO<T>>(p, row, unit, {}));
  });
}

}  // namespace kernels

template <typename Cell, typename T>
cudaError_t launch_forward(StepForwardParams<T> p, cudaStream_t stream) {
  return kernels::launch_elementwise(kernels::forward_kernel<Cell, T>, p.rows * p.hidden, p,
                                     stream);
}

template <typename Cell, typename T>
cudaError_t launch_backward(StepBackwardParams<T> p, cudaStream_t stream) {
  return kernels::launch_elementwise(kernels::backward_kernel<Cell, T>, p.rows * p.hidden, p,
                                     stream);
}

#define RNNKERNELS_INSTANTIATE(Cell, T)                                               \
  template cudaError_t launch_forward<Cell, T>(StepForwardParams<T>, cudaStream_t);   \
  template cudaError_t launch_backward<Cell, T>(StepBackwardParams<T>, cudaStream_t);
RNNKERNELS_FOR_EACH_CELL(RNNKERNELS_FOR_EACH_DTYPE, RNNKERNELS_INSTANTIATE, __half,
                         __nv_bfloat16)
#undef RNNKERNELS_INSTANTIATE

}  // namespace rnnkernels
