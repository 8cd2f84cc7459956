// What the per-cell operators (csrc/ops/named.cpp) and the multi-layer rnn (stacked.cpp) share:
// torch.nn's RNN nonlinearity as the name of an Elman cell.
#pragma once

#include <c10/util/string_view.h>

namespace rnnkernels {

// "rnn_tanh" or "rnn_relu"; raises, naming `op`, for any other nonlinearity.
const char* elman_cell(const char* op, c10::string_view nonlinearity);

}  // namespace rnnkernels
