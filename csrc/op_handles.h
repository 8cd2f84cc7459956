// Typed dispatcher handles of the layer operators (schemas in ops.cpp), for the C++ that calls
// them through the dispatcher so that autograd and the device kernels apply: csrc/autograd.cpp
// and csrc/stacked.cpp. Each handle is looked up once.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>
#include <tuple>

namespace rnnkernels {
namespace ops {

using OptionalTensor = std::optional<at::Tensor>;
using Tensor3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Tensor6 =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

using LSTMLayer = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, const at::Tensor&, const OptionalTensor&, const OptionalTensor&,
    const OptionalTensor&, bool, bool);
using LSTMLayerBackward = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                     at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, const OptionalTensor&, const OptionalTensor&, const OptionalTensor&,
    const at::Tensor&, const at::Tensor&, bool);
using GRULayer = Tensor3(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         const at::Tensor&, const at::Tensor&, const OptionalTensor&,
                         const OptionalTensor&, bool, bool);
using GRULayerBackward = Tensor6(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                 const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                 const at::Tensor&, const OptionalTensor&, const OptionalTensor&,
                                 const at::Tensor&, const at::Tensor&, bool);
using RNNLayer = Tensor3(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         const at::Tensor&, const at::Tensor&, const OptionalTensor&,
                         const OptionalTensor&, c10::string_view, bool, bool);
using RNNLayerBackward = Tensor6(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                 const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                 const at::Tensor&, const OptionalTensor&, const OptionalTensor&,
                                 c10::string_view, const at::Tensor&, bool);

template <typename Signature>
c10::TypedOperatorHandle<Signature> find(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

#define RNNKERNELS_OP_HANDLE(function, Signature, name)           \
  inline const c10::TypedOperatorHandle<Signature>& function() { \
    static const auto handle = find<Signature>(name);             \
    return handle;                                                \
  }
RNNKERNELS_OP_HANDLE(lstm_layer, LSTMLayer, "rnnkernels::lstm_layer")
RNNKERNELS_OP_HANDLE(lstm_layer_backward, LSTMLayerBackward, "rnnkernels::lstm_layer_backward")
RNNKERNELS_OP_HANDLE(gru_layer, GRULayer, "rnnkernels::gru_layer")
RNNKERNELS_OP_HANDLE(gru_layer_backward, GRULayerBackward, "rnnkernels::gru_layer_backward")
RNNKERNELS_OP_HANDLE(rnn_layer, RNNLayer, "rnnkernels::rnn_layer")
RNNKERNELS_OP_HANDLE(rnn_layer_backward, RNNLayerBackward, "rnnkernels::rnn_layer_backward")
#undef RNNKERNELS_OP_HANDLE

}  // namespace ops
}  // namespace rnnkernels
