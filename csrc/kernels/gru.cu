// The fused pointwise step kernels of the GRU and their launch helpers (launchers.h).
// One thread per (row, hidden unit) element; the gate math is cells::gru_forward/backward.
#include "cells.h"
#include "launch.h"
#include "launchers.h"

namespace rnnkernels {
namespace kernels {

template <typename T>
__global__ void gru_forward_pointwise(GRUForwardParams<T> p) {
  using C = compute_t<T>;
  const int64_t H = p.hidden;
  for_each_element(p.batch, H, [&](int64_t row, int64_t unit, int64_t e) {
    const int64_t r_at = gate_index(row, unit, 3, 0, H);
    const int64_t z_at = gate_index(row, unit, 3, 1, H);
    const int64_t n_at = gate_index(row, unit, 3, 2, H);
    C hn = load(p.hproj + n_at);
    if (p.b_hn != nullptr) hn += load(p.b_hn + unit);
    C r, z, n, h;
    cells::gru_forward<cells::ScalarMath>(load(p.xproj + r_at), load(p.xproj + z_at),
                                          load(p.xproj + n_at), load(p.hproj + r_at),
                                          load(p.hproj + z_at), hn, load(p.h + e), r, z, n, h);
    store(p.h + e, h);
    store(p.output + e, h);
    if (p.reserve != nullptr) {
      store(p.reserve + gate_index(row, unit, 4, 0, H), r);
      store(p.reserve + gate_index(row, unit, 4, 1, H), z);
      store(p.reserve + gate_index(row, unit, 4, 2, H), n);
      store(p.reserve + gate_index(row, unit, 4, 3, H), hn);
    }
  });
}

template <typename T>
__global__ void gru_backward_pointwise(GRUBackwardParams<T> p) {
  using C = compute_t<T>;
  const int64_t H = p.hidden;
  for_each_element(p.batch, H, [&](int64_t row, int64_t unit, int64_t e) {
    const C dh = load(p.grad_h + e) + load(p.grad_output + e);
    C dr, dz, dn, dhn, dh_prev;
    cells::gru_backward<cells::ScalarMath>(load(p.reserve + gate_index(row, unit, 4, 0, H)),
                                           load(p.reserve + gate_index(row, unit, 4, 1, H)),
                                           load(p.reserve + gate_index(row, unit, 4, 2, H)),
                                           load(p.reserve + gate_index(row, unit, 4, 3, H)),
                                           load(p.h_prev + e), dh, dr, dz, dn, dhn, dh_prev);
    const int64_t r_at = gate_index(row, unit, 3, 0, H);
    const int64_t z_at = gate_index(row, unit, 3, 1, H);
    const int64_t n_at = gate_index(row, unit, 3, 2, H);
    store(p.grad_gates_x + r_at, dr);
    store(p.grad_gates_x + z_at, dz);
    store(p.grad_gates_x + n_at, dn);
    store(p.grad_gates_h + r_at, dr);
    store(p.grad_gates_h + z_at, dz);
    store(p.grad_gates_h + n_at, dhn);
    store(p.grad_h + e, dh_prev);
  });
}

}  // namespace kernels

template <typename T>
cudaError_t launch_gru_forward_pointwise(GRUForwardParams<T> p, cudaStream_t stream) {
  return kernels::launch_elementwise(kernels::gru_forward_pointwise<T>, p.batch * p.hidden, p,
                                     stream);
}

template <typename T>
cudaError_t launch_gru_backward_pointwise(GRUBackwardParams<T> p, cudaStream_t stream) {
  return kernels::launch_elementwise(kernels::gru_backward_pointwise<T>, p.batch * p.hidden, p,
                                     stream);
}

#define RNNKERNELS_INSTANTIATE_GRU(T)                                                       \
  template cudaError_t launch_gru_forward_pointwise<T>(GRUForwardParams<T>, cudaStream_t);  \
  template cudaError_t launch_gru_backward_pointwise<T>(GRUBackwardParams<T>, cudaStream_t);

RNNKERNELS_INSTANTIATE_GRU(float)
RNNKERNELS_INSTANTIATE_GRU(double)
RNNKERNELS_INSTANTIATE_GRU(__half)
RNNKERNELS_INSTANTIATE_GRU(__nv_bfloat16)

}  // namespace rnnkernels
