"""Property-based tests (hypothesis): every operator against rnnkernels.reference, and the modules
against torch.nn, on randomly drawn cases instead of a fixed grid (test_ops.py and
test_modules.py hold the grids).

A case draws the cell kind, direction, which biases exist, the projection (LSTM), sizes from 1
up, and non-increasing positive batch_sizes; values are float64, so the only differences are
rounding (tolerances as in test_ops.py).
"""

import dataclasses

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkernels
from rnnkernels import reference

ops = torch.ops.rnnkernels
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
# float64: the operators fold biases and sum in other orders than the reference; see test_ops.py.
FORWARD_TOL = dict(rtol=1e-12, atol=1e-12)
GRAD_TOL = dict(rtol=1e-11, atol=1e-11)
# Each example is a few small float64 runs (milliseconds); the reference loops in Python.
PROPERTY_SETTINGS = settings(max_examples=60, deadline=None)


@dataclasses.dataclass(frozen=True)
class Case:
    cell: str
    batch_sizes: tuple
    input_size: int
    hidden_size: int
    proj_size: int  # 0: no projection (LSTM only)
    reverse: bool
    b_ih: bool
    b_hh: bool
    seed: int

    @property
    def state_size(self):
        return self.proj_size or self.hidden_size


@st.composite
def batch_sizes(draw, max_steps=5, max_batch=5):
    """Non-increasing positive step sizes, as in a PackedSequence: one step or more, batch 1 or
    more."""
    steps = draw(st.integers(1, max_steps))
    first = draw(st.integers(1, max_batch))
    rest = draw(st.lists(st.integers(1, first), min_size=steps - 1, max_size=steps - 1))
    return (first, *sorted(rest, reverse=True))


@st.composite
def cases(draw):
    cell = draw(st.sampled_from(sorted(GATES)))
    hidden_size = draw(st.integers(1, 6))
    # The operator takes any projection width, wider than hidden_size too (torch.nn does not).
    proj_size = draw(st.integers(0, hidden_size + 1)) if cell == "lstm" else 0
    return Case(cell=cell, batch_sizes=draw(batch_sizes()), input_size=draw(st.integers(1, 6)),
                hidden_size=hidden_size, proj_size=proj_size, reverse=draw(st.booleans()),
                b_ih=draw(st.booleans()), b_hh=draw(st.booleans()),
                seed=draw(st.integers(0, 2**31 - 1)))


def _tensors(case):
    """The operator's tensor arguments (name -> float64 tensor, None for an absent bias/w_hr).
    Weights ~ N(0, 1/H) keep the pre-activations O(1)."""
    gen = torch.Generator().manual_seed(case.seed)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * scale

    gates, hidden, state = GATES[case.cell], case.hidden_size, case.state_size
    width, scale = gates * hidden, hidden**-0.5
    t = dict(
        input=randn(sum(case.batch_sizes), case.input_size),
        h0=randn(case.batch_sizes[0], state, scale=0.5),
        w_ih=randn(width, case.input_size, scale=scale),
        w_hh=randn(width, state, scale=scale),
        b_ih=randn(width, scale=0.5) if case.b_ih else None,
        b_hh=randn(width, scale=0.5) if case.b_hh else None,
    )
    if case.cell == "lstm":
        t["c0"] = randn(case.batch_sizes[0], hidden, scale=0.5)
        t["w_hr"] = randn(state, hidden, scale=scale) if case.proj_size else None
    return t


def _names(case):
    """The differentiable arguments in the operators' order."""
    if case.cell == "lstm":
        return ["input", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr"]
    return ["input", "h0", "w_ih", "w_hh", "b_ih", "b_hh"]


def _forward(case, t, train):
    """The forward operator: (outputs without reserve, reserve)."""
    bs = torch.tensor(case.batch_sizes)
    if case.cell == "lstm":
        *outputs, reserve = ops.lstm_layer(t["input"], bs, t["h0"], t["c0"], t["w_ih"],
                                           t["w_hh"], t["b_ih"], t["b_hh"], t["w_hr"],
                                           case.reverse, train)
    elif case.cell == "gru":
        *outputs, reserve = ops.gru_layer(t["input"], bs, t["h0"], t["w_ih"], t["w_hh"],
                                          t["b_ih"], t["b_hh"], case.reverse, train)
    else:
        *outputs, reserve = ops.rnn_layer(t["input"], bs, t["h0"], t["w_ih"], t["w_hh"],
                                          t["b_ih"], t["b_hh"], case.cell[4:], case.reverse,
                                          train)
    return outputs, reserve


def _backward(case, t, grads, output, reserve):
    bs = torch.tensor(case.batch_sizes)
    if case.cell == "lstm":
        return ops.lstm_layer_backward(*grads, t["input"], bs, t["h0"], t["c0"], t["w_ih"],
                                       t["w_hh"], t["b_ih"], t["b_hh"], t["w_hr"], output,
                                       reserve, case.reverse)
    if case.cell == "gru":
        return ops.gru_layer_backward(*grads, t["input"], bs, t["h0"], t["w_ih"], t["w_hh"],
                                      t["b_ih"], t["b_hh"], output, reserve, case.reverse)
    return ops.rnn_layer_backward(*grads, t["input"], bs, t["h0"], t["w_ih"], t["w_hh"],
                                  t["b_ih"], t["b_hh"], case.cell[4:], output, case.reverse)


def _reference(case, t):
    bs = torch.tensor(case.batch_sizes)
    if case.cell == "lstm":
        return reference.lstm_layer(t["input"], bs, t["h0"], t["c0"], t["w_ih"], t["w_hh"],
                                    t["b_ih"], t["b_hh"], t["w_hr"], case.reverse)
    if case.cell == "gru":
        return reference.gru_layer(t["input"], bs, t["h0"], t["w_ih"], t["w_hh"], t["b_ih"],
                                   t["b_hh"], case.reverse)
    return reference.rnn_layer(t["input"], bs, t["h0"], t["w_ih"], t["w_hh"], t["b_ih"],
                               t["b_hh"], case.cell[4:], case.reverse)


def _output_grads(case, outputs):
    gen = torch.Generator().manual_seed(case.seed + 1)
    return [torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in outputs]


def _reference_grads(case, t, output_grads, wanted):
    """Gradients of the reference w.r.t. every present argument, with ``output_grads`` on the
    outputs whose index is in ``wanted``."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in t.items() if v is not None}
    outputs = _reference(case, {**t, **leaves})
    grads = torch.autograd.grad([outputs[i] for i in wanted], list(leaves.values()),
                                [output_grads[i] for i in wanted], allow_unused=True,
                                materialize_grads=True)
    return dict(zip(leaves, grads))


@PROPERTY_SETTINGS
@given(case=cases())
def test_forward_matches_reference(case):
    t = _tensors(case)
    outputs, reserve = _forward(case, t, train=True)
    for got, want in zip(outputs, _reference(case, t), strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, **FORWARD_TOL)
    # Inference computes the same values, to the bit, and saves nothing.
    inferred, empty = _forward(case, t, train=False)
    assert empty.numel() == 0
    for got, want in zip(inferred, outputs):
        assert torch.equal(got, want)


@PROPERTY_SETTINGS
@given(case=cases())
def test_backward_operator_matches_reference(case):
    t = _tensors(case)
    outputs, reserve = _forward(case, t, train=True)
    output_grads = _output_grads(case, outputs)
    grads = _backward(case, t, output_grads, outputs[0], reserve)
    expected = _reference_grads(case, t, output_grads, range(len(outputs)))
    for name, grad in zip(_names(case), grads, strict=True):
        if t[name] is None:
            assert grad.numel() == 0, name  # the schema's stand-in for an absent gradient
        else:
            assert grad.shape == t[name].shape, name
            torch.testing.assert_close(grad, expected[name], **GRAD_TOL,
                                       msg=lambda m, name=name: f"grad of {name}: {m}")


@PROPERTY_SETTINGS
@given(case=cases(), data=st.data())
def test_autograd_matches_reference(case, data):
    """Through autograd, with gradients flowing into a random non-empty subset of the outputs
    (the others get None, which the formula must treat as zeros)."""
    t = _tensors(case)
    leaves = {k: v.requires_grad_() for k, v in t.items() if v is not None}
    outputs, _ = _forward(case, t, train=True)
    wanted = data.draw(st.sets(st.sampled_from(range(len(outputs))), min_size=1), label="wanted")
    output_grads = _output_grads(case, outputs)
    grads = torch.autograd.grad([outputs[i] for i in wanted], list(leaves.values()),
                                [output_grads[i] for i in wanted], allow_unused=True,
                                materialize_grads=True)
    expected = _reference_grads(case, t, output_grads, sorted(wanted))
    for name, grad in zip(leaves, grads):
        torch.testing.assert_close(grad, expected[name], **GRAD_TOL,
                                   msg=lambda m, name=name: f"grad of {name}: {m}")


# ---------------------------------------------------------------------------------------------
# Modules against torch.nn: random configurations and unsorted variable-length batches.

LAYERS = {"lstm": ("LSTM", {}), "gru": ("GRU", {}), "rnn_tanh": ("RNN", dict(nonlinearity="tanh")),
          "rnn_relu": ("RNN", dict(nonlinearity="relu"))}


@st.composite
def module_cases(draw):
    kind = draw(st.sampled_from(sorted(LAYERS)))
    name, kwargs = LAYERS[kind]
    hidden_size = draw(st.integers(1, 5))
    kwargs = dict(kwargs, num_layers=draw(st.integers(1, 3)), bias=draw(st.booleans()),
                  bidirectional=draw(st.booleans()), batch_first=draw(st.booleans()))
    if kind == "lstm" and hidden_size > 1:
        kwargs["proj_size"] = draw(st.integers(0, hidden_size - 1))
    lengths = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    packed = draw(st.booleans())
    return name, draw(st.integers(1, 4)), hidden_size, kwargs, lengths, packed


@settings(max_examples=40, deadline=None)
@given(case=module_cases(), seed=st.integers(0, 2**31 - 1))
def test_module_matches_torch_nn(case, seed):
    """Outputs, final states and the gradients of the input and every parameter, for padded or
    packed (unsorted lengths) input."""
    name, input_size, hidden_size, kwargs, lengths, packed = case
    torch.manual_seed(seed)
    theirs = getattr(nn, name)(input_size, hidden_size, dtype=torch.float64, **kwargs)
    ours = getattr(rnnkernels, name)(input_size, hidden_size, dtype=torch.float64, **kwargs)
    ours.load_state_dict(theirs.state_dict())
    batch_first = kwargs["batch_first"]
    shape = (len(lengths), max(lengths)) if batch_first else (max(lengths), len(lengths))
    x = torch.randn(*shape, input_size, dtype=torch.float64, requires_grad=True)

    def run(module):
        input = x
        if packed:
            input = pack_padded_sequence(x, lengths, batch_first=batch_first,
                                         enforce_sorted=False)
        output, hidden = module(input)
        flat = [output.data if packed else output,
                *(hidden if isinstance(hidden, tuple) else (hidden,))]
        gen = torch.Generator().manual_seed(seed)
        loss = sum((t * torch.randn(t.shape, generator=gen, dtype=torch.float64)).sum()
                   for t in flat)
        return flat, torch.autograd.grad(loss, [x, *module.parameters()])

    our_results, our_grads = run(ours)
    their_results, their_grads = run(theirs)
    for got, want in zip([*our_results, *our_grads], [*their_results, *their_grads],
                         strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
