"""The generic operators, which take the cell by name (``torch.ops.rnnkernels.layer``,
``layer_backward`` and ``stacked``; csrc/ops/ops.cpp): the per-cell operators are composites of
them, so both forms must give the very same results; their own opcheck; their argument counts;
and double backward, which runs in C++ with no Python hook."""

import pytest
import torch

import rnnkernels
from rnnkernels import _ops

ops = torch.ops.rnnkernels
BATCH_SIZES = (4, 3, 3, 1)
INPUT, HIDDEN, PROJ = 3, 5, 2
# cell name -> (gates, whether it is the LSTM).
CELLS = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def make_args(cell, projected=False, dtype=torch.float64,
              sizes=(BATCH_SIZES, INPUT, HIDDEN, PROJ)):
    """(input, batch_sizes, states, params) of the generic layer operator; sizes: batch sizes,
    input, hidden and projection size."""
    batch_sizes, input_size, hidden, proj = sizes
    gen = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype) * 0.5

    gates, state = CELLS[cell], proj if projected else hidden
    states = [randn(batch_sizes[0], state)]
    params = [randn(gates * hidden, input_size), randn(gates * hidden, state),
              randn(gates * hidden), randn(gates * hidden)]
    if cell == "lstm":
        states.append(randn(batch_sizes[0], hidden))
        params.append(randn(proj, hidden) if projected else None)
    return randn(sum(batch_sizes), input_size), torch.tensor(batch_sizes), states, params


def layer_of_tensors(cell, batch_sizes, states, params, reverse):
    """The generic layer as a function of its tensors alone, for gradcheck: input, then as many
    states as ``states``, then a tensor for each param of ``params`` that is not None."""

    def forward(*tensors):
        values = iter(tensors)
        x = next(values)
        s = [next(values) for _ in states]
        p = [next(values) if t is not None else None for t in params]
        output, finals, _reserve = ops.layer(cell, x, batch_sizes, s, p, [], reverse, True)
        return output, *finals

    return forward


def named_forward(cell, input, batch_sizes, states, params, reverse, train):
    """The per-cell operator's call, results as the generic one gives them."""
    if cell == "lstm":
        output, h_n, c_n, reserve = ops.lstm_layer(input, batch_sizes, *states, *params,
                                                   reverse, train)
        return output, [h_n, c_n], reserve
    if cell == "gru":
        output, h_n, reserve = ops.gru_layer(input, batch_sizes, *states, *params, reverse,
                                             train)
    else:
        output, h_n, reserve = ops.rnn_layer(input, batch_sizes, *states, *params,
                                             cell.split("_")[1], reverse, train)
    return output, [h_n], reserve


CASES = [pytest.param(cell, projected, reverse,
                      id=f"{cell}{'-proj' if projected else ''}-{'rev' if reverse else 'fwd'}")
         for cell in CELLS for projected in ((False, True) if cell == "lstm" else (False,))
         for reverse in (False, True)]


@pytest.mark.parametrize("cell, projected, reverse", CASES)
def test_per_cell_operators_are_the_generic_ones(cell, projected, reverse):
    input, batch_sizes, states, params = make_args(cell, projected)
    generic = ops.layer(cell, input, batch_sizes, states, params, [], reverse, True)
    named = named_forward(cell, input, batch_sizes, states, params, reverse, True)
    assert torch.equal(generic[0], named[0]) and torch.equal(generic[2], named[2])
    assert all(torch.equal(a, b) for a, b in zip(generic[1], named[1]))

    gen = torch.Generator().manual_seed(1)
    grad_output, *grad_finals = (torch.randn(t.shape, generator=gen, dtype=t.dtype)
                                 for t in [generic[0], *generic[1]])
    grad_input, grad_states, grad_params = ops.layer_backward(
        cell, grad_output, grad_finals, input, batch_sizes, states, params, [], generic[0],
        generic[2], reverse)
    if cell == "lstm":
        named_grads = ops.lstm_layer_backward(grad_output, *grad_finals, input, batch_sizes,
                                              *states, *params, generic[0], generic[2], reverse)
    elif cell == "gru":
        named_grads = ops.gru_layer_backward(grad_output, *grad_finals, input, batch_sizes,
                                             *states, *params, generic[0], generic[2], reverse)
    else:
        named_grads = ops.rnn_layer_backward(grad_output, *grad_finals, input, batch_sizes,
                                             *states, *params, cell.split("_")[1], generic[0],
                                             reverse)
    for got, want in zip([grad_input, *grad_states, *grad_params], named_grads):
        assert torch.equal(got, want)


@pytest.mark.parametrize("cell, projected, reverse", CASES)
def test_opcheck_generic_operators(cell, projected, reverse, layer_checks):
    layer_checks.opcheck_layer(cell, *make_args(cell, projected, torch.float32), reverse)


@pytest.mark.parametrize("cell, projected, reverse", CASES)
def test_padded_input_and_layered_states_are_the_rows_form(cell, projected, reverse,
                                                           layer_checks):
    """Input as [T, B, I] (batch_sizes T entries of B) and states as [1, B, *], as the multi-layer
    operators pass a single layer's: the rows form's results in that layout, forward and
    backward, none of them a view (which autograd would forbid changing in place); opcheck."""
    steps, batch = 3, 4
    sizes = ((batch,) * steps, INPUT, HIDDEN, PROJ)
    input, batch_sizes, states, params = make_args(cell, projected, sizes=sizes)
    padded, layered = input.view(steps, batch, INPUT), [s.unsqueeze(0) for s in states]
    want = ops.layer(cell, input, batch_sizes, states, params, [], reverse, True)
    got = ops.layer(cell, padded, batch_sizes, layered, params, [], reverse, True)
    assert got[0].shape == (steps, batch, want[0].shape[1])
    assert torch.equal(got[0].flatten(0, 1), want[0]) and torch.equal(got[2], want[2])
    assert [f.shape for f in got[1]] == [(1, *w.shape) for w in want[1]]
    assert all(torch.equal(f[0], w) for f, w in zip(got[1], want[1]))
    assert not any(t._is_view() for t in [got[0], *got[1]])

    gen = torch.Generator().manual_seed(1)
    grad_output, *grad_finals = (torch.randn(t.shape, generator=gen, dtype=t.dtype)
                                 for t in [want[0], *want[1]])
    want_grads = ops.layer_backward(cell, grad_output, grad_finals, input, batch_sizes, states,
                                    params, [], want[0], want[2], reverse)
    got_grads = ops.layer_backward(cell, grad_output.view(got[0].shape),
                                   [g.unsqueeze(0) for g in grad_finals], padded, batch_sizes,
                                   layered, params, [], got[0], got[2], reverse)
    assert torch.equal(got_grads[0], want_grads[0].view(padded.shape))
    assert all(torch.equal(g, w.unsqueeze(0)) for g, w in zip(got_grads[1], want_grads[1]))
    assert all(torch.equal(g, w) for g, w in zip(got_grads[2], want_grads[2]))
    assert not any(t._is_view() for t in [got_grads[0], *got_grads[1]])

    input, batch_sizes, states, params = make_args(cell, projected, torch.float32, sizes=sizes)
    layer_checks.opcheck_layer(cell, input.view(steps, batch, INPUT), batch_sizes,
                               [s.unsqueeze(0) for s in states], params, reverse)


@pytest.mark.parametrize("cell", CELLS)
def test_padded_layout_gradcheck_and_gradgradcheck(cell):
    """float64 through autograd in the padded layout; gradgradcheck differentiates the C++
    recomputation (csrc/layer/differentiable.h), which gives its results in that layout too."""
    input, batch_sizes, states, params = make_args(cell, projected=cell == "lstm",
                                                   sizes=((2, 2), 2, 2, 1))
    tensors = [input.view(2, 2, 2), *[s.unsqueeze(0) for s in states], *params]
    leaves = [t.clone().requires_grad_() for t in tensors if t is not None]
    forward = layer_of_tensors(cell, batch_sizes, states, params, reverse=False)
    assert torch.autograd.gradcheck(forward, leaves)
    assert torch.autograd.gradgradcheck(forward, leaves)


@pytest.mark.parametrize("cell", CELLS)
def test_stacked_is_the_per_cell_multi_layer_operator(cell):
    gates = CELLS[cell]
    torch.manual_seed(0)
    layers, directions = 2, 2
    weights = []
    for layer in range(layers):
        for _ in range(directions):
            inputs = INPUT if layer == 0 else directions * HIDDEN
            weights += [torch.randn(gates * HIDDEN, inputs), torch.randn(gates * HIDDEN, HIDDEN),
                        torch.randn(gates * HIDDEN), torch.randn(gates * HIDDEN)]
    input = torch.randn(6, 3, INPUT)
    states = [torch.randn(layers * directions, 3, HIDDEN)]
    if cell == "lstm":
        states.append(torch.randn(layers * directions, 3, HIDDEN))
    options = (True, layers, 0.0, False, True, False)
    output, finals = ops.stacked(cell, input, None, states, weights, [], *options)
    if cell == "lstm":
        expected = ops.lstm(input, None, *states, weights, *options)
    elif cell == "gru":
        expected = ops.gru(input, None, *states, weights, *options)
    else:
        expected = ops.rnn(input, None, *states, weights, cell.split("_")[1], *options)
    for got, want in zip([output, *finals], expected):
        assert torch.equal(got, want)


def test_unknown_cell_names_the_known_ones():
    input, batch_sizes, states, params = make_args("gru")
    with pytest.raises(RuntimeError, match="unknown cell 'gru2', expected one of 'lstm', 'gru'"):
        ops.layer("gru2", input, batch_sizes, states, params, [], False, True)


def test_argument_counts_are_checked():
    input, batch_sizes, states, params = make_args("lstm")
    with pytest.raises(RuntimeError, match=r"lstm_layer: expected 2 states \(h0, c0\), got 1"):
        ops.layer("lstm", input, batch_sizes, states[:1], params, [], False, True)
    with pytest.raises(RuntimeError, match=r"expected 5 params \(w_ih, w_hh, b_ih, b_hh, w_hr\)"):
        ops.layer("lstm", input, batch_sizes, states, params[:4], [], False, True)
    with pytest.raises(RuntimeError, match="expected 0 scalars, got 1"):
        ops.layer("lstm", input, batch_sizes, states, params, [0.5], False, True)


def test_cell_signatures_reach_python():
    # The others: test_indrnn.py (IndRNN), test_lstm_options.py (the LSTM's and GRU's options),
    # test_layernorm.py (the layer-normalised cells).
    assert set(_ops.CELLS) == {*CELLS, "indrnn_tanh", "indrnn_relu", "lstm_ext", "gru_ext",
                               "layernorm_lstm", "layernorm_gru"}
    lstm = _ops.CELLS["lstm"]
    assert (lstm["gates"], lstm["states"], lstm["reserve"]) == (4, ["h", "c"], 5)
    assert lstm["params"] == ["w_ih", "w_hh", "b_ih", "b_hh", "w_hr"]


@pytest.mark.parametrize("cell", CELLS)
def test_double_backward_runs_in_cpp(cell, monkeypatch):
    """create_graph=True differentiates the layer recomputed in C++ (csrc/layer/
    differentiable.h): there is no Python hook to install, and gradgradcheck passes with the
    Python reference out of reach."""
    assert not hasattr(rnnkernels._C, "_set_reference_backward")
    assert not hasattr(_ops, "_reference_backward")

    def unreachable(*args, **kwargs):
        raise AssertionError("the Python reference was called")

    for name in ("lstm_layer", "gru_layer", "rnn_layer"):
        monkeypatch.setattr(rnnkernels.reference, name, unreachable)
    # Tiny: gradgradcheck differentiates the recomputation numerically, element by element.
    input, batch_sizes, states, params = make_args(cell, projected=cell == "lstm",
                                                   sizes=((2, 1, 1), 2, 2, 1))
    leaves = [t.requires_grad_() for t in [input, *states, *params] if t is not None]
    forward = layer_of_tensors(cell, batch_sizes, states, params, reverse=True)
    assert torch.autograd.gradgradcheck(forward, leaves)
