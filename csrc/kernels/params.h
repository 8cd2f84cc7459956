// Plain-data parameters of the fused pointwise step kernels, one struct per kernel.
//
// Torch-free, shared by the CPU loops (csrc/cpu/pointwise.cpp) and the CUDA kernels
// (csrc/kernels/*.cu). Each describes ONE time step: `batch` rows, all contiguous, row-major.
// H is `hidden`; widths are in elements. Pointers marked "or nullptr" are optional.
//
// Packed rows: a step's active rows are the first `batch` sequences of the (length-sorted)
// batch. Rows [0, batch_continuing) continue from the previously processed step; rows
// [batch_continuing, batch) start there (reverse direction), from the initial state.
#pragma once

#include <stdint.h>

namespace rnnkernels {

template <typename T>
struct LSTMForwardParams {
  int64_t batch;   // rows active this step
  int64_t hidden;  // H
  const T* xproj;  // [batch, 4H] x W_ih^T + b_ih + b_hh
  const T* hproj;  // [batch, 4H] h_{t-1} W_hh^T
  T* c;            // [batch, H]  cell state: c_{t-1} in, c_t out
  T* h;            // [batch, H]  o * tanh(c_t) out: the hidden state, or the input of the projection
  T* output;       // [batch, H]  the layer output rows (also gets h), or nullptr (projection)
  T* reserve;      // [batch, 5H] out: i, f, g, o, c_t for the backward, or nullptr (inference)
};

template <typename T>
struct LSTMBackwardParams {
  int64_t batch;             // rows active this step
  int64_t hidden;            // H
  int64_t batch_continuing;  // rows whose c_{t-1} is in reserve_prev; the rest use c0
  const T* reserve;          // [batch, 5H] this step's i, f, g, o, c_t
  const T* reserve_prev;     // [batch_continuing, 5H] the previous step's (its c is c_{t-1})
  const T* c0;               // [batch, H] initial cell state, rows >= batch_continuing read
  const T* grad_h;           // [batch, H] dL/dh_t before projection (carried, or via W_hr)
  const T* grad_output;      // [batch, H] added to grad_h, or nullptr (projection: already in)
  T* grad_c;                 // [batch, H] dL/dc_t in, dL/dc_{t-1} out
  T* grad_gates;             // [batch, 4H] out: pre-activation gradients of i, f, g, o
  T* h;                      // [batch, H] out: o * tanh(c_t), for dW_hr, or nullptr
};

template <typename T>
struct GRUForwardParams {
  int64_t batch;   // rows active this step
  int64_t hidden;  // H
  const T* xproj;  // [batch, 3H] x W_ih^T + b_ih + (b_hr, b_hz, 0)
  const T* hproj;  // [batch, 3H] h_{t-1} W_hh^T
  const T* b_hn;   // [H] hidden bias of n, or nullptr
  T* h;            // [batch, H] hidden state: h_{t-1} in, h_t out
  T* output;       // [batch, H] the layer output rows
  T* reserve;      // [batch, 4H] out: r, z, n, W_hn h_{t-1} + b_hn, or nullptr (inference)
};

template <typename T>
struct GRUBackwardParams {
  int64_t batch;        // rows active this step
  int64_t hidden;       // H
  const T* reserve;     // [batch, 4H] r, z, n, hn
  const T* h_prev;      // [batch, H] h_{t-1}
  const T* grad_output; // [batch, H] dL/d output rows of this step
  T* grad_h;            // [batch, H] carried dL/dh_t in; dL/dh_{t-1} bypassing W_hh out
  T* grad_gates_x;      // [batch, 3H] out: gradients of the input-side pre-activations
  T* grad_gates_h;      // [batch, 3H] out: gradients of the hidden projections
};

template <typename T>
struct RNNForwardParams {
  int64_t batch;   // rows active this step
  int64_t hidden;  // H
  const T* xproj;  // [batch, H] x W_ih^T + b_ih + b_hh
  const T* hproj;  // [batch, H] h_{t-1} W_hh^T
  T* h;            // [batch, H] out: h_t (the state buffer)
  T* output;       // [batch, H] out: h_t (the layer output rows)
};

template <typename T>
struct RNNBackwardParams {
  int64_t batch;         // rows active this step
  int64_t hidden;        // H
  const T* output;       // [batch, H] h_t saved by the forward
  const T* grad_output;  // [batch, H] dL/d output rows of this step
  const T* grad_h;       // [batch, H] carried dL/dh_t
  T* grad_pre;           // [batch, H] out: dL/d pre-activation
};

}  // namespace rnnkernels
