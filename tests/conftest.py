"""Shared fixtures of the test suite.

The module-level tests compare rnnkernels' modules with torch.nn's, built from the same
state_dict and fed the same inputs; the fixtures here build those pairs and compare nested
results (tensors, tuples, PackedSequences) with per-dtype tolerances. They are fixtures rather
than importable helpers so that the tests work under any pytest import mode.
"""

import io
import types
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnkernels

# Tolerances of rnnkernels against torch.nn on the same inputs. Both sides compute the same
# math in different summation orders (our GEMMs and fused pointwise loops vs ATen's), so they
# differ by rounding only, which grows with the reduction lengths (I, H, and B*T for the weight
# gradients) and through the recurrence. Measured on the parity cases of test_modules.py, whose
# values (outputs, states, gradients) reach ~20 in magnitude:
# - float64 (eps 2.2e-16): largest difference ~3e-15. 1e-10 leaves a margin of 1e4 for other
#   machines and BLAS builds, and is still ~1e7 below what a wrong formula (a missed term, a
#   swapped gate, a state from the wrong step) produces.
# - float32 (eps 1.2e-7): largest difference ~2.4e-6, on weight gradients of magnitude ~10-20
#   (~10 eps of the value). 2e-5 absolute plus 2e-5 relative allows ~10x that, while a wrong
#   formula is off by >1e-2.
TOLERANCES = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=2e-5, atol=2e-5),
}


def _assert_close(actual, expected, path="result", tolerances=TOLERANCES):
    if isinstance(expected, PackedSequence):
        assert isinstance(actual, PackedSequence), f"{path}: expected a PackedSequence"
        for field in ("batch_sizes", "sorted_indices", "unsorted_indices"):
            want, got = getattr(expected, field), getattr(actual, field)
            if want is None:
                assert got is None, f"{path}.{field}: expected None"
            else:
                assert torch.equal(got, want), f"{path}.{field}: {got} != {want}"
        _assert_close(actual.data, expected.data, f"{path}.data", tolerances)
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected a dict"
        assert list(actual) == list(expected), f"{path}: keys {list(actual)} != {list(expected)}"
        for key, want in expected.items():
            _assert_close(actual[key], want, f"{path}[{key!r}]", tolerances)
    elif isinstance(expected, (tuple, list)):
        assert isinstance(actual, (tuple, list)), f"{path}: expected a sequence"
        assert len(actual) == len(expected), f"{path}: {len(actual)} items, not {len(expected)}"
        for index, (got, want) in enumerate(zip(actual, expected)):
            _assert_close(got, want, f"{path}[{index}]", tolerances)
    elif expected is None:
        assert actual is None, f"{path}: expected None"
    else:
        torch.testing.assert_close(actual, expected, **tolerances[expected.dtype],
                                   msg=lambda m: f"{path}: {m}")


@pytest.fixture
def assert_close():
    """``assert_close(actual, expected)``: equal structure (tensors, tuples, lists, dicts,
    PackedSequences, None), shapes and dtypes, values within the tolerance of the expected dtype;
    PackedSequence index fields must match exactly."""
    return _assert_close


def _make_pair(name, *args, seed=0, **kwargs):
    """(torch.nn module, rnnkernels module) of class ``name`` built with the same arguments; ours
    holds a copy of the torch.nn module's state_dict."""
    torch.manual_seed(seed)
    reference = getattr(nn, name)(*args, **kwargs)
    ours = getattr(rnnkernels, name)(*args, **kwargs)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


@pytest.fixture
def make_pair():
    """``make_pair(name, *args, seed=0, **kwargs) -> (torch.nn module, rnnkernels module)`` with
    identical parameters, e.g. ``make_pair("LSTM", 5, 7, num_layers=2, proj_size=3)``."""
    return _make_pair


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same RNG state, so that failures reproduce."""
    torch.manual_seed(0)


# ---------------------------------------------------------------------------------------------
# What the tests of the layers torch.nn has no class for (IndRNN, LayerNormLSTM, LayerNormGRU)
# share.


def _is_lstm(module):
    """Whether ``module``'s state is an LSTM's (h, c) pair."""
    return isinstance(module, (nn.LSTM, rnnkernels.LayerNormLSTM))


def _random_like(tensors, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in tensors]


def _weighted_grads(results, weights, leaves):
    loss = sum((r * w).sum() for r, w in zip(results, weights))
    return torch.autograd.grad(loss, leaves, retain_graph=True)


def _flat(output, hidden):
    return [output.data if isinstance(output, PackedSequence) else output,
            *(hidden if isinstance(hidden, tuple) else (hidden,))]


def _results_and_grads_close(got, want, leaves, tolerances=TOLERANCES):
    got, want = _flat(*got), _flat(*want)
    _assert_close(got, want, tolerances=tolerances)
    weights = _random_like(want)
    _assert_close(_weighted_grads(got, weights, leaves), _weighted_grads(want, weights, leaves),
                  tolerances=tolerances)


def _opcheck_layer(cell, input, batch_sizes, states, params, reverse, scalars=()):
    ops = torch.ops.rnnkernels
    tensors, scalars = [input, *states, *params], list(scalars)

    def split(values):
        return values[0], values[1:1 + len(states)], values[1 + len(states):]

    x, s, p = split([None if t is None else t.detach().requires_grad_() for t in tensors])
    torch.library.opcheck(ops.layer.default, (cell, x, batch_sizes, s, p, scalars, reverse, True))
    x, s, p = split([None if t is None else t.detach() for t in tensors])
    output, finals, reserve = ops.layer(cell, x, batch_sizes, s, p, scalars, reverse, True)
    grads = _random_like([output, *finals])
    torch.library.opcheck(ops.layer_backward.default,
                          (cell, grads[0], grads[1:], x, batch_sizes, s, p, scalars, output,
                           reserve, reverse))


def _layer_input(form, module, dtype, with_hx):
    directions = 2 if module.bidirectional else 1
    batch_dim = 0 if module.batch_first else 1
    shape = [5, 5]
    shape[batch_dim] = 3
    input = torch.randn(*shape, module.input_size, dtype=dtype)
    states = (module.num_layers * directions, 3, module.hidden_size)
    if form == "unbatched":
        input = input.select(batch_dim, 0)
        states = (states[0], module.hidden_size)
    elif form == "packed":
        input = pack_padded_sequence(input, torch.tensor([5, 2, 4]), module.batch_first,
                                     enforce_sorted=False)
    if not with_hx:
        return input, None
    if _is_lstm(module):
        return input, (torch.randn(*states, dtype=dtype), torch.randn(*states, dtype=dtype))
    return input, torch.randn(*states, dtype=dtype)


def _check_torch_compile(module, input):
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    _results_and_grads_close(compiled(input), module(input), [input, *module.parameters()])


def _check_torch_export(module, input):
    with warnings.catch_warnings():
        # RNNBase reassigns _flat_weights in forward, which export warns about.
        warnings.filterwarnings("ignore", message=".*were assigned during export.*")
        program = torch.export.export(module, (input,))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert "rnnkernels.stacked.default" in targets
    _assert_close(_flat(*program.module()(input)), _flat(*module(input)))


def _check_autocast(module, input, hx):
    want = _flat(*module(input, hx))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _flat(*module(input, hx))
    assert [t.dtype for t in got] == [torch.bfloat16] * len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.float(), w, rtol=5e-2, atol=5e-2)
    sum(t.float().sum() for t in got).backward()
    assert all(p.grad.dtype == torch.float32 and p.grad.abs().sum() > 0
               for p in module.parameters())


def _check_onnx_export(module, input, dynamo):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    if dynamo:
        proto = torch.onnx.export(module, (input,), dynamo=True, verbose=False).model_proto
    else:
        buffer = io.BytesIO()
        torch.onnx.export(module, (input,), buffer, dynamo=False)
        proto = onnx.load_from_string(buffer.getvalue())
    assert {node.domain for node in proto.graph.node} <= {"", "ai.onnx"}
    session = ort.InferenceSession(proto.SerializeToString())
    got = session.run(None, {session.get_inputs()[0].name: input.numpy()})
    with torch.no_grad():
        want = _flat(*module(input))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(torch.from_numpy(g), w, rtol=1e-5, atol=1e-5)


def _assert_same_error(actual, expected):
    with pytest.raises(Exception) as wanted:
        expected()
    with pytest.raises(Exception) as got:
        actual()
    assert type(got.value) is type(wanted.value)
    assert str(got.value) == str(wanted.value)


@pytest.fixture
def layer_checks():
    """The helpers of the new layers' tests, as attributes:

    - ``random_like(tensors, seed=1)``: fixed random tensors of their shapes and dtypes;
    - ``weighted_grads(results, weights, leaves)``: d(sum_k <results[k], weights[k]>)/d(leaves),
      the graph kept (the results of ours and of an oracle may share a part of it);
    - ``flat(output, hidden)``: a layer's results as a list (a PackedSequence's data, each state);
    - ``results_and_grads_close(got, want, leaves, tolerances=TOLERANCES)``: two layers'
      ``(output, hidden)`` are close (``assert_close``, with these per-dtype tolerances), and so
      are their weighted_grads for the same random weights;
    - ``opcheck_layer(cell, input, batch_sizes, states, params, reverse, scalars=())``:
      torch.library.opcheck of the generic layer operator (all tensors with gradients) and of
      layer_backward on its results;
    - ``layer_input(form, module, dtype, with_hx) -> (input, hx or None)``: for ``form``
      "padded" a batch of 3 sequences of 5 steps, "packed" the same with lengths 5, 2, 4
      (unsorted), "unbatched" one sequence; hx an (h, c) pair for an LSTM;
    - ``torch_compile(module, input)``: torch.compile(fullgraph=True, aot_eager) gives eager's
      results and gradients;
    - ``torch_export(module, input)``: torch.export keeps rnnkernels.stacked and eager's results;
    - ``autocast(module, input, hx)``: under CPU bfloat16 autocast the layer runs in bfloat16,
      close to float32's, and float32 parameters get float32 gradients;
    - ``onnx_export(module, input, dynamo)``: the export (dynamo or TorchScript exporter) holds
      standard operators only, and onnxruntime gives eager's results;
    - ``assert_same_error(actual, expected)``: both calls raise, the same type and message."""
    return types.SimpleNamespace(
        random_like=_random_like, weighted_grads=_weighted_grads, flat=_flat,
        results_and_grads_close=_results_and_grads_close, opcheck_layer=_opcheck_layer,
        layer_input=_layer_input, torch_compile=_check_torch_compile,
        torch_export=_check_torch_export, autocast=_check_autocast,
        onnx_export=_check_onnx_export, assert_same_error=_assert_same_error)


@pytest.fixture(params=["padded", "packed", "unbatched"])
def input_form(request):
    """The form of a layer's input (``layer_checks.layer_input``); a test taking it runs once
    each."""
    return request.param


# Mistakes torch.nn's layers raise for: (input shape, hx shape or None, input dtype) from the
# module's input and hidden sizes.
_BAD_INPUTS = {
    "input_feature_size": lambda i, h: ((2, 2, i + 1), None, torch.float32),
    "unbatched_input_feature_size": lambda i, h: ((2, i + 1), None, torch.float32),
    "input_dtype_not_weight_dtype": lambda i, h: ((2, 2, i), None, torch.float64),
    "hx_2d_for_batched_input": lambda i, h: ((2, 2, i), (1, 2), torch.float32),
    "hx_3d_for_unbatched_input": lambda i, h: ((2, i), (1, 1, h), torch.float32),
    "hx_num_layers": lambda i, h: ((2, 2, i), (2, 2, h), torch.float32),
    "hx_batch": lambda i, h: ((2, 2, i), (1, 3, h), torch.float32),
    "hx_hidden_size": lambda i, h: ((2, 2, i), (1, 2, h + 1), torch.float32),
}


@pytest.fixture(params=list(_BAD_INPUTS))
def bad_input(request):
    """``bad_input(module) -> (input, hx or None)``: one mistake torch.nn's layers raise for, for a
    one-layer unidirectional float32 ``module`` (hx zeros, an (h, c) pair of that shape for an
    LSTM); a test taking it runs once each."""
    case = _BAD_INPUTS[request.param]

    def make(module):
        input_shape, hx_shape, dtype = case(module.input_size, module.hidden_size)
        input = torch.randn(input_shape, dtype=dtype)
        if hx_shape is None:
            return input, None
        return input, ((torch.zeros(hx_shape), torch.zeros(hx_shape)) if _is_lstm(module)
                       else torch.zeros(hx_shape))

    return make
