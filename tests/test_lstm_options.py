"""The options of LSTM and GRU (README, "LSTM and GRU options"): peepholes, a cell clip, zoneout,
recurrent dropout and weight drop; the cells ``lstm_ext`` and ``gru_ext`` of the generic
operators and the options of ``rnnkernels.LSTM`` and ``GRU``.

Oracles: ``rnnkernels.reference`` (a PyTorch loop, given the very masks the operators get), and
torch.nn where an option can be made a no-op (peephole weights 0, a huge clip, a probability of
0) or has a closed form (one step of zoneout in eval, weight drop as a dropped weight_hh, zoneout
of 1). Also float64 gradcheck and gradgradcheck, opcheck, torch.compile, torch.export, errors.
The emulated CUDA kernels are checked against the CPU path in test_cuda_emulation.py."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import rnnkernels
from rnnkernels import functional, reference

ops = torch.ops.rnnkernels

BATCH_SIZES = (4, 3, 3, 1)
INPUT, HIDDEN = 3, 5
CLIP, P_H, P_C, P_R = 0.4, 0.3, 0.4, 0.25
OPTIONS = {"lstm_ext": ("peephole", "cell_clip", "zoneout", "cell_zoneout", "recurrent_dropout"),
           "gru_ext": ("zoneout", "recurrent_dropout")}
# The operator against the reference (float64 on the same values), as test_indrnn.py measures
# them.
FORWARD_TOL = {torch.float32: dict(rtol=2e-5, atol=2e-5),
               torch.float64: dict(rtol=1e-12, atol=1e-12),
               torch.bfloat16: dict(rtol=5e-2, atol=5e-2),
               torch.float16: dict(rtol=1e-2, atol=1e-2)}
GRAD_TOL = {torch.float32: dict(rtol=5e-5, atol=5e-5),
            torch.float64: dict(rtol=1e-11, atol=1e-11)}
DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(torch.float64, id="f64")]


def variants(cell):
    """id -> (options, training): each option alone in training, all of them in training and
    in eval (zoneout's expectation, no recurrent dropout)."""
    options = OPTIONS[cell]
    found = {name: ((name,), True) for name in options}
    found["all"] = (options, True)
    found["all-eval"] = (options, False)
    return found


CASES = [pytest.param(cell, *variant, id=f"{cell}-{name}")
         for cell in OPTIONS for name, variant in variants(cell).items()]


def layer_args(cell, options, training, dtype=torch.float64,
               sizes=(BATCH_SIZES, INPUT, HIDDEN)):
    """(input, batch_sizes, states, params, scalars) of the layer operator for ``cell`` with
    ``options`` on: params w_ih, w_hh, b_ih, b_hh, then (LSTM) w_ch, the zoneout masks of h (and
    c), the recurrent mask, None where off; scalars (LSTM) the clip (inf: none) and the zoneout
    probabilities (0 in training, where the masks carry them)."""
    batch_sizes, input_size, hidden = sizes
    gen = torch.Generator().manual_seed(0)

    def randn(*shape):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * 0.5).to(dtype)

    def mask(rows, p):
        return (torch.rand(rows, hidden, generator=gen, dtype=torch.float64) < p).to(dtype)

    lstm = cell == "lstm_ext"
    gates, rows, batch = 4 if lstm else 3, sum(batch_sizes), batch_sizes[0]
    input = randn(rows, input_size)
    states = [randn(batch, hidden) for _ in range(2 if lstm else 1)]
    params = [randn(gates * hidden, input_size), randn(gates * hidden, hidden),
              randn(gates * hidden), randn(gates * hidden)]
    scalars = []
    if lstm:
        params.append(randn(3 * hidden) if "peephole" in options else None)
        scalars.append(CLIP if "cell_clip" in options else math.inf)
    for name, p in (("zoneout", P_H), ("cell_zoneout", P_C))[:2 if lstm else 1]:
        on = name in options
        params.append(mask(rows, p) if on and training else None)
        scalars.append(p if on and not training else 0.0)
    keep = 1 - P_R
    params.append(mask(batch, keep) / keep if "recurrent_dropout" in options and training
                  else None)
    return input, torch.tensor(batch_sizes), states, params, scalars


def reference_layer(cell, input, batch_sizes, states, params, scalars, reverse):
    """The reference of the layer operator's call: output and final states."""
    if cell == "lstm_ext":
        w_ch, mask_h, mask_c, recurrent = params[4:]
        clip, p_h, p_c = scalars
        return reference.lstm_layer(
            input, batch_sizes, *states, *params[:4], None, reverse, w_ch=w_ch,
            cell_clip=None if math.isinf(clip) else clip, zoneout=p_h, cell_zoneout=p_c,
            zoneout_mask=mask_h, cell_zoneout_mask=mask_c, recurrent_mask=recurrent)
    mask_h, recurrent = params[4:]
    return reference.gru_layer(input, batch_sizes, states[0], *params[:4], reverse,
                               zoneout=scalars[0], zoneout_mask=mask_h, recurrent_mask=recurrent)


def differentiable(cell, params):
    """The indices in params of those with a gradient: the weights, biases and peepholes."""
    return [i for i, p in enumerate(params)
            if p is not None and (i < 4 or (cell == "lstm_ext" and i == 4))]


def random_like(tensors, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.dtype)
            for t in tensors]


# ---------------------------------------------------------------------------------------------
# The operators


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell, options, training", CASES)
def test_layer_matches_reference(cell, options, training, reverse, dtype):
    """Output, final states and the gradients of input, the initial states and every param; the
    reference runs in float64 on the very values (masks included) the operator got. A mask gets
    no gradient."""
    input, batch_sizes, states, params, scalars = layer_args(cell, options, training, dtype)
    wanted = differentiable(cell, params)
    leaves = [input.requires_grad_(), *[s.requires_grad_() for s in states],
              *[params[i].requires_grad_() for i in wanted]]
    output, finals, _ = ops.layer(cell, input, batch_sizes, states, params, scalars, reverse,
                                  True)
    exact = [t.detach().double().requires_grad_() for t in leaves]
    exact_params = [None if p is None else p.double() for p in params]
    for index, leaf in zip(wanted, exact[1 + len(states):]):
        exact_params[index] = leaf
    want = reference_layer(cell, exact[0], batch_sizes, exact[1:1 + len(states)], exact_params,
                           scalars, reverse)
    results = [output, *finals]
    assert len(want) == len(results)
    for got, expected in zip(results, want):
        torch.testing.assert_close(got, expected.to(dtype), **FORWARD_TOL[dtype])

    grads = random_like(results)
    got = torch.autograd.grad(results, leaves, grads)
    expected = torch.autograd.grad(want, exact, [g.double() for g in grads])
    for index, (g, e) in enumerate(zip(got, expected)):
        torch.testing.assert_close(g, e.to(dtype), **GRAD_TOL[dtype],
                                   msg=lambda m: f"gradient {index}: {m}")


@pytest.mark.parametrize("cell", OPTIONS)
def test_each_option_changes_the_result(cell):
    """Each option alone, and zoneout in eval, moves the output away from the plain cell's (so
    that the tests above see it work): the clip clips, the masks mask."""
    plain = ops.layer(cell, *layer_args(cell, (), True), False, False)[0]
    for name, (options, training) in variants(cell).items():
        output = ops.layer(cell, *layer_args(cell, options, training), False, False)[0]
        assert (output - plain).abs().max() > 1e-3, name


@pytest.mark.parametrize("cell", OPTIONS)
def test_layer_backward_gives_masks_no_gradient(cell):
    options, training = variants(cell)["all"]
    input, batch_sizes, states, params, scalars = layer_args(cell, options, training)
    output, finals, reserve = ops.layer(cell, input, batch_sizes, states, params, scalars, False,
                                        True)
    grads = random_like([output, *finals])
    _, _, grad_params = ops.layer_backward(cell, grads[0], grads[1:], input, batch_sizes, states,
                                           params, scalars, output, reserve, False)
    for index, (param, grad) in enumerate(zip(params, grad_params)):
        has_grad = index in differentiable(cell, params)
        assert grad.shape == (param.shape if has_grad else (0,)), index


@pytest.mark.parametrize("dtype", [pytest.param(torch.bfloat16, id="bf16"),
                                   pytest.param(torch.float16, id="f16")])
@pytest.mark.parametrize("cell", OPTIONS)
def test_half_types_compute_in_float32(cell, dtype):
    """The half types' forward, float32 math on rounded inputs, against the reference on the
    same rounded values."""
    options, training = variants(cell)["all"]
    input, batch_sizes, states, params, scalars = layer_args(cell, options, training, dtype)
    output, finals, _ = ops.layer(cell, input, batch_sizes, states, params, scalars, False, False)
    want = reference_layer(cell, input.double(), batch_sizes, [s.double() for s in states],
                           [None if p is None else p.double() for p in params], scalars, False)
    for got, expected in zip([output, *finals], want):
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), expected, **FORWARD_TOL[dtype])


GRADCHECK_CASES = [pytest.param(cell, *variants(cell)[name], reverse,
                                id=f"{cell}-{name}-{'rev' if reverse else 'fwd'}")
                   for cell in OPTIONS for name in ("all", "all-eval")
                   for reverse in (False, True)]


@pytest.mark.parametrize("cell, options, training, reverse", GRADCHECK_CASES)
def test_layer_gradcheck_and_gradgradcheck(cell, options, training, reverse):
    """float64, tiny; gradgradcheck differentiates the recomputation (csrc/layer/
    differentiable.h), the clip and the masks included."""
    input, batch_sizes, states, params, scalars = layer_args(cell, options, training,
                                                             sizes=((2, 2, 1), 2, 3))
    wanted = differentiable(cell, params)
    leaves = [input, *states, *[params[i] for i in wanted]]
    for leaf in leaves:
        leaf.requires_grad_()

    def forward(x, *rest):
        layer_states, given = list(rest[:len(states)]), list(params)
        for index, leaf in zip(wanted, rest[len(states):]):
            given[index] = leaf
        output, finals, _ = ops.layer(cell, x, batch_sizes, layer_states, given, scalars,
                                      reverse, True)
        return output, *finals

    assert torch.autograd.gradcheck(forward, leaves)
    assert torch.autograd.gradgradcheck(forward, leaves)


@pytest.mark.parametrize("cell, options, training, reverse", GRADCHECK_CASES)
def test_opcheck_layer_operators(cell, options, training, reverse):
    input, batch_sizes, states, params, scalars = layer_args(cell, options, training,
                                                             torch.float32)
    for index in differentiable(cell, params):
        params[index].requires_grad_()
    for t in [input, *states]:
        t.requires_grad_()
    torch.library.opcheck(ops.layer.default,
                          (cell, input, batch_sizes, states, params, scalars, reverse, True))
    input, states = input.detach(), [s.detach() for s in states]
    params = [None if p is None else p.detach() for p in params]
    output, finals, reserve = ops.layer(cell, input, batch_sizes, states, params, scalars,
                                        reverse, True)
    grads = random_like([output, *finals])
    torch.library.opcheck(ops.layer_backward.default,
                          (cell, grads[0], grads[1:], input, batch_sizes, states, params,
                           scalars, output, reserve, reverse))


def test_cells_reach_python():
    lstm, gru = rnnkernels._ops.CELLS["lstm_ext"], rnnkernels._ops.CELLS["gru_ext"]
    assert (lstm["gates"], lstm["states"], lstm["reserve"], lstm["scalars"]) == (
        4, ["h", "c"], 6, 3)
    assert lstm["params"][4:] == ["w_ch", "zoneout_h", "zoneout_c", "recurrent_mask"]
    assert lstm["without_grad"] == [5, 6, 7]
    assert (gru["gates"], gru["states"], gru["reserve"], gru["scalars"]) == (3, ["h"], 4, 1)
    assert gru["params"][4:] == ["zoneout_h", "recurrent_mask"]
    assert gru["without_grad"] == [4, 5]


def test_layer_checks_the_masks_shapes():
    options, training = variants("lstm_ext")["all"]
    input, batch_sizes, states, params, scalars = layer_args("lstm_ext", options, training)
    for index, name in ((5, "zoneout_h"), (7, "recurrent_mask")):
        bad = list(params)
        bad[index] = params[index][:-1]
        with pytest.raises(RuntimeError, match=f"lstm_ext_layer: expected {name} of shape"):
            ops.layer("lstm_ext", input, batch_sizes, states, bad, scalars, False, True)


# ---------------------------------------------------------------------------------------------
# The modules

ALL_LSTM = dict(peephole=True, cell_clip=CLIP, zoneout=P_H, cell_zoneout=P_C,
                recurrent_dropout=P_R, weight_drop=0.3)
ALL_GRU = dict(zoneout=P_H, recurrent_dropout=P_R, weight_drop=0.3)
CONFIGS = [pytest.param(dict(num_layers=2, bidirectional=True), id="2x-bi"),
           pytest.param(dict(num_layers=3, bias=False, batch_first=True),
                        id="3x-nobias-batch_first")]
INPUTS = ["padded", "packed", "unbatched"]


def make_module(name, dtype=torch.float64, **options):
    torch.manual_seed(0)
    return getattr(rnnkernels, name)(INPUT, HIDDEN, dtype=dtype, **options)


def twin_of(ours):
    """torch.nn's layer of the same class and arguments, with a copy of the parameters it has."""
    twin = getattr(nn, type(ours).__name__)(ours.input_size, ours.hidden_size, ours.num_layers,
                                            ours.bias, ours.batch_first, ours.dropout,
                                            ours.bidirectional, dtype=ours.weight_ih_l0.dtype)
    twin.load_state_dict(ours.state_dict(), strict=False)
    return twin


def make_input(form, ours, dtype):
    """(input, hx) of ``form``: 3 sequences of 5 steps padded, the same packed with lengths 5, 2,
    4 (unsorted), or one sequence without a batch dimension; hx of the layer's shapes."""
    layers = ours.num_layers * (2 if ours.bidirectional else 1)
    input = torch.randn(5, 3, INPUT, dtype=dtype)  # [T, B, I]
    hx = tuple(torch.randn(layers, 3, HIDDEN, dtype=dtype) for _ in range(2))
    if form == "unbatched":
        input, hx = input[:, 0], tuple(h[:, 0] for h in hx)
    elif form == "packed":
        input = pack_padded_sequence(input, torch.tensor([5, 2, 4]), enforce_sorted=False)
    elif ours.batch_first:
        input = input.transpose(0, 1)
    return input, hx if isinstance(ours, nn.LSTM) else hx[0]


def leaves_of(input, hx):
    data = input.data if isinstance(input, PackedSequence) else input
    states = list(hx) if isinstance(hx, tuple) else [hx]
    return [t.requires_grad_() for t in [data, *states]]


def flat(result):
    output, hidden = result
    output = output.data if isinstance(output, PackedSequence) else output
    return [output, *(hidden if isinstance(hidden, tuple) else [hidden])]


def weighted_grads(results, weights, leaves):
    """d(sum_k <results[k], weights[k]>)/d(leaves), keeping the graph (ours and the oracle may
    share a part of it, the packing of the input)."""
    loss = sum((r * w).sum() for r, w in zip(results, weights))
    return torch.autograd.grad(loss, leaves, retain_graph=True, allow_unused=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("form", INPUTS)
@pytest.mark.parametrize("config", CONFIGS)
def test_lstm_ext_with_no_op_options_matches_torch_nn(config, form, dtype, assert_close):
    """Peepholes of 0 and a clip no cell reaches: the cell lstm_ext computes torch.nn's LSTM
    (outputs, final states, the gradients of input, states and every parameter of torch.nn's)."""
    ours = make_module("LSTM", dtype, peephole=True, cell_clip=1e6, **config)
    with torch.no_grad():
        for name in ours._peephole_names():
            getattr(ours, name).zero_()
    twin = twin_of(ours)
    input, hx = make_input(form, ours, dtype)
    leaves = leaves_of(input, hx)
    got, want = ours(input, hx), twin(input, hx)
    assert type(got[0]) is type(want[0])
    assert_close(flat(got), flat(want))
    weights = random_like(flat(want))
    names = [name for name, _ in twin.named_parameters()]
    mine = [getattr(ours, name) for name in names]
    assert_close(weighted_grads(flat(got), weights, leaves + mine),
                 weighted_grads(flat(want), weights, leaves + list(twin.parameters())))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONFIGS)
def test_gru_ext_with_no_options_matches_torch_nn(config, dtype, assert_close):
    """functional.gru_ext with no mask and a zoneout probability of 0 computes torch.nn's GRU."""
    ours = make_module("GRU", dtype, **config)
    twin = twin_of(ours)
    input, hx = make_input("padded", ours, dtype)
    leaves = leaves_of(input, hx)
    layers = ours.num_layers * (2 if ours.bidirectional else 1)
    got = functional.gru_ext(input, hx, ours._flat_weights, [(None, None)] * layers, [0.0],
                             **ours._options())
    want = twin(input, hx)
    assert_close(flat(got), flat(want))
    weights = random_like(flat(want))
    assert_close(weighted_grads(flat(got), weights, leaves + list(ours.parameters())),
                 weighted_grads(flat(want), weights, leaves + list(twin.parameters())))


def reference_run(module, input, hx, monkeypatch):
    """``module``'s call with the reference in place of the operators: its ONNX export's path
    (modules.py), which draws the same weight drop, masks and dropout between layers from torch's
    default generator."""
    with monkeypatch.context() as patch:
        patch.setattr(rnnkernels.modules, "_exporting_to_onnx", lambda: True)
        return module(input, hx)


@pytest.mark.parametrize("form", ["padded", "packed"])
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("name, options", [("LSTM", ALL_LSTM), ("GRU", ALL_GRU)])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_module_matches_reference(name, options, config, form, training, monkeypatch,
                                  assert_close):
    """Every option at once, with dropout between layers: in training the same masks (the same
    generator state) on both sides, in eval zoneout's expectation; outputs, final states and the
    gradients of input, states and every parameter, peepholes included."""
    ours = make_module(name, **options, dropout=0.2, **config).train(training)
    input, hx = make_input(form, ours, torch.float64)
    leaves = leaves_of(input, hx) + list(ours.parameters())
    torch.manual_seed(3)
    got = ours(input, hx)
    torch.manual_seed(3)
    want = reference_run(ours, input, hx, monkeypatch)
    assert type(got[0]) is type(want[0])
    assert_close(flat(got), flat(want))
    weights = random_like(flat(want))
    assert_close(weighted_grads(flat(got), weights, leaves),
                 weighted_grads(flat(want), weights, leaves))
    if not training:
        assert_close(flat(ours(input, hx)), flat(got))


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_training_masks_change_with_the_seed(name):
    """In training the result depends on the generator's state (the masks are drawn), and a
    seed reproduces it."""
    ours = make_module(name, **(ALL_LSTM if name == "LSTM" else ALL_GRU))
    input, hx = make_input("padded", ours, torch.float64)
    results = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        results.append(flat(ours(input, hx))[0])
    assert torch.equal(results[0], results[1])
    assert not torch.allclose(results[0], results[2])


def test_eval_zoneout_is_the_expectation_of_one_step(assert_close):
    """One step in eval: h_1 = p h_0 + (1 - p) h~ and c_1 = p_c c_0 + (1 - p_c) c~, with h~, c~
    torch.nn's step."""
    ours = make_module("LSTM", zoneout=P_H, cell_zoneout=P_C).eval()
    twin = twin_of(ours)
    input, (h0, c0) = make_input("padded", ours, torch.float64)
    input = input[:1]
    _, (h1, c1) = ours(input, (h0, c0))
    _, (h_new, c_new) = twin(input, (h0, c0))
    assert_close([h1, c1], [P_H * h0 + (1 - P_H) * h_new, P_C * c0 + (1 - P_C) * c_new])

    gru = make_module("GRU", zoneout=P_H).eval()
    input, h0 = make_input("padded", gru, torch.float64)
    assert_close(gru(input[:1], h0)[1], P_H * h0 + (1 - P_H) * twin_of(gru)(input[:1], h0)[1])


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_zoneout_of_one_keeps_the_initial_state(name, assert_close):
    """In training a probability of 1 keeps every state at its initial value."""
    options = dict(zoneout=1.0, cell_zoneout=1.0) if name == "LSTM" else dict(zoneout=1.0)
    ours = make_module(name, num_layers=2, **options)
    input, hx = make_input("padded", ours, torch.float64)
    output, hidden = ours(input, hx)
    h0 = hx[0] if name == "LSTM" else hx
    assert_close(output, h0[-1].expand_as(output))
    assert_close(hidden, hx)


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_masks_have_their_probabilities(name):
    """Zoneout masks are 1 with probability p, the recurrent mask 1 / (1 - p) with probability
    1 - p (else 0): one row per packed row, one per sequence."""
    ours = make_module(name, num_layers=2, bidirectional=True, zoneout=P_H, recurrent_dropout=P_R)
    input, h0 = torch.zeros(400, 50, INPUT, dtype=torch.float64), torch.zeros(4, 50, HIDDEN)
    masks = ours._masks(input, h0, None, (P_H,))
    assert len(masks) == 4
    for zoneout, recurrent in masks:
        assert zoneout.shape == (400 * 50, HIDDEN) and recurrent.shape == (50, HIDDEN)
        assert set(zoneout.unique().tolist()) == {0.0, 1.0}
        assert abs(zoneout.mean().item() - P_H) < 0.01
        assert set(recurrent.unique().tolist()) == {0.0, 1 / (1 - P_R)}
        assert abs((recurrent > 0).double().mean().item() - (1 - P_R)) < 0.1
    assert ours.eval()._masks(input, h0, None, (P_H,)) == [(None, None)] * 4


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_weight_drop_is_torch_nn_with_a_dropped_weight_hh(name, assert_close):
    """Weight drop alone runs the plain cell on weight_hh through F.dropout (one mask per weight
    and call): torch.nn's layer given those weights, with gradients to the raw weights; in eval
    torch.nn's layer itself."""
    ours = make_module(name, num_layers=2, weight_drop=0.5)
    twin = twin_of(ours)
    input, hx = make_input("padded", ours, torch.float64)
    leaves = list(ours.parameters())
    torch.manual_seed(4)
    got = ours(input, hx)
    torch.manual_seed(4)
    dropped = {n: F.dropout(p, 0.5) if n.startswith("weight_hh") else p
               for n, p in ours.named_parameters()}
    want = torch.func.functional_call(twin, dropped, (input, hx))
    assert_close(flat(got), flat(want))
    weights = random_like(flat(want))
    assert_close(weighted_grads(flat(got), weights, leaves),
                 weighted_grads(flat(want), weights, leaves))
    ours.eval()
    assert_close(flat(ours(input, hx)), flat(twin(input, hx)))


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_recurrent_dropout_is_the_identity_in_eval(name, assert_close):
    ours = make_module(name, num_layers=2, recurrent_dropout=0.5).eval()
    input, hx = make_input("packed", ours, torch.float64)
    assert_close(flat(ours(input, hx)), flat(twin_of(ours)(input, hx)))


def exported_targets(module, args):
    with warnings.catch_warnings():
        # RNNBase reassigns _flat_weights in forward, which export warns about.
        warnings.filterwarnings("ignore", message=".*were assigned during export.*")
        program = torch.export.export(module, args)
    return program, {str(node.target) for node in program.graph.nodes
                     if node.op == "call_function"}


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_options_off_leave_torch_nn_s_layer(name):
    """Off (the defaults, and weight_drop in eval): torch.nn's state_dict, repr and the plain
    operator; on: the extended cell's."""
    torch.manual_seed(0)
    plain = getattr(rnnkernels, name)(INPUT, HIDDEN, num_layers=2, bidirectional=True)
    twin = getattr(nn, name)(INPUT, HIDDEN, num_layers=2, bidirectional=True)
    assert list(plain.state_dict()) == list(twin.state_dict())
    assert repr(plain) == repr(twin)
    x = torch.randn(4, 2, INPUT)
    _, targets = exported_targets(plain, (x,))
    assert f"rnnkernels.{name.lower()}.default" in targets
    dropped = getattr(rnnkernels, name)(INPUT, HIDDEN, weight_drop=0.5).eval()
    _, targets = exported_targets(dropped, (x,))
    assert f"rnnkernels.{name.lower()}.default" in targets
    zoned = getattr(rnnkernels, name)(INPUT, HIDDEN, zoneout=0.1).eval()
    _, targets = exported_targets(zoned, (x,))
    assert "rnnkernels.stacked.default" in targets


def test_peephole_parameters_are_named_as_torch_nn_names_directions():
    ours = rnnkernels.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, peephole=True)
    twin = nn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True)
    names = list(ours.state_dict())
    assert names[:len(twin.state_dict())] == list(twin.state_dict())
    assert names[len(twin.state_dict()):] == ["weight_ch_l0", "weight_ch_l0_reverse",
                                              "weight_ch_l1", "weight_ch_l1_reverse"]
    bound = HIDDEN**-0.5
    for name in names[len(twin.state_dict()):]:
        weight = getattr(ours, name)
        assert weight.shape == (3 * HIDDEN,) and 0 < weight.abs().max() <= bound
    copy = rnnkernels.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True, peephole=True)
    copy.load_state_dict(ours.state_dict())
    x = torch.randn(4, 2, INPUT)
    assert torch.equal(copy(x)[0], ours(x)[0])


def test_repr_names_the_options_that_are_on():
    ours = rnnkernels.LSTM(INPUT, HIDDEN, peephole=True, cell_clip=3, zoneout=0.1)
    assert repr(ours) == "LSTM(3, 5, peephole=True, cell_clip=3.0, zoneout=0.1)"
    assert repr(rnnkernels.GRU(INPUT, HIDDEN, weight_drop=0.5)) == "GRU(3, 5, weight_drop=0.5)"


@pytest.mark.parametrize("name, options", [("LSTM", dict(peephole=True, cell_clip=CLIP,
                                                         zoneout=P_H, cell_zoneout=P_C)),
                                           ("GRU", dict(zoneout=P_H))])
def test_torch_compile_fullgraph_and_export(name, options, assert_close):
    """In eval (deterministic): torch.compile with allow_rnn (the layers are torch.nn's classes)
    traces the stacked operator, forward and backward; torch.export holds it."""
    ours = make_module(name, torch.float32, num_layers=2, bidirectional=True, batch_first=True,
                       **options).eval()
    torch._dynamo.reset()
    x = torch.randn(3, 6, INPUT, requires_grad=True)
    with torch._dynamo.config.patch(allow_rnn=True):
        compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")
        actual = compiled(x)
    expected = ours(x)
    assert_close(flat(actual), flat(expected))
    weights = random_like(flat(expected))
    leaves = [x, *ours.parameters()]
    assert_close(weighted_grads(flat(actual), weights, leaves),
                 weighted_grads(flat(expected), weights, leaves))
    program, targets = exported_targets(ours, (x.detach(),))
    assert "rnnkernels.stacked.default" in targets
    assert_close(flat(program.module()(x.detach())), flat(ours(x.detach())))


@pytest.mark.parametrize("cell", OPTIONS)
def test_opcheck_stacked(cell):
    """The stacked operator with the cells' own params, an absent one an empty tensor."""
    torch.manual_seed(0)
    module = rnnkernels.LSTM(INPUT, HIDDEN) if cell == "lstm_ext" else rnnkernels.GRU(INPUT,
                                                                                     HIDDEN)
    input = torch.randn(4, 2, INPUT, requires_grad=True)
    states = [torch.randn(1, 2, HIDDEN, requires_grad=True)
              for _ in range(2 if cell == "lstm_ext" else 1)]
    own = [torch.rand(8, HIDDEN).round(), torch.empty(0)]
    scalars = [0.0]
    if cell == "lstm_ext":
        own = [torch.randn(3 * HIDDEN, requires_grad=True), own[0], torch.empty(0),
               torch.rand(2, HIDDEN).round() * 2]
        scalars = [0.5, 0.0, 0.3]
    weights = [w.detach().requires_grad_() for w in module._flat_weights] + own
    torch.library.opcheck(ops.stacked.default, (cell, input, None, states, weights, scalars,
                                                True, 1, 0.0, False, False, False))


def test_bad_options_raise():
    with pytest.raises(ValueError, match="do not combine with proj_size"):
        rnnkernels.LSTM(INPUT, HIDDEN, proj_size=2, peephole=True)
    rnnkernels.LSTM(INPUT, HIDDEN, proj_size=2, weight_drop=0.5)
    with pytest.raises(ValueError, match=r"GRU: zoneout must be a probability in \[0, 1\], "
                                         r"got 1.5"):
        rnnkernels.GRU(INPUT, HIDDEN, zoneout=1.5)
    with pytest.raises(ValueError, match=r"LSTM: recurrent_dropout must be a probability in "
                                         r"\[0, 1\), got 1"):
        rnnkernels.LSTM(INPUT, HIDDEN, recurrent_dropout=1)
    with pytest.raises(ValueError, match="weight_drop must be a probability"):
        rnnkernels.GRU(INPUT, HIDDEN, weight_drop=-0.1)
    with pytest.raises(ValueError, match="LSTM: cell_clip must be a positive number or None, "
                                         "got 0"):
        rnnkernels.LSTM(INPUT, HIDDEN, cell_clip=0)
