// The launch helpers of the CUDA pointwise drivers (pointwise.cuh), declared for the torch side
// (csrc/cuda/backend.h).
//
// Torch-free. Each runs one step of one cell (traits.h) with its params by value (params.h
// documents every pointer's shape), launches on `stream`, and returns the launch's error for the
// caller to check. They never synchronise. Instantiated for every cell of the list
// (cell_list.h) and T = float, double, __half and __nv_bfloat16; the half types are computed in
// float, double in double.
#pragma once

#include <cuda_runtime_api.h>

#include "params.h"

namespace rnnkernels {

template <typename Cell, typename T>
cudaError_t launch_forward(StepForwardParams<T> p, cudaStream_t stream);
template <typename Cell, typename T>
cudaError_t launch_backward(StepBackwardParams<T> p, cudaStream_t stream);

}  // namespace rnnkernels
