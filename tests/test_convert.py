"""rnnkernels.convert: every torch.nn RNN/LSTM/GRU and cell in a model becomes rnnkernels' twin,
holding the very same Parameter objects, in the same mode, device and dtype; the model computes
the same, and trains the same."""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkernels

TWINS = {
    nn.LSTM: rnnkernels.LSTM,
    nn.GRU: rnnkernels.GRU,
    nn.RNN: rnnkernels.RNN,
    nn.LSTMCell: rnnkernels.LSTMCell,
    nn.GRUCell: rnnkernels.GRUCell,
    nn.RNNCell: rnnkernels.RNNCell,
}


class Inner(nn.Module):
    """A custom module holding recurrent layers directly and in a ModuleDict."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(6, 4, nonlinearity="relu", batch_first=True, bias=False)
        self.by_name = nn.ModuleDict({"tanh": nn.RNN(6, 3, num_layers=2, bidirectional=True)})

    def forward(self, x):
        return torch.cat([self.rnn(x.transpose(0, 1))[0].transpose(0, 1),
                          self.by_name["tanh"](x)[0]], -1)


class Zoo(nn.Module):
    """Every recurrent class, nested at several depths (custom modules, Sequential,
    ModuleList, ModuleDict), beside ordinary layers."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(5, 7, num_layers=2, bidirectional=True, proj_size=3)
        self.stack = nn.Sequential(nn.Linear(6, 6), nn.Sequential(nn.GRU(6, 6, num_layers=2)))
        self.cells = nn.ModuleList([nn.LSTMCell(5, 3), nn.GRUCell(5, 3),
                                    nn.RNNCell(5, 3, nonlinearity="relu")])
        self.inner = Inner()
        self.head = nn.Linear(6 + 10 + 6 + 3, 2)

    def forward(self, x):
        """x [T, B, 5] -> [T, B, 2]."""
        lstm_out, _ = self.lstm(x)
        gru_out, _ = self.stack[1][0](self.stack[0](lstm_out))
        h, c = None, None
        cell_outputs = []
        for step in x:
            h, c = self.cells[0](step, None if h is None else (h, c))
            cell_outputs.append(h + self.cells[1](step) + self.cells[2](step))
        features = [gru_out, self.inner(lstm_out), lstm_out, torch.stack(cell_outputs)]
        return self.head(torch.cat(features, -1))


def _recurrent_modules(model):
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, tuple(TWINS) + tuple(TWINS.values()))]


def test_convert_replaces_every_nested_recurrent_module(assert_close):
    model = Zoo().double()
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    expected = model(x)
    expected.sum().backward()
    expected_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    before = [(n, type(m)) for n, m in _recurrent_modules(model)]
    parameters = dict(model.named_parameters())

    assert rnnkernels.convert(model) is model
    after = [(n, type(m)) for n, m in _recurrent_modules(model)]
    assert len(before) == 7
    assert after == [(n, TWINS[cls]) for n, cls in before]
    converted = dict(model.named_parameters())
    assert list(converted) == list(parameters)
    assert all(converted[n] is p for n, p in parameters.items())

    actual = model(x)
    assert_close(actual, expected)
    actual.sum().backward()
    assert_close({n: p.grad for n, p in model.named_parameters()}, expected_grads)


CLASSES = [
    pytest.param(nn.LSTM, (5, 7), dict(num_layers=2, proj_size=3, batch_first=True),
                 id="LSTM"),
    pytest.param(nn.GRU, (5, 7), dict(bidirectional=True, bias=False), id="GRU"),
    pytest.param(nn.RNN, (5, 7), dict(nonlinearity="relu", num_layers=3, dropout=0.5),
                 id="RNN-relu"),
    pytest.param(nn.RNN, (5, 7), {}, id="RNN-tanh"),
    pytest.param(nn.LSTMCell, (5, 7), {}, id="LSTMCell"),
    pytest.param(nn.GRUCell, (5, 7), dict(bias=False), id="GRUCell"),
    pytest.param(nn.RNNCell, (5, 7), dict(nonlinearity="relu"), id="RNNCell-relu"),
]


@pytest.mark.parametrize("cls, args, kwargs", CLASSES)
def test_convert_the_model_itself(cls, args, kwargs, assert_close):
    module = cls(*args, **kwargs).eval()
    x = torch.randn((3, 5) if "Cell" in cls.__name__ else (4, 3, 5))
    expected = module(x)
    converted = rnnkernels.convert(module)
    assert type(converted) is TWINS[cls]
    assert repr(converted) == repr(module)
    for (n, p), (m, q) in zip(module.named_parameters(), converted.named_parameters()):
        assert n == m and p is q
    assert converted.state_dict().keys() == module.state_dict().keys()
    assert_close(converted(x), expected)
    assert rnnkernels.convert(converted) is converted  # already ours: nothing to do


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(
    "device",
    ["cpu", "meta",
     pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                   reason="needs a GPU"))],
)
def test_convert_keeps_training_mode_device_and_dtype(device, dtype):
    model = Zoo().to(device=device, dtype=dtype)
    model.train()
    model.lstm.eval()
    model.cells[1].eval()
    modes = {n: m.training for n, m in _recurrent_modules(model)}
    rnnkernels.convert(model)
    assert {n: m.training for n, m in _recurrent_modules(model)} == modes
    assert not model.lstm.training and model.cells[0].training
    for name, module in _recurrent_modules(model):
        assert type(module) in TWINS.values(), name
        for parameter in module.parameters():
            assert parameter.device.type == device and parameter.dtype == dtype, name
        if isinstance(module, nn.RNNBase):
            assert all(w.device.type == device and w.dtype == dtype
                       for w in module._flat_weights), name


def test_convert_leaves_subclasses_alone():
    """A subclass of a torch.nn recurrent class may have its own forward: convert keeps it."""

    class Doubling(nn.GRU):
        def forward(self, input, hx=None):
            output, hidden = super().forward(input, hx)
            return 2 * output, hidden

    model = nn.Sequential(Doubling(5, 7))
    rnnkernels.convert(model)
    assert type(model[0]) is Doubling


# ---------------------------------------------------------------------------------------------
# Training: the acceptance test. A small tagger trained with Adam and gradient clipping
# must follow the same loss curve with torch.nn's layers and with converted ones.


class Tagger(nn.Module):
    def __init__(self, kind, vocabulary=50, classes=7):
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, 16)
        recurrent = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = recurrent(16, 24, num_layers=2, batch_first=True)
        self.head = nn.Linear(24, classes)

    def forward(self, tokens, lengths=None):
        """tokens [B, T] -> logits [B, T, classes]; ``lengths``: run packed
        (enforce_sorted=False), padding positions then give zero features."""
        features = self.embedding(tokens)
        if lengths is None:
            output, _ = self.rnn(features)
        else:
            packed = pack_padded_sequence(features, lengths, batch_first=True,
                                          enforce_sorted=False)
            output, _ = self.rnn(packed)
            output, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True,
                                                         total_length=tokens.shape[1])
        return self.head(output)


def _train(kind, convert, packed, steps=30):
    """Losses of ``steps`` Adam steps from seed 0; ``convert``: None (plain torch.nn), or when to
    convert: "before_optimizer" or "after_optimizer" (the optimizer then holds the Parameters
    that convert hands over)."""
    torch.manual_seed(0)
    model = Tagger(kind)
    data = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 50, (8, 12), generator=data)
    targets = torch.randint(0, 7, (8, 12), generator=data)
    lengths = torch.tensor([12, 5, 9, 12, 3, 7, 11, 8]) if packed else None
    if convert == "before_optimizer":
        model = rnnkernels.convert(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    if convert == "after_optimizer":
        model = rnnkernels.convert(model)
    assert isinstance(model.rnn, rnnkernels.LSTM if kind == "lstm" else rnnkernels.GRU) == bool(
        convert)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(tokens, lengths).flatten(0, 1),
                                           targets.flatten())
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        losses.append(loss.item())
    return torch.tensor(losses, dtype=torch.float64)


@pytest.mark.parametrize(
    "kind, convert, packed",
    [pytest.param("lstm", "before_optimizer", False, id="lstm-padded"),
     pytest.param("gru", "before_optimizer", False, id="gru-padded"),
     pytest.param("lstm", "after_optimizer", True, id="lstm-packed-converted_after_optimizer")],
)
def test_training_loop_follows_torch_nn(kind, convert, packed):
    """30 steps of Adam with clip_grad_norm_: the loss at every step within 1e-3 (relative) of
    torch.nn's. Float32 rounding differences compound through the updates, hence 1e-3, far
    below the loss changes of the run itself."""
    expected = _train(kind, None, packed)
    actual = _train(kind, convert, packed)
    assert expected[-1] < 0.8 * expected[0], "the reference run does not train"
    relative = ((actual - expected).abs() / expected.abs()).max().item()
    assert relative < 1e-3, f"losses {actual.tolist()} vs torch.nn {expected.tolist()}"
