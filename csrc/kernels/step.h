// What a cell's element functions (traits.h) see of one pointwise step: an accessor at one
// (row, unit) position of the step's params (params.h), written once for both drivers. It reads
// and writes through an IO policy:
//   using Value = ...;  // what one position holds: a scalar (CUDA, launch.h), a vector of
//                       // consecutive units (CPU, csrc/cpu/pointwise_kernels.h)
//   using Math = ...;   // the activations on Value (cells.h)
//   Value load(const T* p) const;  void store(T* p, Value v) const;
// Offsets are in elements: a row of a [rows, K*H] buffer is K blocks of H units; the gate buffers'
// rows are `gate_stride` apart.
#pragma once

#include <stdint.h>

#include <type_traits>

#include "cells.h"
#include "params.h"

namespace rnnkernels {

// One class for both directions, over their params: a method reading a field that only the other
// direction's params have is never instantiated for this one (and fails to compile if called).
template <typename Cell, typename T, typename IO, typename Params>
class Step {
 public:
  using Value = typename IO::Value;
  using Math = typename IO::Math;

  RNNKERNELS_HD Step(const Params& p, int64_t row, int64_t unit, IO io)
      : p_(p), row_(row), unit_(unit), io_(io) {}

  // Both directions.

  // Extra input i (traits' kInputs), its k-th block of H; 0 where the input is absent (a bias
  // that did not come).
  RNNKERNELS_HD Value input(int i, int k = 0) const {
    const StepInput<T>& in = p_.inputs[i];
    if (in.data == nullptr) return Value(0);
    return io_.load(in.data + (in.per_row ? row_ * in.width : 0) + k * p_.hidden + unit_);
  }
  RNNKERNELS_HD Value scalar(int i) const { return Value(p_.scalars[i]); }

  // Forward.

  // The pre-activation of gate k from the input side (with the folded biases) and from h_{t-1}.
  RNNKERNELS_HD Value input_gate(int k) const {
    return io_.load(p_.input_gates + gate(k));
  }
  RNNKERNELS_HD Value hidden_gate(int k) const {
    return io_.load(p_.hidden_gates + gate(k));
  }
  // State j: its value at t-1 until set_state writes the value at t.
  RNNKERNELS_HD Value state(int j) const { return io_.load(p_.states[j] + at()); }
  RNNKERNELS_HD void set_state(int j, Value v) const { io_.store(p_.states[j] + at(), v); }
  RNNKERNELS_HD void set_output(Value v) const {
    if (p_.output != nullptr) io_.store(p_.output + at(), v);
  }
  // Reserve slot k, for the backward (nothing in inference).
  RNNKERNELS_HD void save(int k, Value v) const {
    if (p_.reserve != nullptr) io_.store(p_.reserve + at(Cell::kReserve, k), v);
  }

  // Backward.

  // Reserve slot k as the forward saved it at this step.
  RNNKERNELS_HD Value saved(int k) const { return io_.load(p_.reserve + at(Cell::kReserve, k)); }
  // State j at t-1: h from the gathered rows; the others from the slot the previous step saved
  // them in (traits' saved_slot), or, for rows that start here, the initial state.
  RNNKERNELS_HD Value previous_state(int j) const {
    if (j == 0) return io_.load(p_.h_previous + at());
    return row_ < p_.continuing
               ? io_.load(p_.reserve_previous + at(Cell::kReserve, Cell::saved_slot(j)))
               : io_.load(p_.initial[j] + at());
  }
  // h_t as the forward output it. The forward may read it too: what set_output last wrote at
  // this position (a row-wise cell without a projection keeps a value there between passes).
  RNNKERNELS_HD Value output() const { return io_.load(p_.output + at()); }
  // dL/d state j at t: carried from t+1, plus for h the output's own gradient.
  RNNKERNELS_HD Value grad_state(int j) const {
    const Value carried = io_.load(p_.grad_states[j] + at());
    return j == 0 && p_.grad_output != nullptr ? carried + io_.load(p_.grad_output + at())
                                               : carried;
  }
  // dL/d state j at t-1 (for h: the part that bypasses W_hh, kDirectHiddenGrad).
  RNNKERNELS_HD void set_grad_state(int j, Value v) const {
    io_.store(p_.grad_states[j] + at(), v);
  }
  // dL/d the pre-activation of gate k, on both sides.
  RNNKERNELS_HD void set_grad_gate(int k, Value v) const {
    set_grad_input_gate(k, v);
    if (Cell::kSeparateHiddenGrad) set_grad_hidden_gate(k, v);
  }
  // One side's (kSeparateHiddenGrad).
  RNNKERNELS_HD void set_grad_input_gate(int k, Value v) const {
    io_.store(p_.grad_input_gates + gate(k), v);
  }
  RNNKERNELS_HD void set_grad_hidden_gate(int k, Value v) const {
    io_.store(p_.grad_hidden_gates + gate(k), v);
  }
  // h_t before the projection, recomputed, for the projection's weight gradient.
  RNNKERNELS_HD void set_unprojected(Value v) const {
    if (p_.unprojected != nullptr) io_.store(p_.unprojected + at(), v);
  }
  // Adds this row's part of dL/d extra input i (block k), where that gradient is wanted.
  RNNKERNELS_HD void add_input_grad(int i, int k, Value v) const {
    T* grad = p_.grad_inputs[i];
    if (grad == nullptr) return;
    grad += row_ * p_.inputs[i].width + k * p_.hidden + unit_;
    io_.store(grad, io_.load(grad) + v);
  }

 private:
  // This position in a [rows, H] buffer, and in block k of a [rows, blocks * H] one.
  RNNKERNELS_HD int64_t at() const { return row_ * p_.hidden + unit_; }
  RNNKERNELS_HD int64_t at(int blocks, int k) const {
    return (row_ * blocks + k) * p_.hidden + unit_;
  }
  // And in gate k of a gate buffer.
  RNNKERNELS_HD int64_t gate(int k) const {
    return row_ * p_.gate_stride + k * p_.hidden + unit_;
  }

  const Params& p_;
  int64_t row_, unit_;
  IO io_;
};

// The two directions, for drivers written once over both: each names its params and runs the
// cell's element function of that direction on a position (a Step) or, for row-wise cells
// (traits' kRowwise), on a row.
//
// A row is what the drivers give a row-wise cell: the same element functions' view, a row at a
// time, with a reduction across it:
//   using Value, Math;                       // as a Step's
//   int64_t hidden() const;                  // H
//   void for_each(const F& f) const;         // f(step) for every position of the row
//   Value sum(const F& f) const;             // the row's total of f(step), in every lane
// A position's writes are visible to the same position in a later for_each or sum; a cell must
// not read another position's.
template <bool IsForward>
struct Direction {
  template <typename T>
  using Params = std::conditional_t<IsForward, StepForwardParams<T>, StepBackwardParams<T>>;
  template <typename Cell, typename Position>
  static RNNKERNELS_HD void run(const Position& position) {
    if constexpr (IsForward) {
      Cell::forward(position);
    } else {
      Cell::backward(position);
    }
  }
};
using Forward = Direction<true>;
using Backward = Direction<false>;

// What every backend's row shares: the step's params, the row, and the IO policy's types.
template <typename IO, typename Params>
class RowBase {
 public:
  using Value = typename IO::Value;
  using Math = typename IO::Math;

  RNNKERNELS_HD RowBase(const Params& p, int64_t row) : p_(p), row_(row) {}
  RNNKERNELS_HD int64_t hidden() const { return p_.hidden; }

 protected:
  const Params& p_;
  int64_t row_;
};

}  // namespace rnnkernels
