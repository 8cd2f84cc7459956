"""IndRNN: the cells ``indrnn_relu`` and ``indrnn_tanh`` of the generic operators and the module
``rnnkernels.IndRNN``.

Two independent oracles: ``rnnkernels.reference`` (a PyTorch loop) for the operators and the
module, and torch.nn.RNN, which is an IndRNN when its ``weight_hh`` is the diagonal matrix of
IndRNN's vector: same outputs and final states, and the diagonal of its ``weight_hh`` gradient is
IndRNN's. Also float64 gradcheck and gradgradcheck, opcheck, dropout, torch.compile,
torch.export, autocast, ONNX export, and torch.nn.RNN's errors for bad arguments. The emulated
CUDA kernels are checked against the CPU path in test_cuda_emulation.py."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnkernels
from rnnkernels import reference

ops = torch.ops.rnnkernels

NONLINEARITIES = ["relu", "tanh"]
DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(torch.float64, id="f64")]
BATCH_SIZES = (4, 3, 3, 1)
INPUT, HIDDEN = 3, 5
# The operator against the reference, as test_ops.py measures them: the operator folds both biases
# into one GEMM over all steps, the reference adds them per step, so they round differently; the
# gradients sum over rows and steps and collect more rounding.
FORWARD_TOL = {torch.float32: dict(rtol=2e-5, atol=2e-5),
               torch.float64: dict(rtol=1e-12, atol=1e-12)}
GRAD_TOL = {torch.float32: dict(rtol=5e-5, atol=5e-5),
            torch.float64: dict(rtol=1e-11, atol=1e-11)}


def layer_args(dtype=torch.float64, bias=True, sizes=(BATCH_SIZES, INPUT, HIDDEN)):
    """(input, batch_sizes, states, params) of the generic layer operator for IndRNN: params
    w_ih [H, I], u = w_hh [H], b_ih, b_hh (None without bias)."""
    batch_sizes, input_size, hidden = sizes
    gen = torch.Generator().manual_seed(0)

    def randn(*shape):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * 0.5).to(dtype)

    params = [randn(hidden, input_size), randn(hidden), randn(hidden) if bias else None,
              randn(hidden) if bias else None]
    return (randn(sum(batch_sizes), input_size), torch.tensor(batch_sizes),
            [randn(batch_sizes[0], hidden)], params)


# ---------------------------------------------------------------------------------------------
# The operators


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
def test_layer_matches_reference(nonlinearity, reverse, bias, dtype, layer_checks):
    """Output, final state and the gradients of input, h0 and every param; the reference runs
    in float64 on the very values the operator got."""
    input, batch_sizes, states, params = layer_args(dtype, bias)
    leaves = [t.requires_grad_() for t in [input, *states, *params] if t is not None]
    output, finals, _ = ops.layer(f"indrnn_{nonlinearity}", input, batch_sizes, states, params,
                                  [], reverse, True)
    exact = [t.detach().double().requires_grad_() for t in leaves]
    values = iter(exact)
    args = [next(values) if t is not None else None for t in [input, *states, *params]]
    want = reference.indrnn_layer(args[0], batch_sizes, *args[1:], nonlinearity=nonlinearity,
                                  reverse=reverse)
    for got, expected in zip([output, finals[0]], want):
        torch.testing.assert_close(got, expected.to(dtype), **FORWARD_TOL[dtype])

    grads = layer_checks.random_like([output, finals[0]])
    got = torch.autograd.grad([output, finals[0]], leaves, grads)
    expected = torch.autograd.grad(want, exact, [g.double() for g in grads])
    for index, (g, e) in enumerate(zip(got, expected)):
        torch.testing.assert_close(g, e.to(dtype), **GRAD_TOL[dtype],
                                   msg=lambda m: f"gradient {index}: {m}")


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
def test_layer_gradcheck_and_gradgradcheck(nonlinearity, reverse):
    """float64, tiny: gradgradcheck differentiates the recomputation (csrc/layer/
    differentiable.h) numerically, element by element."""
    input, batch_sizes, states, params = layer_args(sizes=((2, 2, 1), 2, 3))
    leaves = [t.requires_grad_() for t in [input, *states, *params]]

    def forward(x, h0, *p):
        output, finals, _ = ops.layer(f"indrnn_{nonlinearity}", x, batch_sizes, [h0], list(p),
                                      [], reverse, True)
        return output, *finals

    assert torch.autograd.gradcheck(forward, leaves)
    assert torch.autograd.gradgradcheck(forward, leaves)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
def test_opcheck_layer_operators(nonlinearity, reverse, layer_checks):
    layer_checks.opcheck_layer(f"indrnn_{nonlinearity}", *layer_args(torch.float32), reverse)


def test_opcheck_stacked():
    torch.manual_seed(0)
    module = rnnkernels.IndRNN(INPUT, HIDDEN, num_layers=2, bidirectional=True, batch_first=True)
    input = torch.randn(2, 4, INPUT, requires_grad=True)
    h0 = torch.randn(4, 2, HIDDEN, requires_grad=True)
    weights = [w.detach().requires_grad_() for w in module._flat_weights]
    torch.library.opcheck(ops.stacked.default,
                          ("indrnn_relu", input, None, [h0], weights, [], True, 2, 0.0, False,
                           True, True))


def test_cells_reach_python():
    for nonlinearity in NONLINEARITIES:
        cell = rnnkernels._ops.CELLS[f"indrnn_{nonlinearity}"]
        assert (cell["gates"], cell["states"], cell["reserve"]) == (1, ["h"], 0)
        assert cell["params"] == ["w_ih", "w_hh", "b_ih", "b_hh"]


# ---------------------------------------------------------------------------------------------
# The module


def make_module(nonlinearity="relu", dtype=torch.float64, **options):
    torch.manual_seed(0)
    return rnnkernels.IndRNN(INPUT, HIDDEN, nonlinearity=nonlinearity, dtype=dtype, **options)


def rnn_twin(ours):
    """A torch.nn.RNN computing ``ours``: the same parameters, but each ``weight_hh`` the
    diagonal matrix of ours."""
    weight = ours.weight_ih_l0
    twin = nn.RNN(ours.input_size, ours.hidden_size, ours.num_layers, ours.nonlinearity,
                  ours.bias, ours.batch_first, ours.dropout, ours.bidirectional,
                  dtype=weight.dtype)
    with torch.no_grad():
        for name, param in ours.named_parameters():
            getattr(twin, name).copy_(torch.diag(param) if name.startswith("weight_hh")
                                      else param)
    return twin


CONFIGS = [
    pytest.param(dict(num_layers=2, bidirectional=True), id="2x-bi"),
    pytest.param(dict(num_layers=3, bias=False, batch_first=True), id="3x-nobias-batch_first"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
@pytest.mark.parametrize("config", CONFIGS)
def test_module_matches_torch_nn_rnn_with_diagonal_weight_hh(config, input_form, nonlinearity,
                                                             dtype, assert_close, layer_checks):
    """Padded input from the default (zero) state, packed (unsorted) and unbatched input from a
    given one."""
    flat, weighted_grads = layer_checks.flat, layer_checks.weighted_grads
    ours = make_module(nonlinearity, dtype, **config)
    twin = rnn_twin(ours)
    input, hx = layer_checks.layer_input(input_form, ours, dtype, with_hx=input_form != "padded")
    data = input.data if isinstance(input, PackedSequence) else input
    data.requires_grad_()
    leaves = [data] + ([hx.requires_grad_()] if hx is not None else [])
    got, want = ours(input, hx), twin(input, hx)
    assert type(got[0]) is type(want[0])
    assert_close(flat(*got), flat(*want))

    weights = layer_checks.random_like(flat(*want))
    names = [name for name, _ in ours.named_parameters()]
    got_grads = weighted_grads(flat(*got), weights, leaves + list(ours.parameters()))
    want_grads = weighted_grads(flat(*want), weights, leaves + list(twin.parameters()))
    expected = list(want_grads[:len(leaves)])
    for name, grad in zip(names, want_grads[len(leaves):]):
        expected.append(torch.diagonal(grad) if name.startswith("weight_hh") else grad)
    assert_close(list(got_grads), expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
@pytest.mark.parametrize("config", CONFIGS)
def test_module_matches_reference(config, nonlinearity, dtype, layer_checks):
    """Padded and packed (sorted, so the reference takes the batch as it is) input."""
    ours = make_module(nonlinearity, dtype, **config)
    options = dict(nonlinearity=nonlinearity, bias=ours.bias, num_layers=ours.num_layers,
                   bidirectional=ours.bidirectional, batch_first=ours.batch_first)
    padded, hx = layer_checks.layer_input("padded", ours, dtype, with_hx=True)
    leaves = [padded.requires_grad_(), hx.requires_grad_(), *ours.parameters()]
    packed = pack_padded_sequence(padded, torch.tensor([5, 4, 2]), ours.batch_first)
    for input, reference_args in ((padded, (padded, None)),
                                  (packed, (packed.data, packed.batch_sizes))):
        got = ours(input, hx)
        want = reference.indrnn(reference_args[0], hx, ours._flat_weights,
                                batch_sizes=reference_args[1], **options)
        layer_checks.results_and_grads_close(got, want, leaves)


def test_dropout_between_layers_matches_reference(assert_close, layer_checks):
    """Training with dropout: the same dropout masks (same generator state) as the reference's
    F.dropout between layers, and none in eval mode."""
    ours = make_module(num_layers=3, dropout=0.5, bidirectional=True)
    input, hx = layer_checks.layer_input("padded", ours, torch.float64, with_hx=True)
    options = dict(num_layers=3, dropout=0.5, training=True, bidirectional=True)
    torch.manual_seed(1)
    got = ours(input, hx)
    torch.manual_seed(1)
    assert_close(got, reference.indrnn(input, hx, ours._flat_weights, **options))
    ours.eval()
    evaluated = ours(input, hx)
    assert not torch.allclose(evaluated[0], got[0])
    assert_close(evaluated, reference.indrnn(input, hx, ours._flat_weights,
                                             **{**options, "training": False}))


def test_parameters_are_named_and_shaped_as_specified():
    ours = rnnkernels.IndRNN(INPUT, HIDDEN, num_layers=2, bidirectional=True)
    rnn = nn.RNN(INPUT, HIDDEN, num_layers=2, bidirectional=True)
    shapes = {name: tuple(p.shape) for name, p in ours.named_parameters()}
    assert list(shapes) == [name for name, _ in rnn.named_parameters()]
    for name, shape in shapes.items():
        if name.startswith("weight_ih"):
            assert shape == (HIDDEN, INPUT if "_l0" in name else 2 * HIDDEN), name
        else:
            assert shape == (HIDDEN,), name
    assert [p.shape for p in ours._flat_weights] == [p.shape for p in ours.parameters()]
    assert isinstance(ours, nn.RNNBase) and not isinstance(ours, nn.RNN)


def test_initialisation_is_torch_nn_rnn_s():
    """uniform(-1/sqrt(H), 1/sqrt(H)), every parameter, allocated on the requested device and
    dtype."""
    hidden = 64
    ours = rnnkernels.IndRNN(INPUT, hidden, num_layers=2, dtype=torch.float64)
    bound = hidden**-0.5
    for name, param in ours.named_parameters():
        assert param.dtype == torch.float64 and param.device.type == "cpu", name
        assert param.abs().max() <= bound, name
        assert param.abs().max() > 0.8 * bound and param.std() > 0.4 * bound, name


def test_repr_and_state_dict_round_trip():
    ours = rnnkernels.IndRNN(INPUT, HIDDEN, num_layers=2, nonlinearity="tanh")
    assert repr(ours) == "IndRNN(3, 5, num_layers=2, nonlinearity='tanh')"
    assert repr(rnnkernels.IndRNN(INPUT, HIDDEN)) == "IndRNN(3, 5)"
    copy = rnnkernels.IndRNN(INPUT, HIDDEN, num_layers=2, nonlinearity="tanh")
    copy.load_state_dict(ours.state_dict())
    input = torch.randn(4, 2, INPUT)
    assert torch.equal(copy(input)[0], ours(input)[0])


def test_torch_compile_fullgraph(layer_checks):
    """IndRNN is no torch.nn.RNN, so Dynamo traces it without allow_rnn."""
    ours = make_module(dtype=torch.float32, num_layers=2, bidirectional=True, batch_first=True)
    layer_checks.torch_compile(ours, torch.randn(3, 6, INPUT, requires_grad=True))


def test_torch_export(layer_checks):
    ours = make_module(dtype=torch.float32, num_layers=2, bidirectional=True)
    layer_checks.torch_export(ours, torch.randn(5, 3, INPUT))


def test_autocast_runs_in_the_autocast_dtype(layer_checks):
    """Under CPU bfloat16 autocast the layer runs in bfloat16 (as torch.nn.RNN's results come out
    there)."""
    ours = make_module(dtype=torch.float32, num_layers=2)
    layer_checks.autocast(ours, *layer_checks.layer_input("padded", ours, torch.float32, True))


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
def test_onnx_export_runs_the_reference_in_onnxruntime(dynamo, layer_checks):
    """ONNX has no IndRNN: the export holds the reference's steps in standard operators."""
    ours = make_module(dtype=torch.float32, num_layers=2, bidirectional=True).eval()
    layer_checks.onnx_export(ours, torch.randn(5, 2, INPUT), dynamo)


# ---------------------------------------------------------------------------------------------
# Errors: torch.nn.RNN's, where it has the same mistake


def test_unknown_nonlinearity_raises_torch_nn_s_error(layer_checks):
    layer_checks.assert_same_error(lambda: rnnkernels.IndRNN(INPUT, HIDDEN, nonlinearity="gelu"),
                                   lambda: nn.RNN(INPUT, HIDDEN, nonlinearity="gelu"))


def test_bad_input_raises_torch_nn_rnn_s_error(bad_input, layer_checks):
    ours = make_module(dtype=torch.float32)
    twin = rnn_twin(ours)
    input, hx = bad_input(ours)
    layer_checks.assert_same_error(lambda: ours(input, hx), lambda: twin(input, hx))


def test_input_of_wrong_rank_is_a_value_error():
    ours = make_module()
    with pytest.raises(ValueError, match="IndRNN: Expected input to be 2D or 3D, got 4D"):
        ours(torch.randn(2, 2, 2, INPUT, dtype=torch.float64))


def test_hx_dtype_not_input_dtype_is_named():
    ours = make_module()
    with pytest.raises(RuntimeError, match=r"IndRNN: expected hx to have the dtype of input "
                                           r"\(torch.float64\), got torch.float32"):
        ours(torch.randn(2, 2, INPUT, dtype=torch.float64), torch.zeros(1, 2, HIDDEN))
