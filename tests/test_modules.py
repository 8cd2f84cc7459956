"""rnnkernels.LSTM/GRU/RNN and their cells against torch.nn: the same state_dict must give the
same outputs, final states and gradients (of the input, the initial states and every parameter),
and every torch.nn feature must behave as in torch.nn."""

import copy
import dataclasses
import math
import pickle
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import rnnkernels

# kind -> (class name, extra constructor arguments)
LAYERS = {
    "lstm": ("LSTM", {}),
    "gru": ("GRU", {}),
    "rnn_tanh": ("RNN", {"nonlinearity": "tanh"}),
    "rnn_relu": ("RNN", {"nonlinearity": "relu"}),
}
CELLS = {
    "lstm": ("LSTMCell", {}),
    "gru": ("GRUCell", {}),
    "rnn_tanh": ("RNNCell", {"nonlinearity": "tanh"}),
    "rnn_relu": ("RNNCell", {"nonlinearity": "relu"}),
}
KINDS = [pytest.param(kind, id=kind) for kind in LAYERS]
DTYPE_NAMES = {torch.float32: "f32", torch.float64: "f64"}


def _loss_weights(tensors):
    """One random weight tensor per output, so that every element of every output contributes
    to the loss with a different coefficient (a plain .sum() would hide permuted or mixed-up
    elements)."""
    return [torch.randn_like(t) for t in tensors]


def _weighted_grads(tensors, weights, inputs):
    """d(sum_k <tensors[k], weights[k]>)/d(inputs) as a dict (inputs: name -> tensor). Inputs
    the outputs do not depend on get zeros, as torch.nn's and ours may differ in None-ness."""
    loss = sum((t * w).sum() for t, w in zip(tensors, weights))
    grads = torch.autograd.grad(loss, list(inputs.values()), allow_unused=True,
                                materialize_grads=True)
    return dict(zip(inputs, grads))


def _cell_flat(result):
    """The output tensors of a cell: h[, c]."""
    return list(result) if isinstance(result, tuple) else [result]


def _flat(output, hidden):
    """The output tensors of a layer: output (its .data when packed), h_n[, c_n]."""
    data = output.data if isinstance(output, PackedSequence) else output
    return [data, *(hidden if isinstance(hidden, tuple) else (hidden,))]


# ---------------------------------------------------------------------------------------------
# Layer parity: a covering set of configurations (not the cartesian product): every kind meets
# every input form and both dtypes; across the cases every kind also sees 1-3 layers, both
# directions, batch_first, bias on and off, given and default initial states, and awkward sizes
# (1 and primes); LSTM adds projections.


@dataclasses.dataclass(frozen=True)
class Case:
    kind: str
    form: str = "padded"  # padded | unbatched | packed_sorted | packed_unsorted
    num_layers: int = 1
    bidirectional: bool = False
    batch_first: bool = False
    bias: bool = True
    proj_size: int = 0
    dropout: float = 0.0  # > 0 runs both modules in eval mode, where dropout is off
    input_size: int = 5
    hidden_size: int = 7
    batch: int = 3
    seq: int = 11
    dtype: torch.dtype = torch.float64
    initial_state: bool = True  # False: hx=None, torch.nn's default zero states

    @property
    def id(self):
        parts = [self.kind, self.form, f"L{self.num_layers}"]
        parts += ["bidir"] * self.bidirectional + ["batch_first"] * self.batch_first
        parts += ["nobias"] * (not self.bias)
        parts += [f"proj{self.proj_size}"] * bool(self.proj_size)
        parts += [f"dropout{self.dropout}-eval"] * bool(self.dropout)
        sizes = f"I{self.input_size}-H{self.hidden_size}"
        if self.form != "unbatched":
            sizes += f"-B{self.batch}"
        parts += [f"{sizes}-T{self.seq}", DTYPE_NAMES[self.dtype]]
        parts += ["hx_none"] * (not self.initial_state)
        return "-".join(parts)

    @property
    def packed(self):
        return self.form.startswith("packed")

    def lengths(self):
        """Sequence lengths of a packed batch: the longest is ``seq``, the others spread down
        to 1; for ``packed_unsorted`` in an order that is neither sorted nor reversed."""
        lengths = [max(1, self.seq - (i * self.seq) // self.batch) for i in range(self.batch)]
        if self.form == "packed_unsorted":
            lengths = lengths[1::2] + lengths[0::2]
        return lengths


f32, f64 = torch.float32, torch.float64
PRIME = dict(input_size=13, hidden_size=17)
TINY = dict(input_size=1, hidden_size=1, batch=1, seq=1)
LAYER_CASES = [
    # LSTM
    Case("lstm"),
    Case("lstm", num_layers=2, bidirectional=True, batch=1, seq=2, dtype=f32, **PRIME),
    Case("lstm", num_layers=3, batch_first=True, bias=False, initial_state=False, **TINY),
    Case("lstm", num_layers=2, bidirectional=True, batch_first=True, proj_size=3),
    Case("lstm", proj_size=1, seq=2, dtype=f32, initial_state=False),
    Case("lstm", "unbatched", num_layers=2, bidirectional=True),
    Case("lstm", "unbatched", batch_first=True, proj_size=5, dtype=f32, initial_state=False,
         **PRIME),
    Case("lstm", "packed_sorted", num_layers=2, bidirectional=True, proj_size=3),
    Case("lstm", "packed_sorted", bias=False, batch=1, seq=2, dtype=f32, initial_state=False),
    Case("lstm", "packed_unsorted", num_layers=2, bidirectional=True, batch=5),
    Case("lstm", "packed_unsorted", num_layers=3, batch_first=True, proj_size=2, dtype=f32),
    Case("lstm", num_layers=2, dropout=0.5),
    # GRU
    Case("gru"),
    Case("gru", num_layers=3, bidirectional=True, bias=False, seq=2, dtype=f32,
         initial_state=False, **PRIME),
    Case("gru", num_layers=2, batch_first=True, **TINY),
    Case("gru", "unbatched", dtype=f32, initial_state=False),
    Case("gru", "unbatched", num_layers=2, bidirectional=True, batch_first=True, input_size=13,
         hidden_size=1, seq=2),
    Case("gru", "packed_sorted", num_layers=2, bidirectional=True),
    Case("gru", "packed_unsorted", batch=5, dtype=f32),
    Case("gru", "packed_unsorted", num_layers=2, bias=False, batch_first=True, seq=2,
         initial_state=False),
    Case("gru", "packed_unsorted", num_layers=3, dropout=0.3, dtype=f32),
    # RNN, tanh
    Case("rnn_tanh", dtype=f32),
    Case("rnn_tanh", num_layers=2, bidirectional=True, batch_first=True, batch=1, seq=2,
         initial_state=False, **PRIME),
    Case("rnn_tanh", "unbatched", num_layers=3, bias=False, input_size=1),
    Case("rnn_tanh", "unbatched", num_layers=2, dropout=0.5, dtype=f32),
    Case("rnn_tanh", "packed_sorted", bidirectional=True, dtype=f32, initial_state=False),
    Case("rnn_tanh", "packed_unsorted", num_layers=2, batch=5),
    # RNN, relu
    Case("rnn_relu", num_layers=3, bidirectional=True),
    Case("rnn_relu", bias=False, dtype=f32, initial_state=False, **TINY),
    Case("rnn_relu", "unbatched", num_layers=2, batch_first=True, seq=2, dtype=f32, **PRIME),
    Case("rnn_relu", "packed_sorted", num_layers=2, bias=False, seq=2),
    Case("rnn_relu", "packed_unsorted", bidirectional=True, batch_first=True, batch=5,
         dtype=f32),
]
assert len({case.id for case in LAYER_CASES}) == len(LAYER_CASES), "duplicate case ids"


def _build(case, make_pair):
    name, extra = LAYERS[case.kind]
    kwargs = dict(num_layers=case.num_layers, bias=case.bias, batch_first=case.batch_first,
                  dropout=case.dropout, bidirectional=case.bidirectional, dtype=case.dtype,
                  **extra)
    if case.proj_size:
        kwargs["proj_size"] = case.proj_size
    reference, ours = make_pair(name, case.input_size, case.hidden_size, **kwargs)
    if case.dropout:
        reference.eval()
        ours.eval()
    return reference, ours


def _inputs(case):
    """(input leaf, {state name: initial state leaf}): the padded input (packed later, so that
    its gradient covers the packing) and h0[, c0], in the caller's batch order."""
    layer_major = (case.num_layers * (2 if case.bidirectional else 1),)
    if case.form == "unbatched":
        shape, state_shape = (case.seq, case.input_size), layer_major
    else:
        time_batch = (case.batch, case.seq) if case.batch_first else (case.seq, case.batch)
        shape, state_shape = (*time_batch, case.input_size), (*layer_major, case.batch)
    options = dict(dtype=case.dtype, requires_grad=True)
    states = {"h0": torch.randn(*state_shape, case.proj_size or case.hidden_size, **options)}
    if case.kind == "lstm":
        states["c0"] = torch.randn(*state_shape, case.hidden_size, **options)
    return torch.randn(shape, **options), states


def _call(module, case, x, states):
    if case.packed:
        x = pack_padded_sequence(x, case.lengths(), batch_first=case.batch_first,
                                 enforce_sorted=case.form == "packed_sorted")
    hx = None
    if case.initial_state:
        hx = tuple(states.values()) if case.kind == "lstm" else states["h0"]
    return module(x, hx)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in LAYER_CASES])
def test_layer_matches_torch_nn(case, make_pair, assert_close):
    reference, ours = _build(case, make_pair)
    x, states = _inputs(case)
    expected = _call(reference, case, x, states)
    actual = _call(ours, case, x, states)
    assert_close(actual, expected)

    leaves = {"input": x, **(states if case.initial_state else {})}
    weights = _loss_weights(_flat(*expected))
    expected_grads = _weighted_grads(_flat(*expected), weights,
                                     {**leaves, **dict(reference.named_parameters())})
    actual_grads = _weighted_grads(_flat(*actual), weights,
                                   {**leaves, **dict(ours.named_parameters())})
    assert_close(actual_grads, expected_grads)


# ---------------------------------------------------------------------------------------------
# The lean path (csrc/python_forward.cpp): a plain call runs in one call into C++, and any other
# gets None from it and runs the modules' Python path.


def _lean(module, x, hx=None):
    return rnnkernels._C._forward(module, module._lean_cell(), x, hx)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in LAYER_CASES
                                  if not c.packed])
def test_lean_path_gives_the_python_paths_results(case, make_pair, monkeypatch):
    """Every padded and unbatched case of the parity test takes the lean path, with results and
    gradients bit for bit those of the Python path."""
    _, ours = _build(case, make_pair)
    x, states = _inputs(case)
    hx = None
    if case.initial_state:
        hx = tuple(states.values()) if case.kind == "lstm" else states["h0"]
    assert _lean(ours, x, hx) is not None
    lean = ours(x, hx)
    with monkeypatch.context() as patch:
        patch.setattr(ours, "_lean_cell", lambda: None)
        python = ours(x, hx)
    leaves = {"input": x, **(states if case.initial_state else {}),
              **dict(ours.named_parameters())}
    weights = _loss_weights(_flat(*python))
    for got, want in zip(_flat(*lean), _flat(*python)):
        assert got.shape == want.shape and torch.equal(got, want)
    lean_grads = _weighted_grads(_flat(*lean), weights, leaves)
    python_grads = _weighted_grads(_flat(*python), weights, leaves)
    for name in leaves:
        assert torch.equal(lean_grads[name], python_grads[name]), name


@pytest.mark.parametrize("kind", ["rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("batched, hx", [(True, None), (True, "f32"), (False, "f32"),
                                         (True, "f64")])
def test_lean_path_under_autocast_gives_the_python_paths_results(kind, batched, hx, make_pair,
                                                                 monkeypatch):
    """The RNN takes the lean path under autocast too: its casts, results (dtypes included)
    and gradients into the float32 leaves are the Python path's, bit for bit. A float64 module
    and input, which autocast leaves alone, stay float64."""
    name, extra = LAYERS[kind]
    dtype = torch.float64 if hx == "f64" else torch.float32
    _, ours = make_pair(name, 5, 7, num_layers=2, dtype=dtype, **extra)
    x = torch.randn(4, 3, 5, dtype=dtype) if batched else torch.randn(4, 5, dtype=dtype)
    h0 = None if hx is None else torch.randn((2, 3, 7) if batched else (2, 7), dtype=dtype)
    leaves = {"input": x.requires_grad_(), **dict(ours.named_parameters())}
    if h0 is not None:
        leaves["h0"] = h0.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _lean(ours, x, h0) is not None
        lean = ours(x, h0)
        with monkeypatch.context() as patch:
            patch.setattr(ours, "_lean_cell", lambda: None)
            python = ours(x, h0)
    assert [t.dtype for t in lean] == [t.dtype for t in python]
    assert lean[0].dtype == (torch.float64 if hx == "f64" else torch.bfloat16)
    for got, want in zip(lean, python):
        assert got.shape == want.shape and torch.equal(got, want)
    weights = _loss_weights(python)
    lean_grads = _weighted_grads(lean, weights, leaves)
    python_grads = _weighted_grads(python, weights, leaves)
    for leaf, grad in lean_grads.items():
        assert grad.dtype == dtype and torch.equal(grad, python_grads[leaf]), leaf


class _Subclass(torch.Tensor):
    pass


class _PassThrough(torch.overrides.TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kind", KINDS)
def test_lean_path_leaves_other_calls_to_the_python_path(kind, make_pair):
    """The lean path declines, for the Python path to run or reject as torch.nn does: packed
    input, tensor subclasses, wrong dimensions, sizes, dtypes or state shapes, an empty batch,
    autocast (but for the RNN's), a torch function mode, a JIT trace, and a weight swapped in
    since _flat_weights was listed (as torch.func.functional_call does)."""
    name, extra = LAYERS[kind]
    _, module = make_pair(name, 5, 7, **extra)
    x = torch.randn(4, 3, 5)
    states = (torch.zeros(1, 3, 7), torch.zeros(1, 3, 7)) if kind == "lstm" else torch.zeros(1, 3, 7)
    assert _lean(module, x) is not None and _lean(module, x, states) is not None
    wrong_state = torch.zeros(1, 2, 7)
    declined = [
        (pack_padded_sequence(x, [4, 3, 2]), None),
        (x.as_subclass(_Subclass), None),
        (x[0, 0], None),
        (x.unsqueeze(0), None),
        (torch.randn(4, 3, 6), None),
        (x.double(), None),
        (torch.randn(4, 0, 5), None),
        (x, (wrong_state, wrong_state) if kind == "lstm" else wrong_state),
        (x, (states[0].double(), states[1]) if kind == "lstm" else states.double()),
    ]
    if kind == "lstm":
        declined.append((x, list(states)))
    for args in declined:
        assert _lean(module, *args) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (_lean(module, x) is None) == (kind in ("lstm", "gru"))
    with _PassThrough():
        assert _lean(module, x) is None
    traced = []
    torch.jit.trace(lambda t: traced.append(_lean(module, t)) or t, x, check_trace=False)
    assert traced == [None]
    module._parameters["weight_hh_l0"] = nn.Parameter(module.weight_hh_l0.detach().clone())
    assert _lean(module, x) is None


def test_lean_path_is_off_with_the_options():
    """LSTM's and GRU's options run their own cells, outside the lean path; weight drop only in
    training, where it drops."""
    assert rnnkernels.LSTM(3, 4, peephole=True)._lean_cell() is None
    assert rnnkernels.GRU(3, 4, zoneout=0.1)._lean_cell() is None
    layer = rnnkernels.LSTM(3, 4, weight_drop=0.5)
    assert layer._lean_cell() is None
    assert layer.eval()._lean_cell() == "lstm"
    assert rnnkernels.IndRNN(3, 4)._lean_cell() is None


# ---------------------------------------------------------------------------------------------
# Cells


@pytest.mark.parametrize(
    "kind, batched, initial_state, bias, sizes, dtype",
    [
        pytest.param(kind, batched, initial_state, bias, sizes, dtype,
                     id=f"{kind}-{'batched' if batched else 'unbatched'}-"
                        f"{'hx' if initial_state else 'hx_none'}-{'bias' if bias else 'nobias'}"
                        f"-I{sizes[0]}-H{sizes[1]}-B{sizes[2]}-{DTYPE_NAMES[dtype]}")
        for kind in CELLS
        for batched, initial_state, bias, sizes, dtype in [
            (True, True, True, (5, 7, 3), f64),
            (True, False, False, (13, 17, 1), f32),
            (False, True, True, (1, 1, 1), f32),
            (False, False, False, (13, 7, 1), f64),
        ]
    ],
)
def test_cell_matches_torch_nn(kind, batched, initial_state, bias, sizes, dtype, make_pair,
                               assert_close):
    name, extra = CELLS[kind]
    input_size, hidden_size, batch = sizes
    reference, ours = make_pair(name, input_size, hidden_size, bias=bias, dtype=dtype, **extra)
    lead = (batch,) if batched else ()
    x = torch.randn(*lead, input_size, dtype=dtype, requires_grad=True)
    states = {"h0": torch.randn(*lead, hidden_size, dtype=dtype, requires_grad=True)}
    if kind == "lstm":
        states["c0"] = torch.randn(*lead, hidden_size, dtype=dtype, requires_grad=True)
    hx = None
    if initial_state:
        hx = tuple(states.values()) if kind == "lstm" else states["h0"]

    expected, actual = _cell_flat(reference(x, hx)), _cell_flat(ours(x, hx))
    assert_close(actual, expected)
    weights = _loss_weights(expected)
    leaves = {"input": x, **(states if initial_state else {})}
    assert_close(
        _weighted_grads(actual, weights, {**leaves, **dict(ours.named_parameters())}),
        _weighted_grads(expected, weights, {**leaves, **dict(reference.named_parameters())}),
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("initial_state", [False, True], ids=["hx_none", "hx"])
def test_cell_empty_batch_matches_torch_nn(kind, initial_state, make_pair, assert_close):
    """A batch of 0 rows: empty states of torch.nn's shapes, attached to the graph as torch.nn's
    are, and a backward that works."""
    name, extra = CELLS[kind]
    reference, ours = make_pair(name, 5, 7, **extra)
    x = torch.randn(0, 5, requires_grad=True)
    states = {"h0": torch.randn(0, 7, requires_grad=True)}
    if kind == "lstm":
        states["c0"] = torch.randn(0, 7, requires_grad=True)
    hx = None
    if initial_state:
        hx = tuple(states.values()) if kind == "lstm" else states["h0"]
    expected, actual = _cell_flat(reference(x, hx)), _cell_flat(ours(x, hx))
    assert_close(actual, expected)
    assert [t.requires_grad for t in actual] == [t.requires_grad for t in expected]
    leaves = {"input": x, **(states if initial_state else {})}
    weights = _loss_weights(expected)
    assert_close(
        _weighted_grads(actual, weights, {**leaves, **dict(ours.named_parameters())}),
        _weighted_grads(expected, weights, {**leaves, **dict(reference.named_parameters())}),
    )


@pytest.mark.parametrize("kind", KINDS)
def test_cell_unrolled_over_steps_matches_torch_nn(kind, make_pair, assert_close):
    """Gradients flowing through a chain of cell calls (a hand-written recurrence), including
    the state handed from one call to the next."""
    name, extra = CELLS[kind]
    reference, ours = make_pair(name, 5, 7, dtype=f64, **extra)
    xs = torch.randn(4, 3, 5, dtype=f64, requires_grad=True)

    def unroll(cell):
        hx, outputs = None, []
        for x in xs:
            hx = cell(x, hx)
            outputs.append(hx[0] if kind == "lstm" else hx)
        return [torch.stack(outputs), *(hx if kind == "lstm" else (hx,))]

    expected, actual = unroll(reference), unroll(ours)
    assert_close(actual, expected)
    weights = _loss_weights(expected)
    assert_close(
        _weighted_grads(actual, weights, {"input": xs, **dict(ours.named_parameters())}),
        _weighted_grads(expected, weights, {"input": xs, **dict(reference.named_parameters())}),
    )


# ---------------------------------------------------------------------------------------------
# Inference paths and partial gradients


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("context", [pytest.param(torch.no_grad, id="no_grad"),
                                     pytest.param(torch.inference_mode, id="inference_mode")])
def test_forward_without_grad_matches_torch_nn(kind, context, make_pair, assert_close):
    """Without autograd the operators skip saving for backward (train=False): same results."""
    name, extra = LAYERS[kind]
    proj = dict(proj_size=2) if kind == "lstm" else {}
    reference, ours = make_pair(name, 5, 7, num_layers=2, bidirectional=True, dtype=f32,
                                **proj, **extra)
    x = torch.randn(11, 3, 5)
    packed = pack_padded_sequence(torch.randn(6, 3, 5), [3, 6, 1], enforce_sorted=False)
    with context():
        for inputs in (x, packed):
            actual, expected = ours(inputs), reference(inputs)
            assert_close(actual, expected)
            assert not any(t.requires_grad for t in _flat(*actual))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", ["frozen_parameters", "parameters_only", "h0_only"])
def test_partial_requires_grad(kind, which, make_pair, assert_close):
    """Gradients when only some inputs require them (frozen model, constant input or state)."""
    name, extra = LAYERS[kind]
    reference, ours = make_pair(name, 5, 7, num_layers=2, dtype=f64, **extra)
    x = torch.randn(6, 3, 5, dtype=f64, requires_grad=which == "frozen_parameters")
    h0 = torch.randn(2, 3, 7, dtype=f64, requires_grad=which != "parameters_only")
    hx = (h0, torch.randn(2, 3, 7, dtype=f64)) if kind == "lstm" else h0
    for module in (reference, ours):
        module.requires_grad_(which == "parameters_only")
    expected, actual = reference(x, hx), ours(x, hx)

    def leaves(module):
        if which == "parameters_only":
            return dict(module.named_parameters())
        return {"input": x, "h0": h0} if which == "frozen_parameters" else {"h0": h0}

    weights = _loss_weights(_flat(*expected))
    assert_close(_weighted_grads(_flat(*actual), weights, leaves(ours)),
                 _weighted_grads(_flat(*expected), weights, leaves(reference)))


# ---------------------------------------------------------------------------------------------
# Dropout between layers


def _dropout_pair(kind, make_pair, dropout, num_layers=3):
    name, extra = LAYERS[kind]
    return make_pair(name, 5, 7, num_layers=num_layers, dropout=dropout, dtype=f64, **extra)


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_is_applied_in_training_mode_only(kind, make_pair, assert_close):
    _, ours = _dropout_pair(kind, make_pair, dropout=0.5)
    x = torch.randn(11, 3, 5, dtype=f64)
    ours.train()
    torch.manual_seed(1)
    train_output = ours(x)
    torch.manual_seed(1)
    assert_close(ours(x), train_output)  # the masks come from torch's RNG: reproducible
    ours.eval()
    eval_output = ours(x)
    for trained, evaluated in zip(_flat(*train_output), _flat(*eval_output)):
        assert trained.shape == evaluated.shape
        assert not torch.allclose(trained, evaluated)
    # The first layer's final states come before any dropout.
    assert_close(_flat(*train_output)[1][0], _flat(*eval_output)[1][0])


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_zero_trains_as_it_evaluates(kind, make_pair, assert_close):
    _, ours = _dropout_pair(kind, make_pair, dropout=0.0)
    x = torch.randn(11, 3, 5, dtype=f64)
    train_output = ours.train()(x)
    assert_close(train_output, ours.eval()(x))


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_has_no_effect_with_one_layer(kind, make_pair, assert_close):
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        reference, ours = _dropout_pair(kind, make_pair, dropout=0.5, num_layers=1)
    x = torch.randn(11, 3, 5, dtype=f64)
    assert_close(ours.train()(x), ours.eval()(x))
    assert_close(ours.train()(x), reference.train()(x))


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_one_in_training_matches_torch_nn(kind, make_pair, assert_close):
    """dropout=1 zeroes every layer's output but the last: deterministic, so the training-mode
    path (forward and gradients, through the dropped layers too) can be compared exactly."""
    reference, ours = _dropout_pair(kind, make_pair, dropout=1.0, num_layers=2)
    x = torch.randn(5, 3, 5, dtype=f64, requires_grad=True)
    expected, actual = reference.train()(x), ours.train()(x)
    assert_close(actual, expected)
    weights = _loss_weights(_flat(*expected))
    assert_close(
        _weighted_grads(_flat(*actual), weights, {"input": x, **dict(ours.named_parameters())}),
        _weighted_grads(_flat(*expected), weights,
                        {"input": x, **dict(reference.named_parameters())}),
    )


# ---------------------------------------------------------------------------------------------
# Input forms


@pytest.mark.parametrize("kind", KINDS)
def test_packed_unsorted_states_come_from_each_sequences_last_step(kind, make_pair,
                                                                    assert_close):
    """With enforce_sorted=False, hx is in the caller's order and h_n[:, j] is the state after
    sequence j's own last step: each sequence run alone gives the same numbers."""
    name, extra = LAYERS[kind]
    _, ours = make_pair(name, 3, 5, num_layers=2, bidirectional=True, dtype=f64, **extra)
    lengths = [2, 6, 1, 6, 4]
    x = torch.randn(6, len(lengths), 3, dtype=f64)
    hx = [torch.randn(4, len(lengths), 5, dtype=f64) for _ in range(2 if kind == "lstm" else 1)]
    output, hidden = ours(pack_padded_sequence(x, lengths, enforce_sorted=False),
                          tuple(hx) if kind == "lstm" else hx[0])
    padded, padded_lengths = pad_packed_sequence(output)
    assert padded_lengths.tolist() == lengths
    hidden = hidden if kind == "lstm" else (hidden,)
    for j, length in enumerate(lengths):
        alone_hx = tuple(h[:, j] for h in hx)
        alone_output, alone_hidden = ours(x[:length, j], alone_hx if kind == "lstm"
                                          else alone_hx[0])
        assert_close(padded[:length, j], alone_output)
        assert_close([h[:, j] for h in hidden], _flat(alone_output, alone_hidden)[1:])
        assert torch.all(padded[length:, j] == 0)


@pytest.mark.parametrize("kind", KINDS)
def test_default_states_are_zeros(kind, make_pair, assert_close):
    name, extra = LAYERS[kind]
    proj = dict(proj_size=3) if kind == "lstm" else {}
    _, ours = make_pair(name, 5, 7, num_layers=2, bidirectional=True, **proj, **extra)
    x = torch.randn(4, 3, 5)
    h0 = torch.zeros(4, 3, 3 if kind == "lstm" else 7)
    hx = (h0, torch.zeros(4, 3, 7)) if kind == "lstm" else h0
    assert_close(ours(x), ours(x, hx))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("initial_state", [False, True], ids=["hx_none", "hx"])
def test_empty_batch_matches_torch_nn(kind, batch_first, initial_state, make_pair,
                                      assert_close):
    """A batch of 0 sequences: torch.nn returns empty outputs and states of the usual shapes,
    attached to the graph, whose backward gives (empty or zero) gradients."""
    name, extra = LAYERS[kind]
    proj = dict(proj_size=2) if kind == "lstm" else {}
    reference, ours = make_pair(name, 5, 3, num_layers=2, bidirectional=True,
                                batch_first=batch_first, **proj, **extra)
    x = torch.randn((0, 4, 5) if batch_first else (4, 0, 5), requires_grad=True)
    states = {"h0": torch.randn(4, 0, 2 if kind == "lstm" else 3, requires_grad=True)}
    if kind == "lstm":
        states["c0"] = torch.randn(4, 0, 3, requires_grad=True)
    hx = None
    if initial_state:
        hx = tuple(states.values()) if kind == "lstm" else states["h0"]
    expected, actual = reference(x, hx), ours(x, hx)
    assert_close(actual, expected)
    assert [t.requires_grad for t in _flat(*actual)] == [t.requires_grad
                                                         for t in _flat(*expected)]
    leaves = {"input": x, **(states if initial_state else {})}
    weights = _loss_weights(_flat(*expected))
    assert_close(
        _weighted_grads(_flat(*actual), weights, {**leaves, **dict(ours.named_parameters())}),
        _weighted_grads(_flat(*expected), weights,
                        {**leaves, **dict(reference.named_parameters())}),
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
def test_non_contiguous_input_and_states_match_torch_nn(kind, batch_first, make_pair,
                                                        assert_close):
    """Strided views (every other feature of a permuted tensor) as input and initial states."""
    name, extra = LAYERS[kind]
    reference, ours = make_pair(name, 5, 7, num_layers=2, bidirectional=True,
                                batch_first=batch_first, dtype=f64, **extra)
    seq, batch = 6, 3
    input_base = torch.randn(2 * 5, batch, seq, dtype=f64, requires_grad=True)
    x = input_base[::2].permute((1, 2, 0) if batch_first else (2, 1, 0))
    state_bases = {name: torch.randn(batch, 4, 2 * 7, dtype=f64, requires_grad=True)
                   for name in (["h0", "c0"] if kind == "lstm" else ["h0"])}
    states = [base.transpose(0, 1)[..., ::2] for base in state_bases.values()]
    assert not x.is_contiguous() and not any(s.is_contiguous() for s in states)
    hx = tuple(states) if kind == "lstm" else states[0]
    expected, actual = reference(x, hx), ours(x, hx)
    assert_close(actual, expected)
    leaves = {"input": input_base, **state_bases}
    weights = _loss_weights(_flat(*expected))
    assert_close(
        _weighted_grads(_flat(*actual), weights, {**leaves, **dict(ours.named_parameters())}),
        _weighted_grads(_flat(*expected), weights,
                        {**leaves, **dict(reference.named_parameters())}),
    )


# ---------------------------------------------------------------------------------------------
# Autograd usage


@pytest.mark.parametrize("kind", KINDS)
def test_backward_twice_with_retain_graph(kind, make_pair, assert_close):
    """backward(retain_graph=True) then backward() again accumulates the same gradients twice,
    as torch.nn does."""
    name, extra = LAYERS[kind]
    reference, ours = make_pair(name, 5, 7, num_layers=2, bidirectional=True, dtype=f64,
                                **extra)
    x = torch.randn(6, 3, 5, dtype=f64)
    weights = None
    accumulated = []
    for module in (reference, ours):
        inputs = x.clone().requires_grad_()
        outputs = _flat(*module(inputs))
        weights = weights or _loss_weights(outputs)
        loss = sum((t * w).sum() for t, w in zip(outputs, weights))
        loss.backward(retain_graph=True)
        first = [inputs.grad.clone(), *(p.grad.clone() for p in module.parameters())]
        loss.backward()
        second = [inputs.grad, *(p.grad for p in module.parameters())]
        assert_close(second, [2 * g for g in first])
        accumulated.append(second)
    assert_close(accumulated[1], accumulated[0])


@pytest.mark.parametrize(
    "kind, used",
    [pytest.param("lstm", "h_n", id="lstm-h_n"), pytest.param("lstm", "c_n", id="lstm-c_n"),
     pytest.param("lstm", "output", id="lstm-output"), pytest.param("gru", "h_n", id="gru-h_n"),
     pytest.param("rnn_tanh", "h_n", id="rnn_tanh-h_n"),
     pytest.param("rnn_relu", "output", id="rnn_relu-output")],
)
def test_backward_through_one_output_only(kind, used, make_pair, assert_close):
    """A loss on h_n (or c_n, or output) alone: the other outputs get no gradient (None in the
    backward formula), and the gradients still match torch.nn's."""
    name, extra = LAYERS[kind]
    proj = dict(proj_size=3) if kind == "lstm" else {}
    reference, ours = make_pair(name, 5, 7, num_layers=2, bidirectional=True, dtype=f64,
                                **proj, **extra)
    x = torch.randn(6, 3, 5, dtype=f64, requires_grad=True)
    h0 = torch.randn(4, 3, 3 if kind == "lstm" else 7, dtype=f64, requires_grad=True)
    states = {"h0": h0}
    if kind == "lstm":
        states["c0"] = torch.randn(4, 3, 7, dtype=f64, requires_grad=True)
    hx = tuple(states.values()) if kind == "lstm" else h0
    index = {"output": 0, "h_n": 1, "c_n": 2}[used]
    expected = _flat(*reference(x, hx))[index]
    actual = _flat(*ours(x, hx))[index]
    weights = _loss_weights([expected])
    leaves = {"input": x, **states}
    assert_close(
        _weighted_grads([actual], weights, {**leaves, **dict(ours.named_parameters())}),
        _weighted_grads([expected], weights, {**leaves, **dict(reference.named_parameters())}),
    )


def _functional_forward(module, names, kind, num_states, packed_lengths=None):
    """f(input, *states, *params) -> outputs of ``module`` with ``params`` substituted."""

    def forward(x, *rest):
        states, params = rest[:num_states], rest[num_states:]
        if packed_lengths is not None:
            x = pack_padded_sequence(x, packed_lengths, enforce_sorted=False)
        hx = tuple(states) if kind == "lstm" else states[0]
        output, hidden = torch.func.functional_call(module, dict(zip(names, params)), (x, hx))
        return tuple(_flat(output, hidden))

    return forward


@pytest.mark.parametrize("kind", KINDS)
def test_functional_call_with_substituted_parameters(kind, make_pair, assert_close):
    """torch.func.functional_call runs on the substituted tensors (here non-contiguous views),
    and gradients flow to them, not to the module's own parameters."""
    name, extra = LAYERS[kind]
    proj = dict(proj_size=3) if kind == "lstm" else {}
    reference, ours = make_pair(name, 5, 7, num_layers=2, bidirectional=True, dtype=f64,
                                **proj, **extra)
    names = [n for n, _ in ours.named_parameters()]
    # Stored transposed (or strided), so that the substitutes are not contiguous.
    leaves = {n: torch.randn(p.shape[::-1] if p.dim() == 2 else (2 * p.numel(),), dtype=f64,
                             requires_grad=True) for n, p in ours.named_parameters()}
    substitutes = [leaf.t() if leaf.dim() == 2 else leaf[::2] for leaf in leaves.values()]
    x = torch.randn(6, 3, 5, dtype=f64)
    hx = [torch.randn(4, 3, 3 if kind == "lstm" else 7, dtype=f64)]
    if kind == "lstm":
        hx.append(torch.randn(4, 3, 7, dtype=f64))
    expected = _functional_forward(reference, names, kind, len(hx))(x, *hx, *substitutes)
    actual = _functional_forward(ours, names, kind, len(hx))(x, *hx, *substitutes)
    assert_close(actual, expected)
    own = _flat(*ours(x, tuple(hx) if kind == "lstm" else hx[0]))
    assert not torch.allclose(own[0], actual[0]), "the substituted parameters were not used"
    weights = _loss_weights(expected)
    assert_close(_weighted_grads(actual, weights, leaves),
                 _weighted_grads(expected, weights, leaves))
    assert all(p.grad is None for p in ours.parameters())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("api", ["parametrizations", "hook"])
def test_weight_norm_matches_torch_nn(kind, api, make_pair, assert_close):
    """weight_norm on two weights: the forward must use the recomputed weights (also after the
    magnitude changes) and the gradients reach the magnitude and direction parameters."""
    name, extra = LAYERS[kind]
    reference, ours = make_pair(name, 5, 7, num_layers=2, dtype=f64, **extra)
    for module in (reference, ours):
        for weight in ("weight_hh_l0", "weight_ih_l1"):
            if api == "parametrizations":
                torch.nn.utils.parametrizations.weight_norm(module, weight)
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)  # deprecated API
                    torch.nn.utils.weight_norm(module, weight)
    magnitude = ("parametrizations.weight_hh_l0.original0" if api == "parametrizations"
                 else "weight_hh_l0_g")
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in reference.named_parameters()]
    x = torch.randn(6, 3, 5, dtype=f64, requires_grad=True)
    before = ours(x)[0].detach()
    with torch.no_grad():
        for module in (reference, ours):
            module.get_parameter(magnitude).mul_(1.5)
    expected, actual = reference(x), ours(x)
    assert_close(actual, expected)
    assert not torch.allclose(actual[0], before), "the new weight magnitude was not used"
    weights = _loss_weights(_flat(*expected))
    assert_close(
        _weighted_grads(_flat(*actual), weights, {"input": x, **dict(ours.named_parameters())}),
        _weighted_grads(_flat(*expected), weights,
                        {"input": x, **dict(reference.named_parameters())}),
    )


@pytest.mark.parametrize(
    "kind, form",
    [pytest.param("lstm", "padded", id="lstm-proj-bidir-padded"),
     pytest.param("lstm", "packed", id="lstm-proj-bidir-packed_unsorted"),
     pytest.param("gru", "padded", id="gru-bidir-padded"),
     pytest.param("gru", "packed", id="gru-bidir-packed_unsorted"),
     pytest.param("rnn_tanh", "padded", id="rnn_tanh-bidir-padded"),
     pytest.param("rnn_relu", "packed", id="rnn_relu-bidir-packed_unsorted")],
)
def test_gradcheck_and_gradgradcheck(kind, form, make_pair):
    """First and second derivatives of the whole module (2 layers, both directions) with
    respect to the input, the initial states and every parameter, by finite differences. Fast
    mode compares random projections of the Jacobians (v^T J u) instead of every entry: any
    wrong entry still shows, at a tenth of the time."""
    name, extra = LAYERS[kind]
    proj = dict(proj_size=1) if kind == "lstm" else {}
    _, ours = make_pair(name, 2, 2, num_layers=2, bidirectional=True, dtype=f64, **proj,
                        **extra)
    names = [n for n, _ in ours.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in ours.parameters()]
    x = torch.randn(3, 2, 2, dtype=f64, requires_grad=True)
    states = [torch.randn(4, 2, 1 if kind == "lstm" else 2, dtype=f64, requires_grad=True)]
    if kind == "lstm":
        states.append(torch.randn(4, 2, 2, dtype=f64, requires_grad=True))
    lengths = [2, 3] if form == "packed" else None
    forward = _functional_forward(ours, names, kind, len(states), lengths)
    inputs = (x, *states, *params)
    assert torch.autograd.gradcheck(forward, inputs, fast_mode=True)
    assert torch.autograd.gradgradcheck(forward, inputs, fast_mode=True)


# ---------------------------------------------------------------------------------------------
# Module structure: parameters, state_dict, repr, flat weights, initialisation, copies


STRUCTURE_CONFIGS = [
    pytest.param("LSTM", (5, 7), {}, id="LSTM-default"),
    pytest.param("LSTM", (5, 7), dict(num_layers=2, bidirectional=True, proj_size=3,
                                      bias=False, batch_first=True, dropout=0.25),
                 id="LSTM-L2-bidir-proj3-nobias-batch_first-dropout"),
    pytest.param("GRU", (13, 17), dict(num_layers=3, bidirectional=True), id="GRU-L3-bidir"),
    pytest.param("GRU", (1, 1), dict(bias=False, dtype=f64), id="GRU-nobias-f64"),
    pytest.param("RNN", (5, 7), dict(num_layers=2, nonlinearity="relu", bidirectional=True),
                 id="RNN-relu-L2-bidir"),
    pytest.param("RNN", (5, 7, 2, "relu", False), {}, id="RNN-positional-relu-nobias"),
    pytest.param("LSTMCell", (5, 7), {}, id="LSTMCell"),
    pytest.param("GRUCell", (5, 7), dict(bias=False), id="GRUCell-nobias"),
    pytest.param("RNNCell", (5, 7), dict(nonlinearity="relu"), id="RNNCell-relu"),
]


@pytest.mark.parametrize("name, args, kwargs", STRUCTURE_CONFIGS)
def test_parameters_and_state_dict_match_torch_nn(name, args, kwargs, make_pair):
    reference, ours = make_pair(name, *args, **kwargs)

    def described(items):
        return [(n, t.shape, t.dtype, type(t)) for n, t in items]

    assert described(ours.named_parameters()) == described(reference.named_parameters())
    assert described(ours.state_dict().items()) == described(reference.state_dict().items())
    assert list(ours.named_buffers()) == list(reference.named_buffers())
    for attribute in ("input_size", "hidden_size", "bias", "num_layers", "batch_first",
                      "dropout", "bidirectional", "proj_size", "mode", "nonlinearity"):
        assert getattr(ours, attribute, None) == getattr(reference, attribute, None), attribute
    # Each loads the other's state_dict strictly.
    getattr(nn, name)(*args, **kwargs).load_state_dict(ours.state_dict())
    getattr(rnnkernels, name)(*args, **kwargs).load_state_dict(reference.state_dict())


@pytest.mark.parametrize("name, args, kwargs", STRUCTURE_CONFIGS)
def test_repr_matches_torch_nn(name, args, kwargs, make_pair):
    reference, ours = make_pair(name, *args, **kwargs)
    assert repr(ours) == repr(reference)
    assert type(ours).__name__ == type(reference).__name__


@pytest.mark.parametrize("name, args, kwargs", STRUCTURE_CONFIGS)
def test_default_initialisation_matches_torch_nn(name, args, kwargs):
    """Same seed, same parameters: torch.nn's uniform(-1/sqrt(H), 1/sqrt(H)) init, drawn in the
    same order; and reset_parameters draws as torch.nn's does."""
    torch.manual_seed(123)
    reference = getattr(nn, name)(*args, **kwargs)
    torch.manual_seed(123)
    ours = getattr(rnnkernels, name)(*args, **kwargs)
    for (n, expected), (_, actual) in zip(reference.named_parameters(), ours.named_parameters()):
        assert torch.equal(actual, expected), n
    bound = 1 / math.sqrt(ours.hidden_size)
    largest = max(p.abs().max().item() for p in ours.parameters())
    assert largest <= bound
    if sum(p.numel() for p in ours.parameters()) >= 200:
        assert largest > 0.9 * bound  # spread over the whole interval, not a narrower one
    torch.manual_seed(7)
    reference.reset_parameters()
    torch.manual_seed(7)
    ours.reset_parameters()
    for expected, actual in zip(reference.parameters(), ours.parameters()):
        assert torch.equal(actual, expected)


@pytest.mark.parametrize("name, args, kwargs", STRUCTURE_CONFIGS[:6])
def test_all_weights_and_flat_weights_match_torch_nn(name, args, kwargs, make_pair):
    reference, ours = make_pair(name, *args, **kwargs)
    assert ([[w.shape for w in layer] for layer in ours.all_weights]
            == [[w.shape for w in layer] for layer in reference.all_weights])
    assert ours._flat_weights_names == reference._flat_weights_names
    for layer_names, layer in zip(ours._all_weights, ours.all_weights):
        assert all(w is getattr(ours, n) for n, w in zip(layer_names, layer))
    assert all(w is getattr(ours, n) for n, w in zip(ours._flat_weights_names,
                                                     ours._flat_weights))


@pytest.mark.parametrize("kind", KINDS)
def test_replaced_parameter_and_dtype_change_reach_the_forward(kind, make_pair, assert_close):
    """Assigning a new Parameter, .double() and flatten_parameters() keep _flat_weights in sync
    with the registered parameters, as in torch.nn."""
    name, extra = LAYERS[kind]
    reference, ours = make_pair(name, 5, 7, num_layers=2, **extra)
    replacement = torch.randn_like(ours.weight_hh_l1)
    for module in (reference, ours):
        module.weight_hh_l1 = nn.Parameter(replacement.clone())
        module.double()
        module.flatten_parameters()
    assert ours._flat_weights[ours._flat_weights_names.index("weight_hh_l1")] is ours.weight_hh_l1
    assert all(w.dtype == f64 for w in ours._flat_weights)
    x = torch.randn(6, 3, 5, dtype=f64)
    assert_close(ours(x), reference(x))


def _mutated(module):
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.mul_(-0.5)
    return module


@pytest.mark.parametrize("name, args, kwargs", STRUCTURE_CONFIGS)
@pytest.mark.parametrize("method", ["deepcopy", "pickle"])
def test_copy_round_trip(name, args, kwargs, method, make_pair, assert_close):
    """A deep copy or pickle round trip is an independent module of our class, with the same
    repr and parameters; changing its parameters changes its output (its flat weights are its
    own) and leaves the original alone."""
    reference, ours = make_pair(name, *args, **kwargs)
    reference.eval()
    ours.eval()  # no dropout masks: comparable outputs
    clone = copy.deepcopy if method == "deepcopy" else lambda m: pickle.loads(pickle.dumps(m))
    copied = clone(ours)
    assert type(copied) is type(ours) and repr(copied) == repr(ours)
    assert not copied.training
    for (n, p), (m, q) in zip(ours.named_parameters(), copied.named_parameters()):
        assert n == m and torch.equal(p, q) and p is not q
    dtype = kwargs.get("dtype", f32)
    cell = name.endswith("Cell")
    x = torch.randn((3, args[0]) if cell else (4, 3, args[0]), dtype=dtype)
    if not cell and kwargs.get("batch_first"):
        x = x.transpose(0, 1)
    original_output = ours(x)
    assert_close(copied(x), original_output)
    assert_close(_mutated(copied)(x), _mutated(clone(reference))(x))
    assert_close(ours(x), original_output)


# ---------------------------------------------------------------------------------------------
# torch.compile


@pytest.mark.parametrize(
    "kind, backend",
    [pytest.param("lstm", "inductor", id="lstm-inductor"),
     pytest.param("gru", "aot_eager", id="gru-aot_eager"),
     pytest.param("rnn_relu", "aot_eager", id="rnn_relu-aot_eager")],
)
def test_torch_compile_fullgraph(kind, backend, make_pair, assert_close):
    """With torch._dynamo.config.allow_rnn set (Dynamo refuses instances of torch.nn's RNN
    classes without it, and ours are such instances), torch.compile(fullgraph=True) traces the
    module (no graph break: through the fake and autograd registrations of the operators) and
    gives the eager forward and gradients. The inductor backend is slow to compile on 2 cores, so
    only the LSTM goes through it."""
    name, extra = LAYERS[kind]
    proj = dict(proj_size=3) if kind == "lstm" else {}
    _, ours = make_pair(name, 5, 7, num_layers=2, bidirectional=True, batch_first=True,
                        **proj, **extra)
    torch._dynamo.reset()
    x = torch.randn(3, 6, 5, requires_grad=True)
    with torch._dynamo.config.patch(allow_rnn=True):
        compiled = torch.compile(ours, fullgraph=True, backend=backend)
        expected, actual = ours(x), compiled(x)
    assert_close(actual, expected)
    weights = _loss_weights(_flat(*expected))
    leaves = {"input": x, **dict(ours.named_parameters())}
    assert_close(_weighted_grads(_flat(*actual), weights, leaves),
                 _weighted_grads(_flat(*expected), weights, leaves))
