// The layer operators' autograd (csrc/autograd.cpp), registered in C++ so that a call costs no
// Python. A backward with create_graph=True needs gradients that are differentiable themselves;
// those come from the pure-PyTorch reference (rnnkernels/reference.py), which the Python package
// installs here as a hook when it loads (csrc/python_module.cpp).
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace rnnkernels {

// hook(op, inputs, grads, reverse, nonlinearity) -> gradients of the differentiable inputs.
//   op: "lstm_layer", "gru_layer" or "rnn_layer"; nonlinearity: rnn_layer's, else empty.
//   inputs: the operator's tensor arguments in schema order (absent optional ones as nullopt):
//     input, batch_sizes, h0[, c0], w_ih, w_hh, b_ih, b_hh[, w_hr];
//   grads: the gradients of output, h_n[, c_n] (zeros where none came).
//   Returns the gradients of those inputs but batch_sizes, in the same order (nullopt for none).
using ReferenceBackward = std::function<std::vector<std::optional<at::Tensor>>(
    const std::string& op, const std::vector<std::optional<at::Tensor>>& inputs,
    const std::vector<at::Tensor>& grads, bool reverse, const std::string& nonlinearity)>;

void set_reference_backward(ReferenceBackward hook);

}  // namespace rnnkernels
