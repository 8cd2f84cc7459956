// Plain-data parameters of one pointwise step, the same structs for every cell and both backends.
//
// Torch-free, shared by the CPU driver (csrc/cpu/pointwise_kernels.h) and the CUDA kernels
// (pointwise.cuh); filled in one place, from a zeroed struct (csrc/layer/layer.h). A step covers
// `rows` rows, row-major, one after another: a [rows, width] buffer's row stride is `width`,
// except the gate buffers' ([rows, G*H]), which is `gate_stride`. H is `hidden`, G the cell's
// gate count, R its reserve slots (traits.h); widths and strides are in elements. Pointers marked
// "or nullptr" are optional; what a cell leaves unused stays nullptr.
//
// Packed rows: a step's active rows are the first `rows` sequences of the (length-sorted) batch.
// In the backward, rows [0, continuing) continue from the previously processed step; the rest
// start there (reverse direction), from the initial state.
#pragma once

#include <stdint.h>

namespace rnnkernels {

// The most states (h, c), extra inputs and scalars a cell may have. A cell needing more raises
// these; nothing else depends on their values.
constexpr int kMaxStates = 2;
constexpr int kMaxInputs = 8;
constexpr int kMaxScalars = 3;

// An extra input of the pointwise step (traits.h, kInputs): a per-layer parameter, the same for
// every row, or a per-row tensor such as a mask.
template <typename T>
struct StepInput {
  const T* data;  // [width], or [rows, width] when per_row; nullptr when absent
  int64_t width;  // a multiple of H
  bool per_row;
};

// What the two directions share.
template <typename T>
struct StepParams {
  int64_t rows;                     // rows active this step
  int64_t hidden;                   // H
  int64_t gate_stride;              // the gate buffers' row stride, G*H or more
  int64_t unit_begin, unit_end;     // the units of each row this call runs: [0, H) but on the
                                    // CPU for a batch split by units (layer.h's StepSlice),
                                    // which only element-wise cells get; the CUDA drivers and
                                    // row-wise cells always run whole rows
  T* output;                        // [rows, H] forward: out (h_t), or nullptr (a projection writes
                                    // the output); backward: in, h_t as the forward wrote it
  T* reserve;                       // [rows, R*H] forward: out, or nullptr (inference);
                                    // backward: in
  StepInput<T> inputs[kMaxInputs];  // the cell's extra inputs, in the order of its kInputs
  double scalars[kMaxScalars];      // the cell's scalars, in the order of its kScalars
};

template <typename T>
struct StepForwardParams : StepParams<T> {
  const T* input_gates;   // [rows, G*H] x W_ih^T plus the biases the cell folds in
  const T* hidden_gates;  // [rows, G*H] h_{t-1} W_hh^T, or nullptr (no dense recurrence)
  T* states[kMaxStates];  // [rows, H] each: the state at t-1 in, at t out. states[0] is h (with
                          // a projection: the unprojected h, whose t-1 value nothing reads)
};

template <typename T>
struct StepBackwardParams : StepParams<T> {
  int64_t continuing;              // rows whose states at t-1 come from the previous step
  const T* reserve_previous;       // [continuing, R*H] the previous step's reserve, or nullptr
  const T* initial[kMaxStates];    // [rows, H] initial states; rows >= continuing read them
  const T* h_previous;             // [rows, H] h_{t-1} of every row, or nullptr (projection)
  const T* grad_output;            // [rows, H] added to grad_states[0], or nullptr (projection:
                                   // already in it)
  T* grad_states[kMaxStates];      // [rows, H] dL/d state at t in; at t-1 out, for h the part
                                   // that bypasses W_hh (kDirectHiddenGrad), else left as is
  T* grad_input_gates;             // [rows, G*H] out: dL/d input-side pre-activations
  T* grad_hidden_gates;            // [rows, G*H] out: dL/d hidden-side ones (== grad_input_gates
                                   // unless the cell tells them apart)
  T* unprojected;                  // [rows, H] out: h_t before the projection, or nullptr
  T* grad_inputs[kMaxInputs];      // [rows, width] each, added to step after step: each row's
                                   // part of dL/d a per-layer input, or nullptr (none wanted)
};

}  // namespace rnnkernels
