// The lean path of the LSTM, GRU and RNN modules' forward (rnnkernels/modules.py,
// _Recurrent.forward). A plain call (tensors that are no subclass, torch.nn's argument
// checks passing, no JIT trace, no torch function mode, no autocast but for the RNN's) runs
// from here, in one crossing from Python: torch.nn's checks, the zero states, unbatched input's
// views, autocast's casts and the multi-layer operator rnnkernels::stacked, called through the
// dispatcher so that autograd and any dispatch mode apply as from Python. Any other call gets
// None back, and the module's Python forward runs it, raising torch.nn's errors. The Python
// path costs a single step more than the layer's own work (docs/DESIGN.md, "The lean path").
#include "python_forward.h"

#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/autocast_mode.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/extension.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include <rnnkernels/ops.h>

namespace py = pybind11;

namespace rnnkernels {
namespace {

// The tensor of a torch.Tensor or Parameter (no other subclass), or null.
const at::Tensor* plain_tensor(py::handle object) {
  return THPVariable_CheckExact(object.ptr()) ? &THPVariable_Unpack(object.ptr()) : nullptr;
}

// A state given in hx as the call needs it: a plain tensor of input's dtype and device, of shape
// `shape` ([L*D, B, width]), or [L*D, width] for an unbatched input, which it is then viewed from.
std::optional<at::Tensor> given_state(py::handle object, const at::Tensor& input, bool batched,
                                      at::IntArrayRef shape) {
  const at::Tensor* state = plain_tensor(object);
  if (state == nullptr || state->dim() != (batched ? 3 : 2) ||
      state->scalar_type() != input.scalar_type() || state->device() != input.device()) {
    return std::nullopt;
  }
  at::Tensor batched_state = batched ? *state : state->unsqueeze(1);
  if (batched_state.sizes() != shape) return std::nullopt;
  return batched_state;
}

// The initial states, h0 then (LSTM) c0, each [L*D, B, width]: zeros without hx; hx's where they
// are as given_state takes them (LSTM's a tuple of two); none otherwise.
std::optional<std::vector<at::Tensor>> initial_states(
    py::handle hx, const at::Tensor& input, bool batched,
    const std::vector<std::vector<int64_t>>& shapes) {
  std::vector<at::Tensor> states;
  if (hx.is_none()) {
    for (const std::vector<int64_t>& shape : shapes) {
      states.push_back(at::zeros(shape, input.options()));
    }
    return states;
  }
  const bool pair = shapes.size() == 2;
  if (pair && !(PyTuple_Check(hx.ptr()) && PyTuple_GET_SIZE(hx.ptr()) == 2)) return std::nullopt;
  for (size_t j = 0; j < shapes.size(); ++j) {
    py::handle object = pair ? py::handle(PyTuple_GET_ITEM(hx.ptr(), j)) : hx;
    std::optional<at::Tensor> state = given_state(object, input, batched, shapes[j]);
    if (!state.has_value()) return std::nullopt;
    states.push_back(*state);
  }
  return states;
}

// functional.autocast_dtype's: the dtype autocast runs `input`'s layer in, or none where
// autocast is off for its device or casts no such tensor (it casts floating ones but float64).
std::optional<at::ScalarType> autocast_dtype(const at::Tensor& input) {
  const c10::DeviceType device = input.device().type();
  if (!input.is_floating_point() || input.scalar_type() == at::kDouble ||
      !at::autocast::is_autocast_available(device) ||
      !at::autocast::is_autocast_enabled(device)) {
    return std::nullopt;
  }
  return at::autocast::get_autocast_dtype(device);
}

// functional.autocast_cast's, of one tensor: a differentiable cast where autocast would cast.
void autocast_cast(at::Tensor& tensor, at::ScalarType dtype) {
  if (tensor.is_floating_point() && tensor.scalar_type() != at::kDouble) {
    tensor = tensor.to(dtype);
  }
}

// A string literal as a template argument, for key<"name">() (converted implicitly from it).
template <size_t N>
struct Literal {
  constexpr Literal(const char (&text)[N]) { std::copy_n(text, N, chars); }
  char chars[N];
};

// `name` as a dictionary key, made once per name (PyDict_GetItemString would make and hash a
// string object on every lookup).
template <Literal name>
PyObject* key() {
  static PyObject* const interned = PyUnicode_InternFromString(name.chars);
  return interned;
}

// The module's attributes that its forward reads, from its instance dictionary, where
// nn.Module keeps plain attributes: a dictionary lookup each, where getattr would first search
// the classes of the module's MRO (nn.Module's __getattr__ makes that the slow path), a tenth of
// a single step's call for a dozen attributes. nullopt where one is missing there or of another
// type; the Python path then reads them as torch.nn does.
struct Attributes {
  int64_t input_size, hidden_size, proj_size, num_layers;
  bool bias, bidirectional, batch_first, training;
  double dropout;
  py::handle flat_weights;

  static std::optional<Attributes> of(py::handle module) {
    const py::object dict =
        py::reinterpret_steal<py::object>(PyObject_GenericGetDict(module.ptr(), nullptr));
    if (!dict || !PyDict_Check(dict.ptr()) || !weights_unchanged(dict.ptr())) {
      PyErr_Clear();
      return std::nullopt;
    }
    const auto get = [&](PyObject* name) { return PyDict_GetItem(dict.ptr(), name); };
    const auto integer = [&](PyObject* name, int64_t& out) {
      PyObject* value = get(name);
      if (value == nullptr || !PyLong_CheckExact(value)) return false;
      out = PyLong_AsLongLong(value);
      return true;
    };
    const auto flag = [&](PyObject* name, bool& out) {
      PyObject* value = get(name);
      if (value == nullptr || !PyBool_Check(value)) return false;
      out = value == Py_True;
      return true;
    };
    Attributes a;
    PyObject* dropout = get(key<"dropout">());
    PyObject* flat_weights = get(key<"_flat_weights">());
    if (!integer(key<"input_size">(), a.input_size) ||
        !integer(key<"hidden_size">(), a.hidden_size) ||
        !integer(key<"proj_size">(), a.proj_size) ||
        !integer(key<"num_layers">(), a.num_layers) || !flag(key<"bias">(), a.bias) ||
        !flag(key<"bidirectional">(), a.bidirectional) ||
        !flag(key<"batch_first">(), a.batch_first) || !flag(key<"training">(), a.training) ||
        dropout == nullptr || !PyFloat_CheckExact(dropout) || flat_weights == nullptr ||
        !PyList_CheckExact(flat_weights)) {
      return std::nullopt;
    }
    a.dropout = PyFloat_AS_DOUBLE(dropout);
    a.flat_weights = flat_weights;  // borrowed from the module's dictionary, which outlives us
    return a;
  }

 private:
  // torch.nn's check that no weight was replaced since the module's _flat_weights were listed
  // (torch.func.functional_call swaps them): true where each is still the parameter of its
  // name. False also where one is no plain parameter (a parametrization's property, say).
  static bool weights_unchanged(PyObject* dict) {
    PyObject* parameters = PyDict_GetItem(dict, key<"_parameters">());
    PyObject* refs = PyDict_GetItem(dict, key<"_flat_weight_refs">());
    PyObject* names = PyDict_GetItem(dict, key<"_flat_weights_names">());
    if (parameters == nullptr || refs == nullptr || names == nullptr ||
        !PyDict_Check(parameters) || !PyList_Check(refs) || !PyList_Check(names) ||
        PyList_GET_SIZE(refs) != PyList_GET_SIZE(names)) {
      return false;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(names); ++i) {
      PyObject* weight = PyDict_GetItem(parameters, PyList_GET_ITEM(names, i));
      PyObject* ref = PyList_GET_ITEM(refs, i);
      if (weight == nullptr || weight == Py_None || !PyWeakref_CheckRef(ref) ||
          PyWeakref_GetObject(ref) != weight) {
        return false;
      }
    }
    return true;
  }
};

// The call of `module` (an LSTM, GRU or RNN running `cell`: "lstm", "gru", "rnn_tanh" or
// "rnn_relu") as torch.nn's forward returns it, (output, h_n) or, for the LSTM, (output, (h_n,
// c_n)); None where the call is not a plain one. Reads the module's attributes on every call, as
// torch.nn's forward does.
py::object forward(py::handle module, const std::string& cell, py::handle input_object,
                   py::handle hx) {
  const at::Tensor* input = plain_tensor(input_object);
  if (input == nullptr || at::impl::torch_function_mode_enabled() ||
      torch::jit::tracer::isTracing()) {
    return py::none();
  }
  // Under autocast, only the Elman RNN: its results come out in the autocast dtype, as torch.nn's
  // do. The others' result dtypes follow rules of their own, which functional.py applies.
  const std::optional<at::ScalarType> autocast = autocast_dtype(*input);
  if (autocast.has_value() && cell != "rnn_tanh" && cell != "rnn_relu") return py::none();
  const std::optional<Attributes> attributes = Attributes::of(module);
  if (!attributes.has_value()) return py::none();
  const Attributes& a = *attributes;
  const int64_t dims = input->dim();
  if ((dims != 2 && dims != 3) || input->numel() == 0 || input->size(-1) != a.input_size) {
    return py::none();
  }
  std::vector<at::Tensor> weights;
  weights.reserve(PyList_GET_SIZE(a.flat_weights.ptr()));
  for (py::handle object : py::reinterpret_borrow<py::list>(a.flat_weights)) {
    const at::Tensor* weight = plain_tensor(object);
    if (weight == nullptr) return py::none();
    weights.push_back(*weight);
  }
  if (weights.empty() || weights[0].scalar_type() != input->scalar_type()) return py::none();

  const bool batched = dims == 3;
  const int64_t batch_dim = a.batch_first ? 0 : 1;
  at::Tensor batched_input = batched ? *input : input->unsqueeze(batch_dim);
  const int64_t layers = a.num_layers * (a.bidirectional ? 2 : 1);
  const int64_t batch = batched_input.size(batch_dim);
  std::vector<std::vector<int64_t>> shapes{
      {layers, batch, a.proj_size > 0 ? a.proj_size : a.hidden_size}};
  if (cell == "lstm") shapes.push_back({layers, batch, a.hidden_size});
  std::optional<std::vector<at::Tensor>> states = initial_states(hx, *input, batched, shapes);
  if (!states.has_value()) return py::none();
  if (autocast.has_value()) {
    autocast_cast(batched_input, *autocast);
    for (at::Tensor& state : *states) autocast_cast(state, *autocast);
    for (at::Tensor& weight : weights) autocast_cast(weight, *autocast);
  }

  auto [output, finals] =
      ops::stacked(cell, batched_input, std::nullopt, *states, weights, {}, a.bias, a.num_layers,
                   a.dropout, a.training, a.bidirectional, a.batch_first);
  if (!batched) {
    output = output.squeeze(batch_dim);
    for (at::Tensor& final : finals) final = final.squeeze(1);
  }
  if (finals.size() == 2) return py::make_tuple(output, py::make_tuple(finals[0], finals[1]));
  return py::make_tuple(output, finals[0]);
}

}  // namespace

void bind_forward(py::module_& module) {
  module.def("_forward", &forward);
}

}  // namespace rnnkernels
