// The CPU kernels of every rnnkernels:: operator: csrc/layers.h's step loops over CPUBackend.
#include <torch/library.h>

#include "../layers.h"
#include "backend.h"

namespace rnnkernels {

TORCH_LIBRARY_IMPL(rnnkernels, CPU, m) {
  m.impl("lstm_layer", &lstm_layer<CPUBackend>);
  m.impl("lstm_layer_backward", &lstm_layer_backward<CPUBackend>);
  m.impl("gru_layer", &gru_layer<CPUBackend>);
  m.impl("gru_layer_backward", &gru_layer_backward<CPUBackend>);
  m.impl("rnn_layer", &rnn_layer<CPUBackend>);
  m.impl("rnn_layer_backward", &rnn_layer_backward<CPUBackend>);
}

}  // namespace rnnkernels
