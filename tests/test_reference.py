"""Sanity of the oracle itself: rnnkernels.reference against torch.nn's single-layer modules.

A bidirectional torch.nn module over a PackedSequence of unequal lengths runs both directions of
one layer on exactly the packed rows the reference takes, so it checks the reference's gate math,
bias placement, projection, and how sequences leave (forward) and join (reverse) the batch.
"""

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

from rnnkernels import reference

LENGTHS = (5, 4, 4, 2, 1)  # sorted, as pack_sequence(enforce_sorted=True) needs
INPUT_SIZE, HIDDEN_SIZE = 3, 5


def module_params():
    params = []
    for bias in (True, False):
        tag = "bias" if bias else "nobias"
        params += [
            pytest.param("lstm", dict(bias=bias), id=f"lstm-{tag}"),
            pytest.param("lstm", dict(bias=bias, proj_size=2), id=f"lstm-proj2-{tag}"),
            pytest.param("gru", dict(bias=bias), id=f"gru-{tag}"),
            pytest.param("rnn", dict(bias=bias, nonlinearity="tanh"), id=f"rnn_tanh-{tag}"),
            pytest.param("rnn", dict(bias=bias, nonlinearity="relu"), id=f"rnn_relu-{tag}"),
        ]
    return params


def run_reference(kind, module, packed, h0, c0, suffix, reverse):
    def p(name):
        return getattr(module, f"{name}_l0{suffix}", None)

    args = (packed.data, packed.batch_sizes)
    if kind == "lstm":
        return reference.lstm_layer(*args, h0, c0, p("weight_ih"), p("weight_hh"), p("bias_ih"),
                                    p("bias_hh"), p("weight_hr"), reverse)
    if kind == "gru":
        return reference.gru_layer(*args, h0, p("weight_ih"), p("weight_hh"), p("bias_ih"),
                                   p("bias_hh"), reverse)
    return reference.rnn_layer(*args, h0, p("weight_ih"), p("weight_hh"), p("bias_ih"),
                               p("bias_hh"), module.nonlinearity, reverse)


@pytest.mark.parametrize("kind, options", module_params())
def test_reference_matches_torch_nn(kind, options):
    torch.manual_seed(0)
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind]
    module = cls(INPUT_SIZE, HIDDEN_SIZE, bidirectional=True, dtype=torch.float64, **options)
    state_size = options.get("proj_size", 0) or HIDDEN_SIZE
    packed = pack_sequence([torch.randn(n, INPUT_SIZE, dtype=torch.float64) for n in LENGTHS])
    h0 = torch.randn(2, len(LENGTHS), state_size, dtype=torch.float64)
    c0 = torch.randn(2, len(LENGTHS), HIDDEN_SIZE, dtype=torch.float64)
    with torch.no_grad():
        expected, state = module(packed, (h0, c0) if kind == "lstm" else h0)
        states = state if kind == "lstm" else (state,)
        for direction, (suffix, reverse) in enumerate((("", False), ("_reverse", True))):
            got = run_reference(kind, module, packed, h0[direction], c0[direction], suffix,
                                reverse)
            want_output = expected.data[:, direction * state_size : (direction + 1) * state_size]
            # Both sides are float64 with the same operations in a different grouping.
            torch.testing.assert_close(got[0], want_output, rtol=1e-10, atol=1e-12)
            for got_state, want_state in zip(got[1:], states):
                torch.testing.assert_close(got_state, want_state[direction], rtol=1e-10,
                                           atol=1e-12)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize(
    "options",
    [pytest.param(dict(num_layers=2, bidirectional=True, proj_size=2), id="L2-bidir-proj2"),
     pytest.param(dict(num_layers=3, batch_first=True, bias=False), id="L3-batch_first-nobias")],
)
def test_multi_layer_lstm_reference_matches_torch_nn(options, packed):
    """reference.lstm, the layer loop ONNX export runs for a projected LSTM, against torch.nn's
    multi-layer LSTM (padded and packed input, initial states given)."""
    torch.manual_seed(0)
    module = torch.nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, dtype=torch.float64, **options)
    layers = options["num_layers"] * (2 if options.get("bidirectional") else 1)
    state_size = options.get("proj_size", 0) or HIDDEN_SIZE
    h0 = torch.randn(layers, len(LENGTHS), state_size, dtype=torch.float64)
    c0 = torch.randn(layers, len(LENGTHS), HIDDEN_SIZE, dtype=torch.float64)
    sequences = [torch.randn(n, INPUT_SIZE, dtype=torch.float64) for n in LENGTHS]
    kwargs = {k: v for k, v in options.items() if k != "proj_size"}
    if packed:
        kwargs.pop("batch_first", None)
        data = pack_sequence(sequences)
        x, batch_sizes = data.data, data.batch_sizes
    else:
        data = torch.nn.utils.rnn.pad_sequence(sequences, batch_first=options.get("batch_first",
                                                                                  False))
        x, batch_sizes = data, None
    with torch.no_grad():
        expected, (h_n, c_n) = module(data, (h0, c0))
        got, (got_h, got_c) = reference.lstm(x, (h0, c0), module._flat_weights,
                                             batch_sizes=batch_sizes, **kwargs)
    want = expected.data if packed else expected
    for g, w in ((got, want), (got_h, h_n), (got_c, c_n)):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
