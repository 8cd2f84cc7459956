// The CUDA pointwise drivers, for any cell: element-wise, one thread per (row, hidden unit)
// element running the cell's element functions (traits.h) on a Step (step.h); and row-wise
// (traits' kRowwise), one block per row, its threads striding over the units and reducing across
// the block. Their launch helpers (launchers.h) are instantiated for the list of cells in
// pointwise.cu; a list of its own can include this file too (the tests' CUDA emulation does).
#pragma once

#include "launch.h"
#include "launchers.h"
#include "step.h"

namespace rnnkernels {
namespace kernels {

// The sum of every thread's `value`, returned to all of them. blockDim.x is a power of two, at
// most kThreadsPerBlock (launch_rows); every thread of the block must call it.
template <typename C>
__device__ C block_sum(C value) {
  __shared__ C partial[kThreadsPerBlock];
  partial[threadIdx.x] = value;
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  const C total = partial[0];
  // Every thread has read the total before a next sum overwrites it.
  __syncthreads();
  return total;
}

// A row (step.h) on one block: each thread takes the units threadIdx.x + k * blockDim.x, the
// same ones in every for_each and sum.
template <typename Cell, typename T, typename Params>
class KernelRow : public RowBase<ScalarIO<T>, Params> {
  using Base = RowBase<ScalarIO<T>, Params>;

 public:
  using typename Base::Value;
  using Base::Base;

  template <typename F>
  __device__ void for_each(const F& f) const {
    for (int64_t unit = threadIdx.x; unit < this->p_.hidden; unit += blockDim.x) {
      f(Step<Cell, T, ScalarIO<T>, Params>(this->p_, this->row_, unit, {}));
    }
  }
  template <typename F>
  __device__ Value sum(const F& f) const {
    Value partial = 0;
    for_each([&](const auto& position) { partial += f(position); });
    return block_sum(partial);
  }
};

template <typename Cell, typename Direction, typename T>
__global__ void elementwise_kernel(typename Direction::template Params<T> p) {
  using Params = typename Direction::template Params<T>;
  for_each_element(p.rows, p.hidden, [&](int64_t row, int64_t unit) {
    Direction::template run<Cell>(Step<Cell, T, ScalarIO<T>, Params>(p, row, unit, {}));
  });
}

// A grid-stride loop over the rows: all threads of a block take the same rows, so that the
// block's reductions see every one of them.
template <typename Cell, typename Direction, typename T>
__global__ void rowwise_kernel(typename Direction::template Params<T> p) {
  using Params = typename Direction::template Params<T>;
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    Direction::template run<Cell>(KernelRow<Cell, T, Params>(p, row));
  }
}

template <typename Cell, typename Direction, typename T>
cudaError_t launch_step(const typename Direction::template Params<T>& p, cudaStream_t stream) {
  if constexpr (Cell::kRowwise) {
    return launch_rows(rowwise_kernel<Cell, Direction, T>, p.rows, p.hidden, p, stream);
  } else {
    return launch_elementwise(elementwise_kernel<Cell, Direction, T>, p.rows * p.hidden, p,
                              stream);
  }
}

}  // namespace kernels

template <typename Cell, typename T>
cudaError_t launch_forward(StepForwardParams<T> p, cudaStream_t stream) {
  return kernels::launch_step<Cell, Forward, T>(p, stream);
}

template <typename Cell, typename T>
cudaError_t launch_backward(StepBackwardParams<T> p, cudaStream_t stream) {
  return kernels::launch_step<Cell, Backward, T>(p, stream);
}

// The launch helpers of every cell of an X-macro list (cell_list.h), inside namespace rnnkernels.
#define RNNKERNELS_INSTANTIATE_LAUNCHERS(Cell, T)                                     \
  template cudaError_t launch_forward<Cell, T>(StepForwardParams<T>, cudaStream_t);   \
  template cudaError_t launch_backward<Cell, T>(StepBackwardParams<T>, cudaStream_t);
#define RNNKERNELS_INSTANTIATE_LAUNCHERS_FOR(FOR_EACH) \
  FOR_EACH(RNNKERNELS_FOR_EACH_DTYPE, RNNKERNELS_INSTANTIATE_LAUNCHERS, __half, __nv_bfloat16)

}  // namespace rnnkernels
