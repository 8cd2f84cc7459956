// rnnkernels._C._forward: the lean path of the LSTM, GRU and RNN modules' forward
// (csrc/python_forward.cpp).
#pragma once

#include <pybind11/pybind11.h>

namespace rnnkernels {

void bind_forward(pybind11::module_& module);

}  // namespace rnnkernels
