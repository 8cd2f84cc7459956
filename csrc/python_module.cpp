// The Python extension module rnnkernels._C: empty, its import loads this library and so runs
// the operator registrations (csrc/ops.cpp, csrc/cpu/, csrc/cuda/). The LibTorch build
// (CMakeLists.txt) leaves this file out.
#include <Python.h>

extern "C" PyObject* PyInit__C() {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
