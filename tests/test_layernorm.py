"""The layer-normalised LSTM and GRU: the cells ``layernorm_lstm`` and ``layernorm_gru`` of the
generic operators and the modules ``rnnkernels.LayerNormLSTM`` and ``rnnkernels.LayerNormGRU``.

Two independent oracles: ``rnnkernels.reference`` (a PyTorch loop over F.layer_norm) for the
operators and the modules, and a model built here from torch.nn pieces (nn.Linear projections and
nn.LayerNorm norms holding the module's very parameters, stepped one sequence at a time). Also
float64 gradcheck and gradgradcheck, opcheck, dropout, zoneout, parameters and their
initialisation, checkpoints, torch.compile, torch.export, autocast, ONNX export, and errors. The
emulated CUDA kernels are checked against the CPU path in test_cuda_emulation.py."""

import io

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

import rnnkernels
from rnnkernels import reference

ops = torch.ops.rnnkernels

CELLS = ["layernorm_lstm", "layernorm_gru"]
MODULES = {"layernorm_lstm": "LayerNormLSTM", "layernorm_gru": "LayerNormGRU"}
GATES = {"layernorm_lstm": 4, "layernorm_gru": 3}
LAYERS = {"layernorm_lstm": reference.layernorm_lstm_layer,
          "layernorm_gru": reference.layernorm_gru_layer}
INPUT, HIDDEN, BATCH_SIZES = 3, 5, (4, 3, 3, 1)
DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(torch.float64, id="f64")]
# The operator against the reference in float64, (results, gradients): the statistics are reduced
# in another order (the CPU driver's vector lanes against ATen's layer norm), the gradients sum
# over rows and steps and collect more rounding.
TOLERANCES = {torch.float32: (dict(rtol=2e-5, atol=2e-5), dict(rtol=5e-5, atol=5e-5)),
              torch.float64: (dict(rtol=1e-12, atol=1e-12), dict(rtol=1e-11, atol=1e-11))}
# The modules against their oracles, both in the module's dtype: conftest's TOLERANCES but for
# float32, where a norm's backward subtracts its row's means (a cancellation) that three stacked
# layers compound. Measured against float64 on the 3-layer configuration, the gradients of both
# float32 implementations (ours, ATen's) were off by up to 1e-3 (values up to 34), either one
# the closer depending on the random draw; the math itself is checked in float64, at 1e-10.
MODULE_TOLERANCES = {torch.float32: dict(rtol=1e-3, atol=1e-3),
                     torch.float64: dict(rtol=1e-10, atol=1e-10)}


# Zoneout's probabilities, h's and the LSTM's c's, in the operator tests; the forms of its
# arguments: off (no masks, probabilities 0), in training (masks of 0 and 1, scalars 0), in eval
# (no masks, the probabilities).
ZONEOUTS = (0.3, 0.5)
ZONEOUT_FORMS = [pytest.param(None, id="nozoneout"), pytest.param("train", id="zoneout-train"),
                 pytest.param("eval", id="zoneout-eval")]


def is_lstm(cell):
    return cell == "layernorm_lstm"


def state_count(cell):
    """The cell's states, each with its zoneout mask and probability."""
    return 2 if is_lstm(cell) else 1


def layer_args(cell, dtype=torch.float64, bias=True, sizes=(BATCH_SIZES, INPUT, HIDDEN),
               zoneout=None):
    """(input, batch_sizes, states, params) of the generic layer operator: params w_ih, w_hh,
    b_ih, b_hh (None without bias), the gains ln_w_ih, ln_w_hh [G*H] and for the LSTM ln_w_c,
    ln_b_c [H]; the gains around 1, not at it, so that a gain read at the wrong place shows; then
    the zoneout masks [N, H] (h's, the LSTM's c's) of the form ``zoneout`` (ZONEOUT_FORMS), 1
    with probability ZONEOUTS, None but in training."""
    batch_sizes, input_size, hidden = sizes
    gates = GATES[cell] * hidden
    gen = torch.Generator().manual_seed(0)

    def randn(*shape, mean=0.0):
        return (mean + torch.randn(*shape, generator=gen, dtype=torch.float64) * 0.5).to(dtype)

    states = [randn(batch_sizes[0], hidden) for _ in range(2 if is_lstm(cell) else 1)]
    params = [randn(gates, input_size), randn(gates, hidden), randn(gates) if bias else None,
              randn(gates) if bias else None, randn(gates, mean=1.0), randn(gates, mean=1.0)]
    if is_lstm(cell):
        params += [randn(hidden, mean=1.0), randn(hidden)]
    rows = sum(batch_sizes)
    params += [(torch.rand(rows, hidden, generator=gen, dtype=torch.float64) < p).to(dtype)
               if zoneout == "train" else None for p in ZONEOUTS[:state_count(cell)]]
    return randn(rows, input_size), torch.tensor(batch_sizes), states, params


def zoneout_scalars(cell, zoneout=None):
    """The operator's scalars for the zoneout form ``zoneout``: the probabilities in eval, else
    0s."""
    return [p if zoneout == "eval" else 0.0 for p in ZONEOUTS[:state_count(cell)]]


def reference_zoneout(cell, zoneout, masks):
    """The reference layer's zoneout keywords for the form ``zoneout`` and the operator's
    ``masks``."""
    if zoneout is None:
        return {}
    names = ("zoneout", "cell_zoneout")[:state_count(cell)]
    mask_names = ("zoneout_mask", "cell_zoneout_mask")
    return {**dict(zip(names, ZONEOUTS)), **dict(zip(mask_names, masks))}


def run_layer(cell, input, batch_sizes, states, params, reverse, zoneout=None):
    """The generic operator's output and final states, as one list."""
    output, finals, _ = ops.layer(cell, input, batch_sizes, states, params,
                                  zoneout_scalars(cell, zoneout), reverse, True)
    return [output, *finals]


# ---------------------------------------------------------------------------------------------
# The operators


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("zoneout", ZONEOUT_FORMS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell", CELLS)
def test_layer_matches_reference(cell, reverse, bias, zoneout, dtype, layer_checks):
    """Output, final states and the gradients of input, initial states and every param (the
    zoneout masks have none); the reference runs in float64 on the very values the operator
    got."""
    input, batch_sizes, states, params = layer_args(cell, dtype, bias, zoneout=zoneout)
    masks = params[-state_count(cell):]
    tensors = [input, *states, *params[:-state_count(cell)]]
    leaves = [t.requires_grad_() for t in tensors if t is not None]
    got = run_layer(cell, input, batch_sizes, states, params, reverse, zoneout)
    exact = [t.detach().double().requires_grad_() for t in leaves]
    values = iter(exact)
    args = [next(values) if t is not None else None for t in tensors]
    out, *finals = LAYERS[cell](args[0], batch_sizes, *args[1:], reverse=reverse,
                                **reference_zoneout(cell, zoneout,
                                                    [m if m is None else m.double()
                                                     for m in masks]))
    want = [out, *finals]
    for index, (g, w) in enumerate(zip(got, want)):
        torch.testing.assert_close(g, w.to(dtype), **TOLERANCES[dtype][0],
                                   msg=lambda m: f"result {index}: {m}")

    grads = layer_checks.random_like(got)
    got_grads = torch.autograd.grad(got, leaves, grads)
    want_grads = torch.autograd.grad(want, exact, [g.double() for g in grads])
    for index, (g, w) in enumerate(zip(got_grads, want_grads)):
        torch.testing.assert_close(g, w.to(dtype), **TOLERANCES[dtype][1],
                                   msg=lambda m: f"gradient {index}: {m}")


@pytest.mark.parametrize("zoneout", ZONEOUT_FORMS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell", CELLS)
def test_layer_gradcheck_and_gradgradcheck(cell, reverse, zoneout, monkeypatch):
    """float64, tiny: gradgradcheck differentiates the recomputation in C++ (csrc/layer/
    differentiable.h), numerically, element by element; the Python reference stays out of
    reach. The zoneout masks are constants."""

    def unreachable(*args, **kwargs):
        raise AssertionError("the Python reference was called")

    monkeypatch.setattr(reference, "layernorm_lstm_layer", unreachable)
    monkeypatch.setattr(reference, "layernorm_gru_layer", unreachable)
    input, batch_sizes, states, params = layer_args(cell, sizes=((2, 2, 1), 2, 3),
                                                    zoneout=zoneout)
    masks = params[-state_count(cell):]
    leaves = [t.requires_grad_() for t in [input, *states, *params[:-state_count(cell)]]]
    count = len(states)

    def forward(x, *rest):
        return tuple(run_layer(cell, x, batch_sizes, list(rest[:count]),
                               [*rest[count:], *masks], reverse, zoneout))

    assert torch.autograd.gradcheck(forward, leaves)
    assert torch.autograd.gradgradcheck(forward, leaves)


@pytest.mark.parametrize("zoneout", ZONEOUT_FORMS)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("cell", CELLS)
def test_opcheck_layer_operators(cell, reverse, zoneout, layer_checks):
    layer_checks.opcheck_layer(cell, *layer_args(cell, torch.float32, zoneout=zoneout), reverse,
                               zoneout_scalars(cell, zoneout))


@pytest.mark.parametrize("cell", CELLS)
def test_opcheck_stacked(cell):
    module = make_module(MODULES[cell], torch.float32, num_layers=2, bidirectional=True,
                         batch_first=True)
    input = torch.randn(2, 4, INPUT, requires_grad=True)
    states = [torch.randn(4, 2, HIDDEN, requires_grad=True)
              for _ in range(2 if is_lstm(cell) else 1)]
    weights = [w.detach().requires_grad_() for w in module._flat_weights]
    torch.library.opcheck(ops.stacked.default,
                          (cell, input, None, states, weights, zoneout_scalars(cell), True, 2,
                           0.0, False, True, True))


def test_cells_reach_python():
    lstm, gru = (rnnkernels._ops.CELLS[cell] for cell in CELLS)
    assert (lstm["gates"], lstm["states"], lstm["reserve"]) == (4, ["h", "c"], 17)
    assert lstm["params"] == ["w_ih", "w_hh", "b_ih", "b_hh", "ln_w_ih", "ln_w_hh", "ln_w_c",
                              "ln_b_c", "zoneout_h", "zoneout_c"]
    assert (gru["gates"], gru["states"], gru["reserve"]) == (3, ["h"], 12)
    assert gru["params"] == ["w_ih", "w_hh", "b_ih", "b_hh", "ln_w_ih", "ln_w_hh", "zoneout_h"]


@pytest.mark.parametrize("cell", CELLS)
def test_inference_saves_nothing_and_gives_the_same_results(cell):
    input, batch_sizes, states, params = layer_args(cell)
    scalars = zoneout_scalars(cell)
    trained = ops.layer(cell, input, batch_sizes, states, params, scalars, False, True)
    inferred = ops.layer(cell, input, batch_sizes, states, params, scalars, False, False)
    assert trained[2].shape == (input.shape[0], rnnkernels._ops.CELLS[cell]["reserve"] * HIDDEN)
    assert inferred[2].shape == (0, trained[2].shape[1])
    for got, want in zip([inferred[0], *inferred[1]], [trained[0], *trained[1]]):
        assert torch.equal(got, want)


# ---------------------------------------------------------------------------------------------
# The modules


def make_module(name, dtype=torch.float64, **options):
    """The module, its norms' parameters moved off their initial 1 and 0 (a gain read as another
    or a shift left out then shows)."""
    torch.manual_seed(0)
    module = getattr(rnnkernels, name)(INPUT, HIDDEN, dtype=dtype, **options)
    with torch.no_grad():
        for param_name, param in module.named_parameters():
            if param_name.startswith("layer_norm_"):
                param.add_(torch.randn_like(param) * 0.3)
    return module


def torch_nn_step(ours, suffix):
    """The step of ``ours``' layer and direction ``suffix`` from torch.nn pieces holding ours'
    Parameters: nn.Linear projections, nn.LayerNorm norms (the biases as the gate norms'
    shifts), and the cell's equations. ``step(x [1, I], state) -> (h [1, H], state)``."""
    lstm = isinstance(ours, rnnkernels.LayerNormLSTM)
    hidden, width = ours.hidden_size, (4 if lstm else 3) * ours.hidden_size
    param = {name.removesuffix(suffix): p for name, p in ours.named_parameters()
             if name.endswith(suffix)}

    def linear(weight):
        module = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        module.weight = weight
        return module

    def layer_norm(size, gain, shift):
        module = nn.LayerNorm(size, bias=shift is not None)
        module.weight = gain
        if shift is not None:
            module.bias = shift
        return module

    ih, hh = linear(param["weight_ih"]), linear(param["weight_hh"])
    norm_ih = layer_norm(width, param["layer_norm_ih_weight"], param.get("bias_ih"))
    norm_hh = layer_norm(width, param["layer_norm_hh_weight"], param.get("bias_hh"))
    if lstm:
        norm_c = layer_norm(hidden, param["layer_norm_c_weight"], param["layer_norm_c_bias"])

        def step(x, state):
            h, c = state
            i, f, g, o = (norm_ih(ih(x)) + norm_hh(hh(h))).unflatten(-1, (4, hidden)).unbind(-2)
            c = torch.addcmul(f.sigmoid() * c, i.sigmoid(), g.tanh())
            h = o.sigmoid() * norm_c(c).tanh()
            return h, (h, c)
    else:

        def step(x, h):
            gi, gh = norm_ih(ih(x)), norm_hh(hh(h))
            r, z = (gi[:, :2 * hidden] + gh[:, :2 * hidden]).sigmoid().chunk(2, -1)
            h = torch.lerp(torch.tanh(gi[:, 2 * hidden:] + r * gh[:, 2 * hidden:]), h, z)
            return h, h
    return step


def torch_nn_model(ours, input, hx):
    """``ours(input, hx)`` computed by the torch.nn pieces of torch_nn_step, one sequence at a
    time (a reverse direction runs the sequence backwards over its own length), results in ours'
    layout (PackedSequence, padded, unbatched)."""
    lstm = isinstance(ours, rnnkernels.LayerNormLSTM)
    directions = 2 if ours.bidirectional else 1
    batch_dim = 0 if ours.batch_first else 1
    packed = isinstance(input, PackedSequence)
    unbatched = not packed and input.dim() == 2
    if packed:
        padded, lengths = pad_packed_sequence(input, ours.batch_first)
        lengths = lengths.tolist()
    elif unbatched:
        padded, lengths = input.unsqueeze(batch_dim), [input.shape[0]]
    else:
        padded, lengths = input, [input.shape[1 - batch_dim]] * input.shape[batch_dim]
    steps = padded.transpose(0, 1) if ours.batch_first else padded  # [T, B, I]
    batch = steps.shape[1]
    if hx is None:
        zeros = steps.new_zeros(ours.num_layers * directions, batch, ours.hidden_size)
        hx = (zeros, zeros) if lstm else zeros
    elif unbatched:
        hx = tuple(s.unsqueeze(1) for s in hx) if lstm else hx.unsqueeze(1)
    outputs, finals = [], []
    for b in range(batch):
        layer_input, sequence_finals = steps[:lengths[b], b], []
        for layer in range(ours.num_layers):
            results = []
            for direction in range(directions):
                index = layer * directions + direction
                step = torch_nn_step(ours, f"_l{layer}" + ("_reverse" if direction else ""))
                state = tuple(s[index, b:b + 1] for s in hx) if lstm else hx[index, b:b + 1]
                xs = layer_input.flip(0) if direction else layer_input
                hs = []
                for x in xs:
                    h, state = step(x.unsqueeze(0), state)
                    hs.append(h)
                hs = torch.cat(hs)
                results.append(hs.flip(0) if direction else hs)
                sequence_finals.append(state)
            layer_input = torch.cat(results, 1)
        outputs.append(layer_input)
        finals.append(sequence_finals)
    # Padded to the longest sequence, then into ours' layout.
    width = max(lengths)
    output = torch.stack([torch.cat([o, o.new_zeros(width - o.shape[0], o.shape[1])])
                          for o in outputs], 1)
    if ours.batch_first:
        output = output.transpose(0, 1)

    def stacked(j):
        return torch.stack([torch.cat([f[j] if lstm else f for f in fs]) for fs in finals], 1)

    hidden = (stacked(0), stacked(1)) if lstm else stacked(0)
    if packed:
        output = pack_padded_sequence(output, torch.tensor(lengths), ours.batch_first,
                                      enforce_sorted=False)
    elif unbatched:
        output = output.squeeze(batch_dim)
        hidden = tuple(s.squeeze(1) for s in hidden) if lstm else hidden.squeeze(1)
    return output, hidden


CONFIGS = [
    pytest.param(dict(num_layers=2, bidirectional=True), id="2x-bi"),
    pytest.param(dict(num_layers=3, bias=False, batch_first=True), id="3x-nobias-batch_first"),
]


def hx_leaves(hx):
    if hx is None:
        return []
    states = hx if isinstance(hx, tuple) else (hx,)
    return [s.requires_grad_() for s in states]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("name", MODULES.values())
def test_module_matches_torch_nn_pieces(name, config, input_form, dtype, layer_checks):
    """Outputs, final states and the gradients of the input, the initial states and every
    parameter; padded input from the default (zero) state, packed (unsorted) and unbatched input
    from a given one."""
    ours = make_module(name, dtype, **config)
    input, hx = layer_checks.layer_input(input_form, ours, dtype, with_hx=input_form != "padded")
    data = input.data if isinstance(input, PackedSequence) else input
    leaves = [data.requires_grad_(), *hx_leaves(hx), *ours.parameters()]
    got, want = ours(input, hx), torch_nn_model(ours, input, hx)
    assert type(got[0]) is type(want[0])
    layer_checks.results_and_grads_close(got, want, leaves, MODULE_TOLERANCES)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("cell", CELLS)
def test_module_matches_reference(cell, config, dtype, layer_checks):
    """Padded and packed (sorted, so the reference takes the batch as it is) input."""
    ours = make_module(MODULES[cell], dtype, **config)
    forward = getattr(reference, cell)
    options = dict(bias=ours.bias, num_layers=ours.num_layers, bidirectional=ours.bidirectional,
                   batch_first=ours.batch_first)
    padded, hx = layer_checks.layer_input("padded", ours, dtype, with_hx=True)
    leaves = [padded.requires_grad_(), *hx_leaves(hx), *ours.parameters()]
    packed = pack_padded_sequence(padded, torch.tensor([5, 4, 2]), ours.batch_first)
    for input, reference_args in ((padded, (padded, None)),
                                  (packed, (packed.data, packed.batch_sizes))):
        got = ours(input, hx)
        want = forward(reference_args[0], hx, ours._flat_weights, batch_sizes=reference_args[1],
                       **options)
        layer_checks.results_and_grads_close(got, want, leaves, MODULE_TOLERANCES)


@pytest.mark.parametrize("cell", CELLS)
def test_functional_form_is_the_module(cell, layer_checks):
    ours = make_module(MODULES[cell], num_layers=2)
    input, hx = layer_checks.layer_input("padded", ours, torch.float64, with_hx=True)
    got = getattr(rnnkernels.functional, cell)(input, hx, ours._flat_weights, num_layers=2)
    for g, w in zip(layer_checks.flat(*got), layer_checks.flat(*ours(input, hx))):
        assert torch.equal(g, w)


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_between_layers_matches_reference(cell, assert_close, layer_checks):
    """Training with dropout: the same dropout masks (same generator state) as the reference's
    F.dropout between layers, and none in eval mode."""
    ours = make_module(MODULES[cell], num_layers=3, dropout=0.5, bidirectional=True)
    input, hx = layer_checks.layer_input("padded", ours, torch.float64, with_hx=True)
    forward = getattr(reference, cell)
    options = dict(num_layers=3, dropout=0.5, training=True, bidirectional=True)
    torch.manual_seed(1)
    got = ours(input, hx)
    torch.manual_seed(1)
    assert_close(got, forward(input, hx, ours._flat_weights, **options))
    ours.eval()
    evaluated = ours(input, hx)
    assert not torch.allclose(evaluated[0], got[0])
    assert_close(evaluated, forward(input, hx, ours._flat_weights,
                                    **{**options, "training": False}))


# Zoneout of the modules' states: h's, and the LSTM's c's.
ZONEOUT_OPTIONS = {"LayerNormLSTM": dict(zoneout=0.3, cell_zoneout=0.5),
                   "LayerNormGRU": dict(zoneout=0.3)}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("cell", CELLS)
def test_module_zoneout_matches_reference(cell, config, training, layer_checks):
    """Zoneout with dropout between layers, padded and packed input: in training the reference
    given the masks the module draws (the same generator state: the masks, then the dropout),
    in eval the probabilities; outputs, final states and the gradients of input, states and
    every parameter."""
    options = ZONEOUT_OPTIONS[MODULES[cell]]
    ours = make_module(MODULES[cell], dropout=0.3, **options, **config).train(training)
    forward = getattr(reference, cell)
    reference_options = dict(bias=ours.bias, num_layers=ours.num_layers, dropout=0.3,
                             training=training, bidirectional=ours.bidirectional,
                             batch_first=ours.batch_first, **options)
    padded, hx = layer_checks.layer_input("padded", ours, torch.float64, with_hx=True)
    leaves = [padded.requires_grad_(), *hx_leaves(hx), *ours.parameters()]
    packed = pack_padded_sequence(padded, torch.tensor([5, 4, 2]), ours.batch_first)
    for input, rows, batch_sizes in ((padded, padded, None),
                                     (packed, packed.data, packed.batch_sizes)):
        torch.manual_seed(3)
        got = ours(input, hx)
        torch.manual_seed(3)
        masks = [ours._zoneout_masks(rows, batch_sizes, list(options.values()))
                 for _ in range(ours._layer_count())]
        assert all((m is not None) == training for layer in masks for m in layer)
        want = forward(rows, hx, ours._flat_weights, batch_sizes=batch_sizes,
                       extras=masks if training else None, **reference_options)
        layer_checks.results_and_grads_close(got, want, leaves, MODULE_TOLERANCES)


@pytest.mark.parametrize("name", MODULES.values())
def test_training_zoneout_is_reproducible_under_manual_seed(name, layer_checks):
    """In training the result depends on the default generator's state (the masks are drawn),
    and a seed reproduces it."""
    ours = make_module(name, **ZONEOUT_OPTIONS[name])
    input, hx = layer_checks.layer_input("padded", ours, torch.float64, with_hx=True)
    results = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        results.append(layer_checks.flat(*ours(input, hx)))
    assert all(torch.equal(a, b) for a, b in zip(results[0], results[1]))
    assert not torch.allclose(results[0][0], results[2][0])


@pytest.mark.parametrize("name", MODULES.values())
def test_zoneout_of_one_keeps_the_initial_state(name, layer_checks):
    """In training a probability of 1 keeps every state at its initial value, exactly."""
    ours = make_module(name, num_layers=2, **{option: 1.0 for option in ZONEOUT_OPTIONS[name]})
    input, hx = layer_checks.layer_input("padded", ours, torch.float64, with_hx=True)
    output, hidden = ours(input, hx)
    h0 = hx[0] if isinstance(hx, tuple) else hx
    assert torch.equal(output, h0[-1].expand_as(output))
    assert all(torch.equal(got, want) for got, want in zip(layer_checks.flat(None, hidden)[1:],
                                                           layer_checks.flat(None, hx)[1:]))


@pytest.mark.parametrize("name", MODULES.values())
def test_eval_zoneout_is_the_expectation_of_one_step(name, layer_checks, assert_close):
    """One step in eval: each state is p * its initial value + (1 - p) * the new value of the
    same layer without zoneout (h~ = o * tanh(LN(c~)) of the new cell before its zoneout)."""
    options = ZONEOUT_OPTIONS[name]
    ours, plain = make_module(name, **options).eval(), make_module(name).eval()
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), plain.parameters()))
    input, hx = layer_checks.layer_input("padded", ours, torch.float64, with_hx=True)
    initial = layer_checks.flat(None, hx)[1:]
    new = layer_checks.flat(*plain(input[:1], hx))[1:]
    expected = [p * s0 + (1 - p) * s1 for p, s0, s1 in zip(options.values(), initial, new)]
    assert_close(layer_checks.flat(*ours(input[:1], hx))[1:], expected)


def test_zoneout_options_are_keyword_only_checked_and_in_repr():
    with pytest.raises(ValueError, match=r"LayerNormLSTM: cell_zoneout must be a probability in "
                                         r"\[0, 1\], got 1.5"):
        rnnkernels.LayerNormLSTM(INPUT, HIDDEN, cell_zoneout=1.5)
    with pytest.raises(ValueError, match=r"LayerNormGRU: zoneout must be a probability"):
        rnnkernels.LayerNormGRU(INPUT, HIDDEN, zoneout=-0.1)
    with pytest.raises(TypeError, match="cell_zoneout"):
        rnnkernels.LayerNormGRU(INPUT, HIDDEN, cell_zoneout=0.1)
    with pytest.raises(TypeError):
        rnnkernels.LayerNormGRU(INPUT, HIDDEN, 1, True, False, 0.0, False, None, None, 0.3)
    assert repr(rnnkernels.LayerNormLSTM(INPUT, HIDDEN, cell_zoneout=0.25)) == \
        "LayerNormLSTM(3, 5, cell_zoneout=0.25)"
    assert repr(rnnkernels.LayerNormGRU(INPUT, HIDDEN, zoneout=1)) == \
        "LayerNormGRU(3, 5, zoneout=1.0)"


NORMS = {"LayerNormLSTM": {"ih_weight": 4, "hh_weight": 4, "c_weight": 1, "c_bias": 1},
         "LayerNormGRU": {"ih_weight": 3, "hh_weight": 3}}


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("name", MODULES.values())
def test_parameters_are_torch_nn_s_then_the_norms_per_layer(name, bias):
    ours = getattr(rnnkernels, name)(INPUT, HIDDEN, num_layers=2, bias=bias, bidirectional=True)
    torch_nn = getattr(nn, name.removeprefix("LayerNorm"))(INPUT, HIDDEN, num_layers=2, bias=bias,
                                                          bidirectional=True)
    common = 4 if bias else 2
    shapes = [(n, tuple(p.shape)) for n, p in ours.named_parameters()]
    expected = []
    for layer in torch_nn._all_weights:
        expected += [(n, tuple(getattr(torch_nn, n).shape)) for n in layer]
        suffix = layer[0].removeprefix("weight_ih")
        expected += [(f"layer_norm_{norm}{suffix}", (width * HIDDEN,))
                     for norm, width in NORMS[name].items()]
    assert shapes == expected
    assert [n for layer in ours._all_weights for n in layer] == [n for n, _ in shapes]
    assert ours._flat_weights_names == [n for n, _ in shapes]
    assert all(w is getattr(ours, n) for w, n in zip(ours._flat_weights,
                                                      ours._flat_weights_names))
    assert len(ours._all_weights[0]) == common + len(NORMS[name])
    assert isinstance(ours, nn.RNNBase)
    assert not isinstance(ours, (nn.LSTM, nn.GRU, nn.RNN))


@pytest.mark.parametrize("name", MODULES.values())
def test_initialisation(name):
    """Weights and biases uniform(-1/sqrt(H), 1/sqrt(H)) as torch.nn's, the norms' gains 1 and
    shift 0; every parameter on the requested device and dtype."""
    hidden = 64
    ours = getattr(rnnkernels, name)(INPUT, hidden, num_layers=2, dtype=torch.float64)
    bound = hidden**-0.5
    for param_name, param in ours.named_parameters():
        assert param.dtype == torch.float64 and param.device.type == "cpu", param_name
        if param_name.startswith("layer_norm_c_bias"):
            assert torch.equal(param, torch.zeros_like(param)), param_name
        elif param_name.startswith("layer_norm_"):
            assert torch.equal(param, torch.ones_like(param)), param_name
        else:
            assert param.abs().max() <= bound, param_name
            assert param.abs().max() > 0.8 * bound and param.std() > 0.4 * bound, param_name


def test_layer_norm_lstm_takes_no_projection():
    with pytest.raises(TypeError, match="proj_size"):
        rnnkernels.LayerNormLSTM(INPUT, HIDDEN, proj_size=2)


@pytest.mark.parametrize("name", MODULES.values())
def test_repr_state_dict_and_checkpoint_round_trip(name):
    """repr as torch.nn's; a state_dict loads into a new module; a whole-module checkpoint loads
    with torch.load's default weights_only=True (the classes are allowlisted)."""
    ours = make_module(name, torch.float32, num_layers=2, batch_first=True)
    assert repr(ours) == f"{name}(3, 5, num_layers=2, batch_first=True)"
    copy = getattr(rnnkernels, name)(INPUT, HIDDEN, num_layers=2, batch_first=True)
    copy.load_state_dict(ours.state_dict())
    input = torch.randn(2, 4, INPUT)
    assert torch.equal(copy(input)[0], ours(input)[0])
    buffer = io.BytesIO()
    torch.save(ours, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer)
    assert type(loaded) is type(ours)
    assert torch.equal(loaded(input)[0], ours(input)[0])


@pytest.mark.parametrize("name", MODULES.values())
def test_torch_compile_fullgraph(name, layer_checks):
    """No torch.nn.LSTM or GRU, so Dynamo traces it without allow_rnn."""
    ours = make_module(name, torch.float32, num_layers=2, bidirectional=True, batch_first=True)
    layer_checks.torch_compile(ours, torch.randn(3, 6, INPUT, requires_grad=True))


@pytest.mark.parametrize("name", MODULES.values())
def test_torch_compile_and_export_with_zoneout_in_eval(name, layer_checks):
    """Zoneout's eval form (the probabilities as scalars, no masks) traces as the plain layer."""
    options = dict(zoneout=0.3) | (dict(cell_zoneout=0.2) if name == "LayerNormLSTM" else {})
    ours = make_module(name, torch.float32, num_layers=2, **options).eval()
    layer_checks.torch_compile(ours, torch.randn(5, 3, INPUT, requires_grad=True))
    layer_checks.torch_export(ours, torch.randn(5, 3, INPUT))


@pytest.mark.parametrize("name", MODULES.values())
def test_torch_export(name, layer_checks):
    ours = make_module(name, torch.float32, num_layers=2, bidirectional=True)
    layer_checks.torch_export(ours, torch.randn(5, 3, INPUT))


@pytest.mark.parametrize("name", MODULES.values())
def test_autocast_runs_in_the_autocast_dtype(name, layer_checks):
    ours = make_module(name, torch.float32, num_layers=2)
    layer_checks.autocast(ours, *layer_checks.layer_input("padded", ours, torch.float32, True))


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("name", MODULES.values())
def test_onnx_export_runs_the_reference_in_onnxruntime(name, dynamo, layer_checks):
    """ONNX has no layer-normalised LSTM or GRU: the export holds the reference's steps in
    standard operators."""
    ours = make_module(name, torch.float32, num_layers=2, bidirectional=True).eval()
    layer_checks.onnx_export(ours, torch.randn(5, 2, INPUT), dynamo)


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("name", MODULES.values())
def test_bad_input_raises_torch_nn_s_error(name, bad_input, layer_checks):
    """The torch.nn layer of the same kind (an LSTM for LayerNormLSTM, a GRU for LayerNormGRU)
    raises the same exception with the same message."""
    ours = make_module(name, torch.float32)
    twin = getattr(nn, name.removeprefix("LayerNorm"))(INPUT, HIDDEN)
    input, hx = bad_input(ours)
    layer_checks.assert_same_error(lambda: ours(input, hx), lambda: twin(input, hx))


def test_layer_norm_lstm_c0_of_the_wrong_size_raises_torch_nn_s_error(layer_checks):
    ours = make_module("LayerNormLSTM", torch.float32)
    hx = (torch.zeros(1, 2, HIDDEN), torch.zeros(1, 2, HIDDEN + 1))
    input = torch.randn(3, 2, INPUT)
    layer_checks.assert_same_error(lambda: ours(input, hx),
                                   lambda: nn.LSTM(INPUT, HIDDEN)(input, hx))


@pytest.mark.parametrize("name", MODULES.values())
def test_input_of_wrong_rank_is_a_value_error(name):
    ours = make_module(name)
    with pytest.raises(ValueError, match=f"{name}: Expected input to be 2D or 3D, got 4D"):
        ours(torch.randn(2, 2, 2, INPUT, dtype=torch.float64))


@pytest.mark.parametrize("cell", CELLS)
def test_operator_names_a_norm_param_of_the_wrong_shape(cell):
    input, batch_sizes, states, params = layer_args(cell)
    width = GATES[cell] * HIDDEN
    params[4] = params[4][:HIDDEN].contiguous()
    with pytest.raises(RuntimeError, match=rf"{cell}_layer: expected ln_w_ih of shape "
                                           rf"\[{width}\], got \[{HIDDEN}\]"):
        ops.layer(cell, input, batch_sizes, states, params, zoneout_scalars(cell), False, True)


@pytest.mark.parametrize("cell", CELLS)
def test_operator_names_a_norm_param_of_another_dtype(cell):
    input, batch_sizes, states, params = layer_args(cell)
    params[5] = params[5].float()
    with pytest.raises(RuntimeError, match=rf"{cell}_layer: expected ln_w_hh to have dtype "
                                           r"Double \(the dtype of input\), got Float"):
        ops.layer(cell, input, batch_sizes, states, params, zoneout_scalars(cell), False, True)


@pytest.mark.parametrize("cell", CELLS)
def test_stacked_counts_the_norms_params(cell):
    """One weight more than a layer's params (the norms' and the zoneout masks) takes."""
    module = make_module(MODULES[cell])
    extra = len(rnnkernels._ops.CELLS[cell]["params"]) - len(module._flat_weights) + 1
    weights = module._flat_weights + [module._flat_weights[-1]] * extra
    states = [torch.zeros(1, 2, HIDDEN, dtype=torch.float64)] * (2 if is_lstm(cell) else 1)
    with pytest.raises(RuntimeError, match=rf"{cell}: expected 4 weights \(4 per layer and "
                                           rf"direction\), got {len(weights)}"):
        ops.stacked(cell, torch.zeros(3, 2, INPUT, dtype=torch.float64), None, states, weights,
                    zoneout_scalars(cell), True, 1, 0.0, False, False, False)
