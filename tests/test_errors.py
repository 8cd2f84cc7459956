"""Bad arguments and inputs: rnnkernels' modules raise torch.nn's exception, same type and same
message, computed at test time by running torch.nn on the same input. Where torch.nn fails
badly (an internal error, or no error at all), ours raise the message torch.nn gives for the
same mistake in a padded input, or one naming what is wrong."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnkernels

LAYER_NAMES = ["LSTM", "GRU", "RNN"]
CELL_NAMES = ["LSTMCell", "GRUCell", "RNNCell"]
# Modules below are built with input_size=4, hidden_size=3, and take inputs [T=2, B=2, 4].
INPUT, HIDDEN = 4, 3


def _raised(call):
    """The exception ``call()`` raises; fails the test when it raises none."""
    with pytest.raises(Exception) as info:
        call()
    return info.value


def _assert_same_error(reference_call, our_call):
    expected = _raised(reference_call)
    actual = _raised(our_call)
    assert type(actual) is type(expected), f"{type(actual).__name__}: {actual}"
    assert str(actual) == str(expected)


def _state(name, shape, cell_shape=None, dtype=torch.float32):
    """A state of ``shape`` for a GRU/RNN, or the (h, c) pair of an LSTM(Cell) (c of
    ``cell_shape``, by default ``shape``)."""
    h = torch.zeros(shape, dtype=dtype)
    if not name.startswith("LSTM"):
        return h
    return h, torch.zeros(cell_shape or shape)


# ---------------------------------------------------------------------------------------------
# Layer forward


def _padded(*shape, dtype=torch.float32):
    return lambda name: (torch.randn(shape).to(dtype), None)


def _with_state(input_shape, shape, cell_shape=None):
    return lambda name: (torch.randn(*input_shape), _state(name, shape, cell_shape))


def _packed(features, state_shape=None, enforce_sorted=True):
    def make(name):
        lengths = [3, 2] if enforce_sorted else [2, 3]
        packed = pack_padded_sequence(torch.randn(3, 2, features), lengths,
                                      enforce_sorted=enforce_sorted)
        return packed, None if state_shape is None else _state(name, state_shape)

    return make


LAYER_FORWARD_ERRORS = [
    pytest.param(_padded(INPUT), id="input_1d"),
    pytest.param(_padded(2, 2, 2, INPUT), id="input_4d"),
    pytest.param(_padded(2, 2, INPUT + 1), id="input_feature_size"),
    pytest.param(_padded(2, INPUT + 1), id="unbatched_input_feature_size"),
    pytest.param(_padded(2, 2, INPUT, dtype=torch.float64), id="input_dtype_not_weight_dtype"),
    pytest.param(_padded(2, 2, INPUT, dtype=torch.int64), id="integer_input"),
    pytest.param(_padded(0, 2, INPUT), id="sequence_length_0"),
    pytest.param(_padded(0, INPUT), id="unbatched_sequence_length_0"),
    pytest.param(_with_state((2, 2, INPUT), (1, 2)), id="hx_2d_for_batched_input"),
    pytest.param(_with_state((2, INPUT), (1, 1, HIDDEN)), id="hx_3d_for_unbatched_input"),
    pytest.param(_with_state((2, 2, INPUT), (2, 2, HIDDEN)), id="hx_num_layers"),
    pytest.param(_with_state((2, 2, INPUT), (1, 3, HIDDEN)), id="hx_batch"),
    pytest.param(_with_state((2, 2, INPUT), (1, 2, HIDDEN + 1)), id="hx_hidden_size"),
    pytest.param(_with_state((2, INPUT), (2, HIDDEN)), id="unbatched_hx_num_layers"),
]
LSTM_FORWARD_ERRORS = [
    pytest.param(_with_state((2, 2, INPUT), (1, 2, HIDDEN), (1, 2)), id="c0_2d_for_batched_input"),
    pytest.param(_with_state((2, INPUT), (1, HIDDEN), (1, 1, HIDDEN)),
                 id="c0_3d_for_unbatched_input"),
    pytest.param(_with_state((2, 2, INPUT), (1, 2, HIDDEN), (1, 2, HIDDEN + 1)),
                 id="c0_hidden_size"),
    pytest.param(_with_state((2, 2, INPUT), (1, 2, HIDDEN), (2, 2, HIDDEN)), id="c0_num_layers"),
    pytest.param(lambda name: (torch.randn(2, 2, INPUT), (torch.zeros(1, 2, HIDDEN),) * 3),
                 id="three_states"),
]


@pytest.mark.parametrize("name", LAYER_NAMES)
@pytest.mark.parametrize("make_args", LAYER_FORWARD_ERRORS)
def test_layer_forward_error_matches_torch_nn(name, make_args, make_pair):
    reference, ours = make_pair(name, INPUT, HIDDEN)
    input, hx = make_args(name)
    _assert_same_error(lambda: reference(input, hx), lambda: ours(input, hx))


@pytest.mark.parametrize("make_args", LSTM_FORWARD_ERRORS)
def test_lstm_state_error_matches_torch_nn(make_args, make_pair):
    reference, ours = make_pair("LSTM", INPUT, HIDDEN)
    input, hx = make_args("LSTM")
    _assert_same_error(lambda: reference(input, hx), lambda: ours(input, hx))


@pytest.mark.parametrize(
    "state_shapes",
    [pytest.param(((1, 2, HIDDEN), (1, 2, HIDDEN)), id="h0_of_hidden_size"),
     pytest.param(((1, 2, 2), (1, 2, 2)), id="c0_of_proj_size")],
)
def test_lstm_projection_state_error_matches_torch_nn(state_shapes, make_pair):
    """With proj_size, h0 is [L*D, B, proj_size] and c0 [L*D, B, hidden_size]."""
    reference, ours = make_pair("LSTM", INPUT, HIDDEN, proj_size=2)
    input = torch.randn(2, 2, INPUT)
    hx = tuple(torch.zeros(shape) for shape in state_shapes)
    _assert_same_error(lambda: reference(input, hx), lambda: ours(input, hx))


@pytest.mark.parametrize("name", ["GRU", "RNN"])
def test_packed_input_feature_size_matches_torch_nn(name, make_pair):
    reference, ours = make_pair(name, INPUT, HIDDEN)
    packed = pack_padded_sequence(torch.randn(3, 2, INPUT + 1), [3, 2])
    _assert_same_error(lambda: reference(packed), lambda: ours(packed))


@pytest.mark.parametrize("enforce_sorted", [True, False], ids=["sorted", "unsorted"])
def test_lstm_packed_input_feature_size_is_checked(enforce_sorted):
    """torch.nn's LSTM fails inside a matmul here; ours says what torch.nn says for a padded
    input of the wrong feature size."""
    lstm = rnnkernels.LSTM(INPUT, HIDDEN)
    packed = pack_padded_sequence(torch.randn(3, 2, INPUT + 1), [3, 2] if enforce_sorted
                                  else [2, 3], enforce_sorted=enforce_sorted)
    padded_error = _raised(lambda: nn.LSTM(INPUT, HIDDEN)(torch.randn(3, 2, INPUT + 1)))
    with pytest.raises(RuntimeError) as info:
        lstm(packed)
    assert str(info.value) == "input.size(-1) must be equal to input_size. Expected 4, got 5"
    assert str(info.value) == str(padded_error)


@pytest.mark.parametrize("name", LAYER_NAMES)
@pytest.mark.parametrize("enforce_sorted", [True, False], ids=["sorted", "unsorted"])
@pytest.mark.parametrize(
    "state_shape",
    [pytest.param((1, 3, HIDDEN), id="hx_batch"), pytest.param((1, 2), id="hx_2d"),
     pytest.param((1, 2, HIDDEN + 1), id="hx_hidden_size"),
     pytest.param((2, 2, HIDDEN), id="hx_num_layers")],
)
def test_packed_input_state_error_matches_torch_nn_check(name, enforce_sorted, state_shape,
                                                         make_pair):
    """A wrong hx with a packed batch of 2. torch.nn's forward permutes hx before checking it,
    so its LSTM fails in an addition, a matmul or an index, and, unsorted, torch.nn silently
    drops a surplus state; ours raise what torch.nn's own check_forward_args says of these
    arguments (hx in the caller's order)."""
    if name == "LSTM" and len(state_shape) == 2:
        pytest.skip("torch.nn's LSTM raises an IndexError of its own here, which ours match "
                    "(test_lstm_packed_input_errors_match_torch_nn)")
    reference, ours = make_pair(name, INPUT, HIDDEN)
    packed = pack_padded_sequence(torch.randn(3, 2, INPUT), [3, 2] if enforce_sorted
                                  else [2, 3], enforce_sorted=enforce_sorted)
    hx = _state(name, state_shape)
    check = getattr(nn, name).check_forward_args
    _assert_same_error(lambda: check(reference, packed.data, hx, packed.batch_sizes),
                       lambda: ours(packed, hx))


def _hand_packed(dtype=torch.float32, sizes_dtype=torch.int64):
    """A PackedSequence built by hand (its constructor checks nothing): 2 sequences, 3 steps."""
    packed = pack_padded_sequence(torch.randn(3, 2, INPUT), [3, 2])
    return PackedSequence(packed.data.to(dtype), packed.batch_sizes.to(sizes_dtype))


@pytest.mark.parametrize("name", LAYER_NAMES)
@pytest.mark.parametrize("with_state", [False, True], ids=["no_hx", "hx"])
@pytest.mark.parametrize(
    "make_input",
    [pytest.param(lambda: _hand_packed(sizes_dtype=torch.float32), id="float_batch_sizes"),
     pytest.param(lambda: _hand_packed(sizes_dtype=torch.int32), id="int32_batch_sizes"),
     pytest.param(lambda: _hand_packed(dtype=torch.float64), id="float64_data"),
     pytest.param(lambda: _hand_packed(dtype=torch.int64), id="int64_data")],
)
def test_hand_built_packed_input_errors_match_torch_nn(name, with_state, make_input, make_pair):
    """Exception type and message as torch.nn's, whichever of its checks catches the input."""
    reference, ours = make_pair(name, INPUT, HIDDEN)
    packed = make_input()
    hx = _state(name, (1, 2, HIDDEN)) if with_state else None
    _assert_same_error(lambda: reference(packed, hx), lambda: ours(packed, hx))


@pytest.mark.parametrize("enforce_sorted", [True, False], ids=["sorted", "unsorted"])
@pytest.mark.parametrize("which", ["h0", "c0", "both"])
def test_lstm_packed_input_errors_match_torch_nn(which, enforce_sorted, make_pair):
    """torch.nn's LSTM hands packed input to ATen unchecked, which fails on a 2-D state with an
    IndexError: ours raise the same."""
    reference, ours = make_pair("LSTM", INPUT, HIDDEN)
    packed = pack_padded_sequence(torch.randn(3, 2, INPUT), [3, 2] if enforce_sorted
                                  else [2, 3], enforce_sorted=enforce_sorted)
    h0, c0 = torch.zeros(1, 2, HIDDEN), torch.zeros(1, 2, HIDDEN)
    if which in ("h0", "both"):
        h0 = h0[0]
    if which in ("c0", "both"):
        c0 = c0[0]
    _assert_same_error(lambda: reference(packed, (h0, c0)), lambda: ours(packed, (h0, c0)))


@pytest.mark.parametrize(
    "name, which",
    [pytest.param("LSTM", "h0", id="lstm-h0"), pytest.param("LSTM", "c0", id="lstm-c0"),
     pytest.param("GRU", "h0", id="gru-h0"), pytest.param("RNN", "h0", id="rnn-h0")],
)
@pytest.mark.parametrize("form", ["padded", "packed"])
def test_state_dtype_not_input_dtype_is_named(name, which, form):
    """torch.nn's LSTM says 'get_mkldnn_dtype: unsupported data type' here (GRU/RNN fail in a
    matmul); ours raise a RuntimeError naming both dtypes."""
    module = getattr(rnnkernels, name)(INPUT, HIDDEN)
    input = torch.randn(3, 2, INPUT)
    if form == "packed":
        input = pack_padded_sequence(input, [3, 2])
    states = {"h0": torch.zeros(1, 2, HIDDEN), "c0": torch.zeros(1, 2, HIDDEN)}
    states[which] = states[which].double()
    with pytest.raises(RuntimeError) as info:
        module(input, (states["h0"], states["c0"]) if name == "LSTM" else states["h0"])
    assert "torch.float32" in str(info.value) and "torch.float64" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Constructors


LAYER_CONSTRUCTOR_ERRORS = [
    pytest.param((INPUT, HIDDEN), dict(dropout=-0.1), id="dropout_negative"),
    pytest.param((INPUT, HIDDEN), dict(dropout=1.5), id="dropout_above_1"),
    pytest.param((INPUT, HIDDEN), dict(dropout=True), id="dropout_bool"),
    pytest.param((INPUT, HIDDEN), dict(dropout="0.5"), id="dropout_str"),
    pytest.param((4.0, HIDDEN), {}, id="input_size_float"),
    pytest.param((0, HIDDEN), {}, id="input_size_0"),
    pytest.param((-1, HIDDEN), {}, id="input_size_negative"),
    pytest.param((INPUT, "3"), {}, id="hidden_size_str"),
    pytest.param((INPUT, 0), {}, id="hidden_size_0"),
    pytest.param((INPUT, HIDDEN, 0), {}, id="num_layers_0"),
    pytest.param((INPUT, HIDDEN, -2), {}, id="num_layers_negative"),
    pytest.param((INPUT, HIDDEN, 2.0), {}, id="num_layers_float"),
    pytest.param((INPUT, HIDDEN), dict(bias=1), id="bias_int"),
    pytest.param((INPUT, HIDDEN), dict(bias="yes"), id="bias_str"),
    pytest.param((INPUT, HIDDEN), dict(bias=None), id="bias_none"),
]


@pytest.mark.parametrize("name", LAYER_NAMES)
@pytest.mark.parametrize("args, kwargs", LAYER_CONSTRUCTOR_ERRORS)
def test_layer_constructor_error_matches_torch_nn(name, args, kwargs):
    _assert_same_error(lambda: getattr(nn, name)(*args, **kwargs),
                       lambda: getattr(rnnkernels, name)(*args, **kwargs))


@pytest.mark.parametrize(
    "name, args, kwargs",
    [pytest.param("LSTM", (INPUT, HIDDEN), dict(proj_size=-1), id="lstm-proj_size_negative"),
     pytest.param("LSTM", (INPUT, HIDDEN), dict(proj_size=HIDDEN), id="lstm-proj_size_hidden"),
     pytest.param("LSTM", (INPUT, HIDDEN), dict(proj_size=HIDDEN + 2),
                  id="lstm-proj_size_above_hidden"),
     pytest.param("GRU", (INPUT, HIDDEN), dict(proj_size=2), id="gru-proj_size"),
     pytest.param("GRU", (INPUT, HIDDEN), dict(proj_size=0), id="gru-proj_size_0"),
     pytest.param("RNN", (INPUT, HIDDEN), dict(proj_size=2), id="rnn-proj_size"),
     pytest.param("RNN", (INPUT, HIDDEN), dict(nonlinearity="gelu"), id="rnn-nonlinearity"),
     pytest.param("RNN", (INPUT, HIDDEN, 1, "sigmoid"), {}, id="rnn-positional_nonlinearity"),
     pytest.param("RNN", (INPUT, HIDDEN), dict(nonlinearity="relu", bias=0),
                  id="rnn-relu-bias_int"),
     pytest.param("LSTMCell", (INPUT, -1), {}, id="lstmcell-hidden_size_negative"),
     pytest.param("GRUCell", (4.0, HIDDEN), {}, id="grucell-input_size_float"),
     pytest.param("LSTM", (INPUT, HIDDEN), dict(foo=1), id="lstm-unknown_keyword"),
     pytest.param("RNNCell", (INPUT, HIDDEN), dict(nonlinearity="relu", foo=1),
                  id="rnncell-unknown_keyword")],
)
def test_constructor_error_matches_torch_nn(name, args, kwargs):
    _assert_same_error(lambda: getattr(nn, name)(*args, **kwargs),
                       lambda: getattr(rnnkernels, name)(*args, **kwargs))


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_single_layer_dropout_warning_matches_torch_nn(name):
    with pytest.warns(UserWarning) as expected:
        getattr(nn, name)(INPUT, HIDDEN, dropout=0.5)
    with pytest.warns(UserWarning) as actual:
        getattr(rnnkernels, name)(INPUT, HIDDEN, dropout=0.5)
    assert [str(w.message) for w in actual] == [str(w.message) for w in expected]


# ---------------------------------------------------------------------------------------------
# Cells


def _cell_args(input_shape, hidden_shape=None, cell_shape=None, input_dtype=torch.float32,
               hidden_dtype=torch.float32):
    def make(name):
        input = torch.randn(input_shape, dtype=input_dtype)
        if hidden_shape is None:
            return input, None
        return input, _state(name, hidden_shape, cell_shape, dtype=hidden_dtype)

    return make


CELL_FORWARD_ERRORS = [
    pytest.param(_cell_args((2, INPUT + 1)), id="input_size"),
    pytest.param(_cell_args((INPUT + 1,)), id="unbatched_input_size"),
    pytest.param(_cell_args((2, INPUT), (2, HIDDEN + 2)), id="hidden_size"),
    pytest.param(_cell_args((2, INPUT), (3, HIDDEN)), id="batch"),
    pytest.param(_cell_args((1, 2, INPUT)), id="input_3d"),
    pytest.param(_cell_args(()), id="input_0d"),
    pytest.param(_cell_args((2, INPUT), (1, 2, HIDDEN)), id="hidden_3d"),
    pytest.param(_cell_args((INPUT,), (2, HIDDEN)), id="unbatched_input_batched_hidden"),
    pytest.param(_cell_args((2, INPUT), (HIDDEN,)), id="batched_input_unbatched_hidden"),
    pytest.param(_cell_args((2, INPUT), input_dtype=torch.float64), id="input_dtype"),
    pytest.param(_cell_args((2, INPUT), (2, HIDDEN), hidden_dtype=torch.float64),
                 id="hidden_dtype"),
]
LSTM_CELL_FORWARD_ERRORS = [
    pytest.param(lambda name: (torch.randn(2, INPUT), (torch.zeros(2, HIDDEN),) * 3),
                 id="three_states"),
    pytest.param(lambda name: (torch.randn(2, INPUT), (torch.zeros(2, HIDDEN),)), id="one_state"),
    pytest.param(lambda name: (torch.randn(INPUT), (torch.zeros(HIDDEN),)),
                 id="unbatched_one_state"),
    pytest.param(lambda name: (torch.randn(2, INPUT), torch.zeros(2, HIDDEN)), id="bare_tensor"),
    pytest.param(_cell_args((2, INPUT), (2, HIDDEN), (2, HIDDEN + 1)), id="c_hidden_size"),
    pytest.param(_cell_args((2, INPUT), (2, HIDDEN), (3, HIDDEN)), id="c_batch"),
    pytest.param(_cell_args((2, INPUT), (2, HIDDEN), (1, 2, HIDDEN)), id="c_3d"),
]


@pytest.mark.parametrize("name", CELL_NAMES)
@pytest.mark.parametrize("make_args", CELL_FORWARD_ERRORS)
def test_cell_forward_error_matches_torch_nn(name, make_args, make_pair):
    reference, ours = make_pair(name, INPUT, HIDDEN)
    input, hx = make_args(name)
    _assert_same_error(lambda: reference(input, hx), lambda: ours(input, hx))


@pytest.mark.parametrize("make_args", LSTM_CELL_FORWARD_ERRORS)
def test_lstm_cell_state_error_matches_torch_nn(make_args, make_pair):
    reference, ours = make_pair("LSTMCell", INPUT, HIDDEN)
    input, hx = make_args("LSTMCell")
    _assert_same_error(lambda: reference(input, hx), lambda: ours(input, hx))


def test_rnn_cell_unknown_nonlinearity_in_forward_matches_torch_nn(make_pair):
    """torch.nn.RNNCell accepts any nonlinearity at construction and fails in forward."""
    reference, ours = make_pair("RNNCell", INPUT, HIDDEN, nonlinearity="gelu")
    input = torch.randn(2, INPUT)
    _assert_same_error(lambda: reference(input), lambda: ours(input))


# ---------------------------------------------------------------------------------------------
# A failed call changes nothing


@pytest.mark.parametrize(
    "name, make_args",
    [pytest.param("LSTM", _with_state((2, 2, INPUT), (1, 2, HIDDEN), (1, 2, HIDDEN + 1)),
                  id="lstm-c0_hidden_size"),
     pytest.param("LSTM", _packed(INPUT + 1), id="lstm-packed_feature_size"),
     pytest.param("GRU", _padded(2, 2, INPUT + 1), id="gru-input_feature_size"),
     pytest.param("RNN", _with_state((2, 2, INPUT), (1, 3, HIDDEN)), id="rnn-hx_batch"),
     pytest.param("LSTMCell", _cell_args((2, INPUT), (2, HIDDEN), (3, HIDDEN)),
                  id="lstmcell-c_batch"),
     pytest.param("GRUCell", _cell_args((2, INPUT + 1)), id="grucell-input_size")],
)
def test_failed_call_changes_nothing(name, make_args, make_pair, assert_close):
    """The checks run before any computation: the parameters, their gradients and the inputs'
    gradients are untouched, and the module still works afterwards."""
    reference, ours = make_pair(name, INPUT, HIDDEN)
    before = {n: p.detach().clone() for n, p in ours.named_parameters()}
    input, hx = make_args(name)
    data = input.data if hasattr(input, "batch_sizes") else input
    data.requires_grad_()
    with pytest.raises((RuntimeError, ValueError)):
        ours(input, hx)
    for n, p in ours.named_parameters():
        assert torch.equal(p, before[n]) and p.grad is None, n
    assert data.grad is None
    good = torch.randn(3, INPUT) if name.endswith("Cell") else torch.randn(2, 3, INPUT)
    assert_close(ours(good), reference(good))
