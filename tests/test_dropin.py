"""rnnkernels in the programs users run around their layers: initialisation by ``isinstance``,
whole-model checkpoints loaded with torch.nn's classes allowlisted, ONNX export run in
onnxruntime, and the build report (``python -m rnnkernels``).

The models are small reproductions of common patterns, written here: a language model (embedding,
2-layer recurrent layer, decoder) saved whole and loaded the allowlisting way, and a packed,
bidirectional, 2-layer LSTM classifier whose init walks the modules by ``isinstance``.
"""

import io
import re
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkernels

VOCAB, EMBED, HIDDEN = 13, 6, 8
LAYERS = {"LSTM": rnnkernels.LSTM, "GRU": rnnkernels.GRU, "RNN": rnnkernels.RNN}
CELLS = {"LSTMCell": rnnkernels.LSTMCell, "GRUCell": rnnkernels.GRUCell,
         "RNNCell": rnnkernels.RNNCell}


@pytest.mark.parametrize("name", [*LAYERS, *CELLS])
def test_instances_of_the_torch_nn_classes(name):
    ours = getattr(rnnkernels, name)(3, 4)
    assert isinstance(ours, getattr(nn, name))
    assert type(ours) is not getattr(nn, name)


class Classifier(nn.Module):
    """Embedding -> packed, bidirectional, 2-layer LSTM -> linear on both final states."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMBED)
        self.lstm = nn.LSTM(EMBED, HIDDEN, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * HIDDEN, 2)

    def forward(self, tokens, lengths):
        packed = pack_padded_sequence(self.embed(tokens), lengths, batch_first=True,
                                      enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)
        return self.head(torch.cat([h_n[-2], h_n[-1]], 1))


def _init_by_isinstance(model):
    """The init user code writes: orthogonal recurrent weights, zero biases with forget-gate bias
    1, found by isinstance."""
    for module in model.modules():
        if isinstance(module, nn.LSTM):
            for name, param in module.named_parameters():
                if name.startswith("weight_hh"):
                    nn.init.orthogonal_(param)
                elif name.startswith("bias"):
                    nn.init.zeros_(param)
                    param.data[module.hidden_size:2 * module.hidden_size] = 1


def _train(model, steps=4):
    """A few Adam steps on fixed data; returns the losses."""
    gen = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, VOCAB, (6, 9), generator=gen)
    lengths = torch.tensor([9, 3, 7, 1, 9, 5])
    labels = torch.randint(0, 2, (6,), generator=gen)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(tokens, lengths), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_init_by_isinstance_reaches_converted_layers():
    """Converted right after construction, the model's isinstance-driven init still reaches the
    LSTM, so training follows torch.nn's loss for loss."""
    torch.manual_seed(0)
    reference = Classifier()
    ours = rnnkernels.convert(Classifier())
    ours.load_state_dict(reference.state_dict())
    assert isinstance(ours.lstm, rnnkernels.LSTM)
    for model in (reference, ours):
        torch.manual_seed(1)
        _init_by_isinstance(model)
    torch.testing.assert_close(ours.lstm.weight_hh_l1_reverse, reference.lstm.weight_hh_l1_reverse)
    torch.testing.assert_close(_train(ours), _train(reference), rtol=1e-5, atol=1e-6)


class LanguageModel(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMBED)
        self.rnn = layer(EMBED, HIDDEN, num_layers=2)
        self.decoder = nn.Linear(HIDDEN, VOCAB)

    def forward(self, tokens, hidden=None):
        output, hidden = self.rnn(self.embed(tokens), hidden)
        return self.decoder(output), hidden


@pytest.mark.parametrize("name", LAYERS)
def test_whole_model_checkpoint_loads_with_torch_nn_classes_allowlisted(name):
    """torch.save(model) of a converted model, then the loading pattern of programs that trust
    only torch.nn's classes: torch.load (weights_only, the default) under safe_globals. Our
    classes are allowlisted at import, so it loads, as our class, with the same results."""
    torch.manual_seed(0)
    model = rnnkernels.convert(LanguageModel(getattr(nn, name)))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals([LanguageModel, nn.Embedding, nn.Linear,
                                           getattr(nn, name)]):
        loaded = torch.load(buffer)
    assert type(loaded.rnn) is LAYERS[name]
    tokens = torch.randint(0, VOCAB, (5, 3))
    torch.testing.assert_close(loaded(tokens), model(tokens), rtol=0, atol=0)


@pytest.mark.parametrize("name", CELLS)
def test_cell_checkpoint_loads_weights_only(name):
    cell = CELLS[name](EMBED, HIDDEN)
    buffer = io.BytesIO()
    torch.save(cell, buffer)
    buffer.seek(0)
    assert type(torch.load(buffer)) is CELLS[name]


# ---------------------------------------------------------------------------------------------
# ONNX export: the default (dynamo) exporter and the TorchScript one, run in onnxruntime.

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

ONNX_CASES = [
    pytest.param("LSTM", dict(num_layers=2), id="LSTM-L2"),
    pytest.param("LSTM", dict(bidirectional=True, batch_first=True), id="LSTM-bidir-batch_first"),
    pytest.param("LSTM", dict(proj_size=3, num_layers=2), id="LSTM-proj3-L2"),
    pytest.param("GRU", dict(num_layers=2, bidirectional=True), id="GRU-L2-bidir"),
    pytest.param("GRU", dict(batch_first=True, bias=False), id="GRU-batch_first-nobias"),
    pytest.param("RNN", dict(nonlinearity="relu", num_layers=2), id="RNN-relu-L2"),
    pytest.param("RNN", dict(bidirectional=True), id="RNN-tanh-bidir"),
]
STANDARD_DOMAINS = {"", "ai.onnx"}


class WithState(nn.Module):
    """Passes an initial state (hx) to the layer, so that it is a graph input too."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, h0, c0=None):
        return self.layer(x, h0 if c0 is None else (h0, c0))


def _export(model, args, dynamo):
    """The ONNX model torch.onnx.export writes for ``model(*args)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            return torch.onnx.export(model, args, dynamo=True, verbose=False).model_proto
        buffer = io.BytesIO()
        torch.onnx.export(model, args, buffer, dynamo=False)
    return onnx.load_from_string(buffer.getvalue())


def _flat(result):
    if isinstance(result, (tuple, list)):
        return [t for item in result for t in _flat(item)]
    return [result]


def _inputs(name, kwargs, with_state):
    gen = torch.Generator().manual_seed(3)
    steps, batch = 5, 2
    shape = (batch, steps, EMBED) if kwargs.get("batch_first") else (steps, batch, EMBED)
    args = [torch.randn(shape, generator=gen)]
    if with_state:
        layers = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
        args.append(torch.randn(layers, batch, kwargs.get("proj_size") or HIDDEN, generator=gen))
        if name == "LSTM":
            args.append(torch.randn(layers, batch, HIDDEN, generator=gen))
    return tuple(args)


def _op_types(proto):
    return {(node.domain, node.op_type) for node in proto.graph.node}


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("with_state", [False, True], ids=["no_hx", "hx"])
@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("name, kwargs", ONNX_CASES)
def test_onnx_export_runs_in_onnxruntime(name, kwargs, dynamo, with_state):
    """Our layer exports to standard ONNX operators (no custom domain), those torch.nn's export
    gives, and onnxruntime gives eager's results within 1e-5."""
    torch.manual_seed(0)
    reference = getattr(nn, name)(EMBED, HIDDEN, **kwargs).eval()
    ours = getattr(rnnkernels, name)(EMBED, HIDDEN, **kwargs).eval()
    ours.load_state_dict(reference.state_dict())
    args = _inputs(name, kwargs, with_state)
    model = WithState(ours) if with_state else ours
    proto = _export(model, args, dynamo)
    ops = _op_types(proto)
    assert {domain for domain, _ in ops} <= STANDARD_DOMAINS, ops
    if not kwargs.get("proj_size"):
        # torch.nn cannot export a projected LSTM (ONNX's LSTM has none); elsewhere the graph
        # holds the operators torch.nn's export gives.
        theirs = _export(WithState(reference) if with_state else reference, args, dynamo)
        assert ops == _op_types(theirs)
    session = ort.InferenceSession(proto.SerializeToString())
    feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)}
    got = session.run(None, feeds)
    with torch.no_grad():
        want = _flat(model(*args))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(torch.from_numpy(g), w, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("name", CELLS)
def test_onnx_export_of_cells(name, dynamo):
    torch.manual_seed(0)
    cell = CELLS[name](EMBED, HIDDEN).eval()
    x = torch.randn(3, EMBED)
    proto = _export(cell, (x,), dynamo)
    assert {domain for domain, _ in _op_types(proto)} <= STANDARD_DOMAINS
    session = ort.InferenceSession(proto.SerializeToString())
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = _flat(cell(x))
    for g, w in zip(got, want):
        torch.testing.assert_close(torch.from_numpy(g), w, rtol=1e-5, atol=1e-5)


def test_export_leaves_eager_and_torch_export_alone():
    """ONNX export switches the path only while it runs: afterwards (and under torch.export)
    the layer runs our operators."""
    ours = rnnkernels.GRU(EMBED, HIDDEN)
    x = torch.randn(4, 2, EMBED)
    _export(ours, (x,), dynamo=False)
    program = torch.export.export(ours, (x,))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "rnnkernels.gru.default" in targets


def test_build_report():
    """python -m rnnkernels names the torch, oneDNN, CPU instruction set, how the half types'
    GEMMs run and the CUDA targets."""
    out = subprocess.run([sys.executable, "-m", "rnnkernels"], check=True, capture_output=True,
                         text=True).stdout
    info = rnnkernels._ops.BUILD_INFO
    assert f"torch: {torch.__version__}" in out
    assert info["cpu_isa"] in ("AVX512", "AVX2", "default")
    assert f"CPU instruction set: {info['cpu_isa']}" in out
    assert re.fullmatch(r"bfloat16 (native|widened to float32), float16 (native|widened to float32)",
                        info["half_gemms"])
    assert f"CPU GEMMs of the half types: {info['half_gemms']}" in out
    assert ("oneDNN: " + info["onednn"]) in out if info["onednn"] else "oneDNN: none" in out


def test_a_build_without_onednn_warns():
    info = dict(rnnkernels._ops.BUILD_INFO, onednn="")
    with pytest.warns(UserWarning, match="built without oneDNN.*onednn-cpu-gomp"):
        rnnkernels._ops.warn_if_slow_build(info)


def test_import_is_silent_with_onednn():
    """The build CI makes (with oneDNN) imports without a warning."""
    if not rnnkernels._ops.BUILD_INFO["onednn"]:
        pytest.skip("this build has no oneDNN")
    subprocess.run([sys.executable, "-W", "error", "-c", "import rnnkernels"], check=True)
