"""Operator-level tests of ``torch.ops.rnnkernels.*_layer`` and ``*_layer_backward``.

The oracle is :mod:`rnnkernels.reference` (same arguments, same packed layout), run in float64 on
the very values the operator got, so a float32 comparison measures the operator's own error.
Covered: forward and backward parity over cell kind x direction x bias x projection x batch
sizes x dtype (plus awkward sizes), float64 gradcheck / gradgradcheck, and torch.library.opcheck.
"""

import dataclasses
import zlib

import pytest
import torch

import rnnkernels  # noqa: F401  (importing it registers the operators and their autograd)
from rnnkernels import reference

ops = torch.ops.rnnkernels

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
# Which biases are passed: both, neither, or only one of them (the ops fold them differently).
BIASES = ("both", "none", "ih", "hh")
BATCH_SIZES = {
    "const": (3, 3, 3),  # a padded batch
    "varying": (4, 3, 3, 1),  # sequences of lengths 4, 3, 3, 1: rows leave (join, in reverse)
    "single": (2,),  # one step
    "ones": (1, 1, 1, 1),  # one sequence
}

DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(torch.float64, id="f64")]

# Forward: the operator folds the biases into one input GEMM over all steps and the reference adds
# them per step, so the two round differently; the difference grows with the steps a state goes
# through (a handful here). float64 rounding (1.1e-16) leaves ~1e-15 after that, float32 (6e-8)
# a few 1e-7: the worst errors measured are ~1/1000 (float64) and ~1/50 (float32) of these
# bounds, and a 1e-4 relative change of c0 in the oracle already fails.
FORWARD_TOL = {
    torch.float32: dict(rtol=2e-5, atol=2e-5),
    torch.float64: dict(rtol=1e-12, atol=1e-12),
}
# Gradients sum over every row and step (dW, db) and chain through the whole sequence backwards,
# so they collect more rounding than the forward does.
GRAD_TOL = {
    torch.float32: dict(rtol=5e-5, atol=5e-5),
    torch.float64: dict(rtol=1e-11, atol=1e-11),
}


@dataclasses.dataclass(frozen=True)
class Case:
    """One operator variant: ``cell`` in GATES, ``proj_size`` 0 for none (LSTM only)."""

    cell: str
    reverse: bool = False
    bias: str = "both"
    proj_size: int = 0
    batch_sizes: tuple = BATCH_SIZES["varying"]
    input_size: int = 3
    hidden_size: int = 5

    @property
    def id(self):
        parts = [self.cell, "rev" if self.reverse else "fwd", f"bias_{self.bias}"]
        if self.proj_size:
            parts.append(f"proj{self.proj_size}")
        parts.append("bs" + "_".join(map(str, self.batch_sizes)))
        parts.append(f"I{self.input_size}H{self.hidden_size}")
        return "-".join(parts)

    @property
    def names(self):
        """The operator's differentiable arguments, in its (and its backward's) order."""
        if self.cell == "lstm":
            return ("input", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr")
        return ("input", "h0", "w_ih", "w_hh", "b_ih", "b_hh")

    @property
    def output_names(self):
        return ("output", "h_n", "c_n") if self.cell == "lstm" else ("output", "h_n")

    @property
    def nonlinearity(self):
        return self.cell.split("_")[1]

    @property
    def seed(self):
        return zlib.crc32(self.id.encode())


def param(case):
    return pytest.param(case, id=case.id)


def variants(batch_sizes=tuple(BATCH_SIZES.values()), input_size=3, hidden_size=5, proj_size=3):
    """Every cell kind x direction x bias x projection (LSTM only) x batch_sizes."""
    return [
        Case(cell, reverse, bias, proj, bs, input_size, hidden_size)
        for cell in GATES
        for reverse in (False, True)
        for bias in BIASES
        for proj in ((0, proj_size) if cell == "lstm" else (0,))
        for bs in batch_sizes
    ]


def make_tensors(case, dtype):
    """Random arguments of ``case``: name -> tensor, or None for an absent bias / w_hr.
    Weights ~ N(0, 1/H) keep pre-activations O(1), away from saturated gates."""
    gen = torch.Generator().manual_seed(case.seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)

    gates, hidden, state = GATES[case.cell], case.hidden_size, case.proj_size or case.hidden_size
    rows, batch = sum(case.batch_sizes), case.batch_sizes[0]
    scale = hidden**-0.5
    t = {
        "input": randn(rows, case.input_size),
        "h0": randn(batch, state, scale=0.5),
        "w_ih": randn(gates * hidden, case.input_size, scale=scale),
        "w_hh": randn(gates * hidden, state, scale=scale),
        "b_ih": randn(gates * hidden, scale=0.5) if case.bias in ("both", "ih") else None,
        "b_hh": randn(gates * hidden, scale=0.5) if case.bias in ("both", "hh") else None,
    }
    if case.cell == "lstm":
        t["c0"] = randn(batch, hidden, scale=0.5)
        t["w_hr"] = randn(state, hidden, scale=scale) if case.proj_size else None
    return t


def make_output_grads(case, outputs):
    gen = torch.Generator().manual_seed(case.seed + 1)
    return tuple(
        torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype) for o in outputs
    )


def to_float64(t):
    """Detached float64 copies of ``make_tensors``'s dict: the oracle's arguments."""
    return {k: None if v is None else v.detach().double() for k, v in t.items()}


def batch_sizes_of(case):
    return torch.tensor(case.batch_sizes, dtype=torch.int64)


def forward_call(case, t, train):
    """The forward operator of ``case`` and its arguments."""
    bs = batch_sizes_of(case)
    if case.cell == "lstm":
        return ops.lstm_layer, (
            t["input"], bs, t["h0"], t["c0"], t["w_ih"], t["w_hh"], t["b_ih"], t["b_hh"],
            t["w_hr"], case.reverse, train,
        )
    if case.cell == "gru":
        return ops.gru_layer, (
            t["input"], bs, t["h0"], t["w_ih"], t["w_hh"], t["b_ih"], t["b_hh"], case.reverse,
            train,
        )
    return ops.rnn_layer, (
        t["input"], bs, t["h0"], t["w_ih"], t["w_hh"], t["b_ih"], t["b_hh"], case.nonlinearity,
        case.reverse, train,
    )


def run_op(case, t, train=True):
    """Runs the forward operator: returns (outputs without reserve, reserve)."""
    op, args = forward_call(case, t, train)
    *outputs, reserve = op(*args)
    return tuple(outputs), reserve


def run_reference(case, t):
    bs = batch_sizes_of(case)
    if case.cell == "lstm":
        return reference.lstm_layer(
            t["input"], bs, t["h0"], t["c0"], t["w_ih"], t["w_hh"], t["b_ih"], t["b_hh"],
            t["w_hr"], case.reverse,
        )
    if case.cell == "gru":
        return reference.gru_layer(
            t["input"], bs, t["h0"], t["w_ih"], t["w_hh"], t["b_ih"], t["b_hh"], case.reverse
        )
    return reference.rnn_layer(
        t["input"], bs, t["h0"], t["w_ih"], t["w_hh"], t["b_ih"], t["b_hh"], case.nonlinearity,
        case.reverse,
    )


def backward_call(case, t, output_grads, output, reserve):
    """The backward operator of ``case`` and its arguments, consistent with a forward run of
    ``case`` on ``t`` that returned ``output`` and ``reserve``."""
    bs = batch_sizes_of(case)
    if case.cell == "lstm":
        return ops.lstm_layer_backward, (
            *output_grads, t["input"], bs, t["h0"], t["c0"], t["w_ih"], t["w_hh"], t["b_ih"],
            t["b_hh"], t["w_hr"], output, reserve, case.reverse,
        )
    if case.cell == "gru":
        return ops.gru_layer_backward, (
            *output_grads, t["input"], bs, t["h0"], t["w_ih"], t["w_hh"], t["b_ih"], t["b_hh"],
            output, reserve, case.reverse,
        )
    return ops.rnn_layer_backward, (
        *output_grads, t["input"], bs, t["h0"], t["w_ih"], t["w_hh"], t["b_ih"], t["b_hh"],
        case.nonlinearity, output, case.reverse,
    )


def run_backward_op(case, t, output_grads, output, reserve):
    op, args = backward_call(case, t, output_grads, output, reserve)
    return op(*args)


def present(case, t):
    return [name for name in case.names if t[name] is not None]


def reference_grads(case, t, output_grads, wanted=None):
    """float64 autograd gradients of the reference w.r.t. every present argument of ``t``, with
    ``output_grads`` on the outputs whose index is in ``wanted`` (all by default)."""
    t = {k: None if v is None else v.requires_grad_() for k, v in to_float64(t).items()}
    outputs = run_reference(case, t)
    wanted = range(len(outputs)) if wanted is None else wanted
    names = present(case, t)
    grads = torch.autograd.grad(
        [outputs[i] for i in wanted],
        [t[n] for n in names],
        [output_grads[i].double() for i in wanted],
        allow_unused=True,
        materialize_grads=True,
    )
    return dict(zip(names, grads))


def assert_close(got, want, tol, what):
    """``got`` against the (float64) oracle ``want``, rounded to ``got``'s dtype."""
    torch.testing.assert_close(got, want.to(got.dtype), **tol, msg=lambda m: f"{what}: {m}")


# ---------------------------------------------------------------------------------------------
# Forward parity


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [param(c) for c in variants()])
def test_forward_matches_reference(case, dtype):
    t = make_tensors(case, dtype)
    outputs, _reserve = run_op(case, t)
    expected = run_reference(case, to_float64(t))
    for name, got, want in zip(case.output_names, outputs, expected):
        assert got.dtype == dtype, name
        assert got.shape == want.shape, name
        assert_close(got, want, FORWARD_TOL[dtype], name)


# Awkward sizes: 1 everywhere; primes; widths one past the AVX-512 float32 (16) and float64 (8)
# vector widths, so the vectorised pointwise loops run their tails; enough rows per step that
# at::parallel_for splits them.
SIZE_CASES = [
    case
    for cell in GATES
    for case in (
        Case(cell, batch_sizes=(1,), input_size=1, hidden_size=1),
        Case(cell, reverse=True, batch_sizes=(1, 1), input_size=1, hidden_size=1),
        Case(cell, batch_sizes=(5, 5, 3, 2, 2), input_size=7, hidden_size=13),
        Case(cell, reverse=True, batch_sizes=(37, 37, 29, 2), input_size=19, hidden_size=17),
        Case(cell, batch_sizes=(11, 7, 7, 7, 3, 1), input_size=2, hidden_size=33),
        Case(cell, reverse=True, bias="hh", batch_sizes=(3, 2), input_size=9, hidden_size=9),
    )
] + [
    Case("lstm", proj_size=1, batch_sizes=(1,), input_size=1, hidden_size=1),
    Case("lstm", proj_size=1, reverse=True, batch_sizes=(2, 1), input_size=1, hidden_size=2),
    Case("lstm", proj_size=11, batch_sizes=(5, 5, 3, 2, 2), input_size=7, hidden_size=13),
    Case("lstm", proj_size=7, reverse=True, batch_sizes=(37, 37, 29, 2), input_size=19,
         hidden_size=17),
    Case("lstm", proj_size=17, batch_sizes=(11, 7, 7, 7, 3, 1), input_size=2, hidden_size=33),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [param(c) for c in SIZE_CASES])
def test_forward_awkward_sizes(case, dtype):
    t = make_tensors(case, dtype)
    outputs, _reserve = run_op(case, t)
    expected = run_reference(case, to_float64(t))
    for name, got, want in zip(case.output_names, outputs, expected):
        assert got.shape == want.shape, name
        assert_close(got, want, FORWARD_TOL[dtype], name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "case", [param(c) for c in variants(batch_sizes=(BATCH_SIZES["varying"],)) if c.bias in
             ("both", "none")],
)
def test_inference_matches_training(case, dtype):
    """train=False computes the same outputs and keeps no reserve."""
    t = make_tensors(case, dtype)
    trained, _ = run_op(case, t, train=True)
    inferred, reserve = run_op(case, t, train=False)
    assert reserve.numel() == 0
    assert reserve.dtype == dtype
    for name, a, b in zip(case.output_names, trained, inferred):
        assert a.shape == b.shape, name
        # The same arithmetic in the same order: only whether the gates get saved differs.
        assert torch.equal(a, b), name


@pytest.mark.parametrize("case", [param(c) for c in variants(batch_sizes=(BATCH_SIZES["varying"],))
                                  if c.bias == "both"])
def test_inputs_unchanged(case):
    """Neither the forward nor the backward writes to its arguments (h0 and c0 are copied)."""
    t = make_tensors(case, torch.float64)
    before = {k: v.clone() for k, v in t.items() if v is not None}
    outputs, reserve = run_op(case, t)
    output_grads = make_output_grads(case, outputs)
    run_backward_op(case, t, output_grads, outputs[0], reserve)
    for name, value in before.items():
        assert torch.equal(t[name], value), name


# ---------------------------------------------------------------------------------------------
# Backward parity: the backward operators called directly, and through autograd.


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [param(c) for c in variants()])
def test_backward_op_matches_reference(case, dtype):
    t = make_tensors(case, dtype)
    outputs, reserve = run_op(case, t)
    output_grads = make_output_grads(case, outputs)
    grads = run_backward_op(case, t, output_grads, outputs[0], reserve)
    assert len(grads) == len(case.names)
    expected = reference_grads(case, t, output_grads)
    for name, grad in zip(case.names, grads):
        assert grad.dtype == dtype, name
        if t[name] is None:
            # The schema cannot return None: an absent bias or w_hr gets an empty gradient.
            assert grad.numel() == 0, name
        else:
            assert grad.shape == t[name].shape, name
            assert_close(grad, expected[name], GRAD_TOL[dtype], f"grad of {name}")


def partial_output_params():
    """Gradients on only some outputs (the others get None from autograd)."""
    params = []
    for case in variants(batch_sizes=(BATCH_SIZES["varying"], BATCH_SIZES["single"])):
        if case.bias != "both":
            continue
        subsets = ((0,), (1,), (2,), (1, 2), (0, 2)) if case.cell == "lstm" else ((0,), (1,))
        for wanted in subsets:
            label = "+".join(case.output_names[i] for i in wanted)
            params.append(pytest.param(case, wanted, id=f"{case.id}-only_{label}"))
    return params


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, wanted", partial_output_params())
def test_autograd_partial_outputs_match_reference(case, wanted, dtype):
    t = make_tensors(case, dtype)
    names = present(case, t)
    for name in names:
        t[name].requires_grad_()
    outputs, _reserve = run_op(case, t)
    output_grads = make_output_grads(case, outputs)
    grads = torch.autograd.grad(
        [outputs[i] for i in wanted], [t[n] for n in names], [output_grads[i] for i in wanted],
        allow_unused=True, materialize_grads=True,
    )
    expected = reference_grads(case, t, output_grads, wanted)
    for name, grad in zip(names, grads):
        assert grad.dtype == dtype, name
        assert grad.shape == t[name].shape, name
        assert_close(grad, expected[name], GRAD_TOL[dtype], f"grad of {name}")


# ---------------------------------------------------------------------------------------------
# gradcheck and gradgradcheck, float64, tiny sizes.

# Every variant with varying batch sizes, then constant and all-ones batch sizes with both biases.
GRADCHECK_CASES = variants(batch_sizes=((3, 2, 2, 1), (2, 2, 2), (1, 1, 1)), input_size=2,
                           hidden_size=3, proj_size=2)
GRADCHECK_CASES = [c for c in GRADCHECK_CASES if c.batch_sizes == (3, 2, 2, 1) or c.bias == "both"]


def differentiable(case, t):
    """``t``'s present tensors as leaves requiring grad, and a function of them that runs the
    forward operator (train=True) and returns its differentiable outputs."""
    names = present(case, t)
    leaves = [t[n].requires_grad_() for n in names]

    def forward(*args):
        return run_op(case, dict(t, **dict(zip(names, args))))[0]

    return forward, leaves


@pytest.mark.parametrize("case", [param(c) for c in GRADCHECK_CASES])
def test_gradcheck(case):
    forward, leaves = differentiable(case, make_tensors(case, torch.float64))
    # check_undefined_grad: also with None for some output gradients (autograd passes None for an
    # unused output; the formula must treat it as zeros).
    assert torch.autograd.gradcheck(forward, leaves, check_undefined_grad=True)


# Double backward runs through the Python reference, step by step: smaller still.
GRADGRADCHECK_CASES = [
    Case("lstm", True, "both", 1, (2, 1, 1), 2, 2),
    Case("lstm", False, "ih", 0, (2, 1, 1), 2, 2),
    Case("gru", True, "hh", 0, (2, 1, 1), 2, 2),
    Case("rnn_tanh", False, "both", 0, (2, 1, 1), 2, 2),
    Case("rnn_relu", True, "none", 0, (2, 1, 1), 2, 2),
]


@pytest.mark.parametrize("case", [param(c) for c in GRADGRADCHECK_CASES])
def test_gradgradcheck(case):
    forward, leaves = differentiable(case, make_tensors(case, torch.float64))
    assert torch.autograd.gradgradcheck(forward, leaves)


@pytest.mark.parametrize("case", [param(c) for c in GRADGRADCHECK_CASES])
def test_create_graph_gradients_match_backward_op(case):
    """With create_graph=True the gradients come from the reference (to be differentiable); they
    must equal those of the backward operator."""
    forward, leaves = differentiable(case, make_tensors(case, torch.float64))
    outputs = forward(*leaves)
    output_grads = make_output_grads(case, outputs)
    plain = torch.autograd.grad(outputs, leaves, output_grads, retain_graph=True)
    graphed = torch.autograd.grad(outputs, leaves, output_grads, create_graph=True)
    for a, b in zip(plain, graphed):
        assert b.requires_grad
        assert_close(a, b.detach(), GRAD_TOL[torch.float64], "gradient")


# ---------------------------------------------------------------------------------------------
# torch.library.opcheck: schema (no input mutated, no aliasing), autograd registration, fake
# kernels against the real ones, and AOT dispatch with dynamic shapes.

# Two cases per cell (opcheck's AOT-dispatch test costs ~0.5-1 s each): varying batch sizes
# with both biases, and reverse over constant batch sizes without biases (the backward then
# returns empty gradients for them, which the fake kernels must match).
OPCHECK_CASES = [
    case
    for cell, proj_size in (("lstm", 0), ("lstm", 2), ("gru", 0), ("rnn_tanh", 0), ("rnn_relu", 0))
    for case in (
        Case(cell, False, "both", proj_size, (3, 2, 2, 1), 2, 3),
        Case(cell, True, "none", proj_size, (2, 2, 2), 2, 3),
    )
]


@pytest.mark.parametrize("train", [pytest.param(True, id="train"), pytest.param(False, id="infer")])
@pytest.mark.parametrize("case", [param(c) for c in OPCHECK_CASES])
def test_opcheck_forward(case, train):
    t = make_tensors(case, torch.float32)
    if train:
        # As in training: the inputs require grad, so opcheck also runs the autograd formula
        # (with train=False they do not, as a backward then has no reserve to work from).
        for name in present(case, t):
            t[name].requires_grad_()
    torch.library.opcheck(*forward_call(case, t, train))


@pytest.mark.parametrize("case", [param(c) for c in OPCHECK_CASES])
def test_opcheck_backward(case):
    t = make_tensors(case, torch.float32)
    outputs, reserve = run_op(case, t)
    output_grads = make_output_grads(case, outputs)
    torch.library.opcheck(*backward_call(case, t, output_grads, outputs[0], reserve))
