// The Python extension module rnnkernels._C. Importing it loads this library and so runs the
// operator registrations (csrc/ops.cpp, csrc/autograd.cpp, csrc/cpu/, csrc/cuda/); its functions
// report the build (csrc/build_info.h) and install the reference backward hook
// (csrc/autograd.h). The LibTorch build (CMakeLists.txt) leaves this file out.
#include <torch/extension.h>

#include "autograd.h"
#include "build_info.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.def("_build_info", &rnnkernels::build_info);
  m.def("_set_reference_backward", [](py::function function) {
    // Kept for the life of the process: the hook may run until the interpreter exits.
    auto* held = new py::function(std::move(function));
    rnnkernels::set_reference_backward(
        [held](const std::string& op, const std::vector<std::optional<at::Tensor>>& inputs,
               const std::vector<at::Tensor>& grads, bool reverse,
               const std::string& nonlinearity) {
          const py::gil_scoped_acquire gil;
          return (*held)(op, inputs, grads, reverse, nonlinearity)
              .cast<std::vector<std::optional<at::Tensor>>>();
        });
  });
}
