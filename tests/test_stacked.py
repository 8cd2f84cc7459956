"""The multi-layer operators ``torch.ops.rnnkernels.lstm``, ``gru`` and ``rnn``
(csrc/ops/stacked.cpp) against torch.nn's own (``torch._VF.lstm`` & co., the functions torch.nn's
modules call), plus float64 gradcheck, torch.library.opcheck and their argument errors. The
layer operators under them are tested in test_ops.py; the modules over them in test_modules.py."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkernels  # noqa: F401  (importing it registers the operators)

ops = torch.ops.rnnkernels

TOL = {torch.float32: dict(rtol=2e-5, atol=2e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}

# (module, extra constructor arguments)
KINDS = {
    "lstm": (torch.nn.LSTM, {}),
    "lstm_proj": (torch.nn.LSTM, {"proj_size": 2}),
    "gru": (torch.nn.GRU, {}),
    "rnn_tanh": (torch.nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (torch.nn.RNN, {"nonlinearity": "relu"}),
}
CONFIGS = [
    pytest.param(dict(num_layers=2, bidirectional=True, bias=True, batch_first=False), id="2x-bi"),
    pytest.param(dict(num_layers=3, bidirectional=False, bias=False, batch_first=True),
                 id="3x-nobias-batch_first"),
]


def _module(kind, config, dtype):
    cls, extra = KINDS[kind]
    torch.manual_seed(0)
    return cls(3, 4, dtype=dtype, **config, **extra)


def _states(module, batch, dtype):
    directions = 2 if module.bidirectional else 1
    shape = (module.num_layers * directions, batch)
    state = module.proj_size if getattr(module, "proj_size", 0) else module.hidden_size
    h0 = torch.randn(*shape, state, dtype=dtype)
    if isinstance(module, torch.nn.LSTM):
        return h0, torch.randn(*shape, module.hidden_size, dtype=dtype)
    return (h0,)


def _ours(kind, module, input, batch_sizes, states, weights, training=False, dropout=0.0):
    options = (module.bias, module.num_layers, dropout, training, module.bidirectional,
               module.batch_first)
    if kind.startswith("lstm"):
        output, h_n, c_n = ops.lstm(input, batch_sizes, *states, weights, *options)
        return output, h_n, c_n
    if kind == "gru":
        return ops.gru(input, batch_sizes, *states, weights, *options)
    return ops.rnn(input, batch_sizes, *states, weights, module.nonlinearity, *options)


def _torch_nn(kind, module, input, batch_sizes, states, weights):
    options = (module.bias, module.num_layers, 0.0, False, module.bidirectional)
    hx = states if kind.startswith("lstm") else states[0]
    function = {"lstm": torch._VF.lstm, "gru": torch._VF.gru, "rnn_tanh": torch._VF.rnn_tanh,
                "rnn_relu": torch._VF.rnn_relu}[kind.split("_proj")[0]]
    if batch_sizes is not None:
        result = function(input, batch_sizes, hx, weights, *options)
    else:
        result = function(input, hx, weights, *options, module.batch_first)
    return tuple(result)


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_matches_torch_nn(kind, config, packed, dtype):
    module = _module(kind, config, dtype)
    batch = 3
    states = _states(module, batch, dtype)
    shape = (batch, 5, 3) if module.batch_first else (5, batch, 3)
    input = torch.randn(*shape, dtype=dtype)
    weights = module._flat_weights
    batch_sizes = None
    if packed:
        packed_input = pack_padded_sequence(input, torch.tensor([5, 4, 2]),
                                            batch_first=module.batch_first)
        input, batch_sizes = packed_input.data, packed_input.batch_sizes
    ours = _ours(kind, module, input, batch_sizes, states, weights)
    expected = _torch_nn(kind, module, input, batch_sizes, states, weights)
    assert len(ours) == len(expected)
    for a, b in zip(ours, expected):
        torch.testing.assert_close(a, b, **TOL[dtype])


@pytest.mark.parametrize("kind", list(KINDS))
def test_gradcheck(kind):
    module = _module(kind, dict(num_layers=2, bidirectional=True, bias=True, batch_first=False),
                     torch.float64)
    states = [s.requires_grad_() for s in _states(module, 2, torch.float64)]
    input = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    weights = [w.detach().requires_grad_() for w in module._flat_weights]

    count = len(states)

    def forward(input, *tensors):
        return _ours(kind, module, input, None, tensors[:count], list(tensors[count:]))

    assert torch.autograd.gradcheck(forward, (input, *states, *weights), fast_mode=True)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_relu"])
def test_opcheck(kind):
    module = _module(kind, dict(num_layers=2, bidirectional=True, bias=True, batch_first=True),
                     torch.float32)
    states = [s.requires_grad_() for s in _states(module, 2, torch.float32)]
    input = torch.randn(2, 3, 3, requires_grad=True)
    weights = [w.detach().requires_grad_() for w in module._flat_weights]
    options = [True, 2, 0.0, False, True, True]
    if kind == "lstm":
        torch.library.opcheck(ops.lstm.default, (input, None, *states, weights, *options))
    elif kind == "gru":
        torch.library.opcheck(ops.gru.default, (input, None, *states, weights, *options))
    else:
        torch.library.opcheck(ops.rnn.default, (input, None, *states, weights, "relu", *options))


def test_dropout_between_layers_only_in_training():
    module = _module("gru", dict(num_layers=2, bidirectional=False, bias=True, batch_first=False),
                     torch.float32)
    input = torch.randn(4, 2, 3)
    states = _states(module, 2, torch.float32)
    weights = module._flat_weights
    evaluation = _ours("gru", module, input, None, states, weights, training=False, dropout=0.5)
    expected = _torch_nn("gru", module, input, None, states, weights)
    torch.testing.assert_close(evaluation[0], expected[0])
    torch.manual_seed(1)
    trained = _ours("gru", module, input, None, states, weights, training=True, dropout=0.5)
    torch.manual_seed(1)
    reference = torch._VF.gru(input, states[0], weights, True, 2, 0.5, True, False, False)
    torch.testing.assert_close(trained[0], reference[0])
    assert not torch.allclose(trained[0], evaluation[0])


def test_empty_batch_gives_torch_nn_shapes_and_a_graph():
    module = _module("lstm", dict(num_layers=2, bidirectional=True, bias=True, batch_first=False),
                     torch.float32)
    input = torch.randn(4, 0, 3, requires_grad=True)
    states = _states(module, 0, torch.float32)
    output, h_n, c_n = _ours("lstm", module, input, None, states, module._flat_weights)
    assert output.shape == (4, 0, 8) and h_n.shape == (4, 0, 4) and c_n.shape == (4, 0, 4)
    assert output.requires_grad


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_wrong_number_of_weights_is_named(kind):
    module = _module(kind, dict(num_layers=2, bidirectional=False, bias=True, batch_first=False),
                     torch.float32)
    states = _states(module, 2, torch.float32)
    with pytest.raises(RuntimeError, match=r"expected 8 weights \(4 per layer and direction\), "
                                           r"got 7"):
        _ours(kind, module, torch.randn(3, 2, 3), None, states, module._flat_weights[:7])


def test_unpacked_input_must_be_3d():
    module = _module("gru", dict(num_layers=1, bidirectional=False, bias=True, batch_first=False),
                     torch.float32)
    with pytest.raises(RuntimeError, match="gru: expected input to be 3-D .* got 2-D"):
        _ours("gru", module, torch.randn(3, 3), None, _states(module, 3, torch.float32),
              module._flat_weights)


def test_empty_sequence_raises_torch_nn_message():
    module = _module("rnn_tanh", dict(num_layers=1, bidirectional=False, bias=True,
                                      batch_first=False), torch.float32)
    with pytest.raises(RuntimeError, match="Expected sequence length to be larger than 0 in RNN"):
        _ours("rnn_tanh", module, torch.randn(0, 2, 3), None, _states(module, 2, torch.float32),
              module._flat_weights)


def test_num_layers_must_be_positive():
    module = _module("gru", dict(num_layers=1, bidirectional=False, bias=True, batch_first=False),
                     torch.float32)
    module.num_layers = 0
    with pytest.raises(RuntimeError, match="gru: expected num_layers >= 1, got 0"):
        _ours("gru", module, torch.randn(2, 2, 3), None, _states(module, 2, torch.float32)[:1],
              [])
