"""Bad arguments to the operators themselves (``torch.ops.rnnkernels.*``, forward and backward):
every mistake raises a RuntimeError that names the argument, never crashes or returns garbage;
and NaN/inf in the data propagate as in torch.nn. (Mistakes in module inputs are in
test_errors.py, where the modules must raise torch.nn's own exceptions.)

A "wrong device" is a meta tensor among CPU ones, which works without a GPU: the dispatcher then
runs the operators' Meta kernel (their fake kernel), which must check devices too.
"""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkernels  # noqa: F401  (importing it registers the operators)

ops = torch.ops.rnnkernels
INPUT, HIDDEN, PROJ = 3, 4, 2
BATCH_SIZES = (3, 2, 1)  # rows 6, batch 3
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
OPERATORS = ["lstm_layer", "gru_layer", "rnn_layer", "lstm_layer_backward", "gru_layer_backward",
             "rnn_layer_backward"]


def _forward_args(cell):
    """Valid arguments of ``<cell>_layer`` (name -> value, in schema order), train=True; LSTM
    with both biases and a projection, so that every argument is present."""
    gen = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    gates, state = GATES[cell], PROJ if cell == "lstm" else HIDDEN
    rows, batch = sum(BATCH_SIZES), BATCH_SIZES[0]
    args = dict(input=randn(rows, INPUT), batch_sizes=torch.tensor(BATCH_SIZES),
                h0=randn(batch, state))
    if cell == "lstm":
        args["c0"] = randn(batch, HIDDEN)
    args.update(w_ih=randn(gates * HIDDEN, INPUT), w_hh=randn(gates * HIDDEN, state),
                b_ih=randn(gates * HIDDEN), b_hh=randn(gates * HIDDEN))
    if cell == "lstm":
        args["w_hr"] = randn(PROJ, HIDDEN)
    if cell == "rnn":
        args["nonlinearity"] = "tanh"
    args.update(reverse=False, train=True)
    return args


def _args(name, train=True):
    """Valid arguments of operator ``name``: a backward operator gets those of a forward run
    (with ``train``) and gradients of its outputs."""
    cell = name.split("_")[0]
    forward = _forward_args(cell)
    if not name.endswith("_backward"):
        return forward
    forward["train"] = train
    output, h_n, *rest = getattr(ops, f"{cell}_layer")(**forward)
    schema = getattr(ops, name).default._schema
    values = dict(forward, grad_output=torch.randn_like(output), grad_h_n=torch.randn_like(h_n),
                  output=output)
    if cell == "lstm":
        values["grad_c_n"] = torch.randn_like(rest[0])
    if cell != "rnn":
        values["reserve"] = rest[-1]
    return {a.name: values[a.name] for a in schema.arguments}


def _call(name, args):
    return getattr(ops, name)(**args)


def _tensor_arguments(name):
    return [a.name for a in getattr(ops, name).default._schema.arguments
            if "Tensor" in str(a.type)]


def test_valid_arguments_run():
    """The baseline every test below changes one argument of."""
    for name in OPERATORS:
        _call(name, _args(name))


# ---------------------------------------------------------------------------------------------
# One tensor argument wrong at a time. Each mutation returns the bad value and the pattern the
# message must match. An argument is checked against input (dtype, device) and against sizes
# derived from input and the weights, so a bad input is reported through what disagrees with it,
# in words that name input.


def _integer(name, tensor):
    if name == "input":
        return tensor.to(torch.int32), "expected input to have a floating dtype"
    if name == "batch_sizes":
        return tensor.to(torch.int32), "expected batch_sizes to have dtype int64"
    return tensor.to(torch.int32), f"expected {name} to have dtype Float .*got Int"


def _other_float(name, tensor):
    if name == "input":
        return tensor.double(), r"to have dtype Double \(the dtype of input\), got Float"
    if name == "batch_sizes":
        return tensor.double(), "expected batch_sizes to have dtype int64"
    return tensor.double(), f"expected {name} to have dtype Float .*got Double"


def _meta(name, tensor):
    if name == "input":
        return tensor.to("meta"), r"on device meta \(the device of input\), got cpu"
    if name == "batch_sizes":
        return tensor.to("meta"), "expected batch_sizes on the CPU"
    return tensor.to("meta"), f"expected {name} on device cpu .*got meta"


def _extra_dim(name, tensor):
    """One dim too many: leading for the weights, trailing for the rest, since input [T, B, I]
    and states [1, B, *] are layouts the operators take (csrc/ops/layer_kernels.h)."""
    if name == "input":
        return tensor[None, None], "expected input to be 2-D"
    if name == "batch_sizes":
        return tensor.unsqueeze(0), "expected batch_sizes to be 1-D"
    if name in ("w_hh", "w_hr"):
        return tensor.unsqueeze(0), f"expected {name} to be 2-D"
    return tensor.unsqueeze(-1), f"expected {name} of shape"


def _wrong_size(name, tensor):
    """One more element along the last dimension (for input: one more row, which no longer
    matches batch_sizes)."""
    if name == "input":
        return torch.cat([tensor, tensor[:1]]), "to sum to the 7 rows of input, got 6"
    if name == "batch_sizes":
        return torch.cat([tensor, tensor[-1:]]), "expected batch_sizes to sum to"
    bigger = torch.cat([tensor, tensor.narrow(-1, 0, 1)], dim=-1)
    if name == "reserve" and tensor.dim() == 2:
        return bigger, "expected reserve of shape"
    return bigger, f"expected {name} (of shape|to be 2-D)"


def _non_contiguous(name, tensor):
    """The same values in a non-contiguous layout."""
    doubled = torch.stack([tensor, tensor], dim=-1)
    return doubled[..., 0], f"expected {name} to be contiguous"


def _none(name, tensor):
    """torch.ops passes None for a Tensor argument on as an undefined tensor."""
    return None, f"expected {name} to be a tensor, got None"


# Arguments the C++ checks use before checking that they are defined, so that None gets a
# misleading message (reported; strict, so that the fix turns these into failures to remove).

MUTATIONS = {
    "integer": _integer,
    "other_float": _other_float,
    "meta_device": _meta,
    "extra_dim": _extra_dim,
    "wrong_size": _wrong_size,
    "non_contiguous": _non_contiguous,
    "none": _none,
}


def _argument_cases():
    cases = []
    for name in OPERATORS:
        for argument in _tensor_arguments(name):
            for mutation in MUTATIONS:
                optional = "Optional" in str(
                    next(a.type for a in getattr(ops, name).default._schema.arguments
                         if a.name == argument))
                if mutation == "none" and optional:
                    continue  # None is valid there (no bias / no projection)
                cases.append(pytest.param(name, argument, mutation,
                                          id=f"{name}-{argument}-{mutation}"))
    return cases


@pytest.mark.parametrize("name, argument, mutation", _argument_cases())
def test_bad_tensor_argument_is_named(name, argument, mutation):
    args = _args(name)
    args[argument], pattern = MUTATIONS[mutation](argument, args[argument])
    with pytest.raises(RuntimeError, match=pattern):
        _call(name, args)


# ---------------------------------------------------------------------------------------------
# batch_sizes' contents, for every operator

BAD_BATCH_SIZES = [
    pytest.param([1, 2, 3], "expected batch_sizes to be non-increasing, got 1 then 2",
                 id="increasing"),
    pytest.param([3, 3, 0], "expected every batch_sizes entry to be positive, got 0 at step 2",
                 id="zero"),
    pytest.param([4, 3, -1], "expected every batch_sizes entry to be positive, got -1",
                 id="negative"),
    pytest.param([3, 2, 2], "expected batch_sizes to sum to the 6 rows of input, got 7",
                 id="sum_too_big"),
    pytest.param([3, 2], "expected batch_sizes to sum to the 6 rows of input, got 5",
                 id="sum_too_small"),
    pytest.param([], "expected batch_sizes to hold at least one step, got none", id="empty"),
]


@pytest.mark.parametrize("sizes, pattern", BAD_BATCH_SIZES)
@pytest.mark.parametrize("name", OPERATORS)
def test_bad_batch_sizes_content(name, sizes, pattern):
    args = _args(name)
    args["batch_sizes"] = torch.tensor(sizes, dtype=torch.int64)
    with pytest.raises(RuntimeError, match=pattern):
        _call(name, args)


@pytest.mark.parametrize("name", OPERATORS)
def test_batch_size_above_state_rows(name):
    """batch_sizes[0] is the batch: a first step wider than h0 has rows is an h0 shape error."""
    args = _args(name)
    args["batch_sizes"] = torch.tensor([4, 1, 1])
    with pytest.raises(RuntimeError, match=r"expected h0 of shape \[4, "):
        _call(name, args)


# ---------------------------------------------------------------------------------------------
# Other arguments


@pytest.mark.parametrize("name", ["lstm_layer_backward", "gru_layer_backward"])
def test_backward_of_an_inference_forward_names_reserve(name):
    """A forward with train=False saves nothing: its empty reserve cannot feed the backward."""
    args = _args(name, train=False)
    assert args["reserve"].numel() == 0
    with pytest.raises(RuntimeError, match="reserve is empty: the forward ran with train=False"):
        _call(name, args)


@pytest.mark.parametrize("name", ["rnn_layer", "rnn_layer_backward"])
@pytest.mark.parametrize("nonlinearity", ["sigmoid", "", "Tanh"])
def test_unknown_nonlinearity(name, nonlinearity):
    args = _args(name)
    args["nonlinearity"] = nonlinearity
    with pytest.raises(RuntimeError, match="expected nonlinearity 'tanh' or 'relu'"):
        _call(name, args)


@pytest.mark.parametrize("name", ["lstm_layer", "gru_layer", "rnn_layer"])
def test_w_hh_rows_not_a_multiple_of_the_gates(name):
    args = _args(name)
    if name == "rnn_layer":
        pytest.skip("one gate: every row count is a multiple")
    args["w_hh"] = args["w_hh"][1:].contiguous()
    with pytest.raises(RuntimeError, match=r"expected w_hh to be 2-D \[\d \* hidden_size"):
        _call(name, args)


@pytest.mark.parametrize("name", OPERATORS)
def test_all_meta_arguments_give_shapes(name):
    """Meta tensors everywhere (but batch_sizes, on the CPU as always) is a valid shape
    computation, e.g. a model built on the meta device: outputs on meta, right shapes."""
    args = _args(name)
    meta = {k: v.to("meta") if isinstance(v, torch.Tensor) and k != "batch_sizes" else v
            for k, v in args.items()}
    expected = _call(name, args)
    actual = _call(name, meta)
    for got, want in zip(actual, expected):
        assert got.device.type == "meta" and got.shape == want.shape and got.dtype == want.dtype


# ---------------------------------------------------------------------------------------------
# NaN and inf: same places as torch.nn's results on the same data.

MODULES = [
    pytest.param("LSTM", {}, id="LSTM"),
    pytest.param("LSTM", dict(proj_size=3, bidirectional=True), id="LSTM-proj-bidir"),
    pytest.param("GRU", dict(bidirectional=True), id="GRU-bidir"),
    pytest.param("RNN", dict(nonlinearity="tanh"), id="RNN-tanh"),
    pytest.param("RNN", dict(nonlinearity="relu"), id="RNN-relu"),
]
SPECIAL_VALUES = [pytest.param(float("nan"), id="nan"), pytest.param(float("inf"), id="inf"),
                  pytest.param(float("-inf"), id="-inf")]
# Where the special value goes: one element of the input, of the initial state h0, or a whole
# row of the recurrent weight (reaching every gate of one hidden unit).
PLACES = ["input", "h0", "weight_hh_l0"]


def _special_pair(name, kwargs, place, value, make_pair):
    reference, ours = make_pair(name, 5, 7, **kwargs)
    directions = 2 if kwargs.get("bidirectional") else 1
    x = torch.randn(6, 3, 5)
    h0 = torch.randn(directions, 3, kwargs.get("proj_size") or 7)
    if place == "input":
        x[2, 1, 3] = value
    elif place == "h0":
        h0[0, 1, 0] = value
    else:
        for module in (reference, ours):
            with torch.no_grad():
                getattr(module, place)[5] = value
    hx = (h0, torch.randn(directions, 3, 7)) if name == "LSTM" else h0
    return reference, ours, x, hx


def _assert_same_special_places(actual, expected):
    for got, want in zip(actual, expected):
        assert torch.equal(got.isnan(), want.isnan())
        assert torch.equal(got.isposinf(), want.isposinf())
        assert torch.equal(got.isneginf(), want.isneginf())
        finite = want.isfinite()
        torch.testing.assert_close(got[finite], want[finite], rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("value", SPECIAL_VALUES)
@pytest.mark.parametrize("name, kwargs", MODULES)
def test_special_values_propagate_as_in_torch_nn(name, kwargs, value, place, make_pair):
    reference, ours, x, hx = _special_pair(name, kwargs, place, value, make_pair)
    output, hidden = ours(x, hx)
    expected_output, expected_hidden = reference(x, hx)
    flat = lambda out, hid: [out, *(hid if isinstance(hid, tuple) else (hid,))]  # noqa: E731
    _assert_same_special_places(flat(output, hidden), flat(expected_output, expected_hidden))


@pytest.mark.parametrize("value", SPECIAL_VALUES)
@pytest.mark.parametrize("name, kwargs", MODULES)
def test_special_values_in_packed_input_propagate_as_in_torch_nn(name, kwargs, value, make_pair):
    """Packed variable-length input: a NaN/inf in one sequence reaches only that sequence."""
    reference, ours, x, hx = _special_pair(name, kwargs, "input", value, make_pair)
    packed = pack_padded_sequence(x, [6, 4, 2], enforce_sorted=False)
    output, hidden = ours(packed, hx)
    expected_output, expected_hidden = reference(packed, hx)
    flat = lambda out, hid: [out.data, *(hid if isinstance(hid, tuple) else (hid,))]  # noqa: E731
    _assert_same_special_places(flat(output, hidden), flat(expected_output, expected_hidden))


@pytest.mark.parametrize("value", SPECIAL_VALUES)
@pytest.mark.parametrize("name, kwargs", MODULES)
def test_special_values_reach_the_gradients_as_in_torch_nn(name, kwargs, value, make_pair):
    """A NaN/inf in the input spoils the same gradient elements as in torch.nn."""
    reference, ours, x, hx = _special_pair(name, kwargs, "input", value, make_pair)
    x.requires_grad_()

    def grads(module):
        output, _ = module(x, hx)
        weights = torch.randn(output.shape, generator=torch.Generator().manual_seed(1))
        return torch.autograd.grad((output * weights).sum(), [x, *module.parameters()])

    _assert_same_special_places(grads(ours), grads(reference))


def test_nan_in_one_operator_row_stays_in_its_sequence():
    """At the operator level: a NaN in one sequence's row touches no other sequence's output."""
    args = _forward_args("gru")
    args["input"][0, 0] = float("nan")  # step 0, sequence 0
    output, h_n, _ = ops.gru_layer(**args)
    rows_of_sequence_0 = [0, 3, 5]  # batch_sizes (3, 2, 1): sequence 0 is each step's first row
    assert output[rows_of_sequence_0].isnan().all()
    others = [r for r in range(output.shape[0]) if r not in rows_of_sequence_0]
    assert output[others].isfinite().all()
    assert h_n[0].isnan().all() and h_n[1:].isfinite().all()
