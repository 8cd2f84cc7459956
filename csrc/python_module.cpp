// The Python extension module rnnkernels._C. Importing it loads this library and so runs the
// operator registrations (csrc/ops/, csrc/cpu/, csrc/cuda/); its functions report the build
// (csrc/build_info.h) and the cells' signatures, which the fake kernels read (rnnkernels/_ops.py),
// _forward runs the modules' lean path (csrc/python_forward.cpp), and the CPU buffer pool's
// functions back rnnkernels.empty_cache (csrc/cpu/buffer_pool.h).
// The LibTorch build (CMakeLists.txt) leaves both files out.
#include <torch/extension.h>

#include "build_info.h"
#include "cpu/buffer_pool.h"
#include "kernels/cell_list.h"
#include "layer/layer_common.h"
#include "python_forward.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.def("_build_info", &rnnkernels::build_info);
  m.def("_cells", [] {
    py::list cells;
    rnnkernels::Cells::visit_all([&](auto tag) {
      const rnnkernels::CellSignature& cell =
          rnnkernels::cell_signature<typename decltype(tag)::type>();
      py::list params, without_grad;
      for (size_t i = 0; i < 4 + cell.params.size(); ++i) {
        params.append(cell.param_name(i));
        if (i >= 4 && !rnnkernels::has_gradient(cell.params[i - 4].role)) without_grad.append(i);
      }
      py::dict info;
      info["name"] = cell.name;
      info["forward_op"] = cell.forward_op;
      info["backward_op"] = cell.backward_op;
      info["gates"] = cell.gates;
      info["states"] = cell.states;
      info["params"] = params;
      info["without_grad"] = without_grad;
      info["projection"] = cell.param_index(rnnkernels::ParamRole::kProjection);
      info["reserve"] = cell.reserve;
      info["scalars"] = cell.scalars;
      cells.append(info);
    });
    return cells;
  });
  m.def("_release_pooled_buffers", &rnnkernels::release_pooled_buffers);
  m.def("_pooled_free_bytes", &rnnkernels::pooled_free_bytes);
  m.def("_pooled_free_bytes_limit", &rnnkernels::pooled_free_bytes_limit);
  rnnkernels::bind_forward(m);
}
