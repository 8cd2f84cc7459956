"""Plain PyTorch references of the layer operators (and a multi-layer LSTM and IndRNN): the test
oracle, and what ONNX export runs where ONNX has no operator (an LSTM with a projection,
IndRNN). Double backward does not come here: it differentiates the layer recomputed in ATen, in
C++ (csrc/layer/differentiable.h).

Same arguments as ``torch.ops.rnnkernels.*_layer`` (less ``train``), same packed layout:

- ``input`` ``[N, I]``: time-major packed rows, step ``t`` owns the ``batch_sizes[t]`` rows
  after those of the steps before it, as in :class:`torch.nn.utils.rnn.PackedSequence`;
- ``batch_sizes`` ``[T]``: int64 on the CPU, non-increasing;
- ``h0`` ``[B, P]``, ``c0`` ``[B, H]``; ``w_ih`` ``[G*H, I]``, ``w_hh`` ``[G*H, P]`` (IndRNN's
  ``[H]``), ``b_ih``/``b_hh`` ``[G*H]`` or None, ``w_hr`` ``[P, H]`` or None; gate order as torch.nn.

Each returns ``output`` ``[N, P]`` and the final states (``[B, P]``, ``[B, H]``): a sequence's
final state is the one after its own last step. ``reverse`` runs from the last step to the first;
a sequence then starts from the initial state at its own last step.
"""

import torch
import torch.nn.functional as F


def _steps(batch_sizes, reverse):
    """(offset, rows) of every step, in the order the direction visits them; ``batch_sizes`` a
    tensor or a list of ints."""
    sizes = [int(s) for s in (batch_sizes.tolist() if torch.is_tensor(batch_sizes)
                              else batch_sizes)]
    offsets = [0]
    for size in sizes[:-1]:
        offsets.append(offsets[-1] + size)
    steps = list(zip(offsets, sizes))
    return steps[::-1] if reverse else steps


def _scan(input, batch_sizes, states, reverse, cell):
    """Runs ``cell(x_rows, [state[:rows] ...]) -> (out_rows, [new_state_rows ...])`` over the
    steps; inactive rows keep their state. Returns the packed output and the final states."""
    outputs = {}
    for offset, rows in _steps(batch_sizes, reverse):
        out, new = cell(input[offset : offset + rows], [s[:rows] for s in states])
        states = [torch.cat([n, s[rows:]]) for n, s in zip(new, states)]
        outputs[offset] = out
    output = torch.cat([outputs[k] for k in sorted(outputs)])
    return output, states


def lstm_layer(input, batch_sizes, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None,
               reverse=False):
    """Returns ``output [N, P], h_n [B, P], c_n [B, H]``."""

    def cell(x, state):
        h, c = state
        gates = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        if w_hr is not None:
            h = h @ w_hr.t()
        return h, [h, c]

    output, (h_n, c_n) = _scan(input, batch_sizes, [h0, c0], reverse, cell)
    return output, h_n, c_n


def gru_layer(input, batch_sizes, h0, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False):
    """Returns ``output [N, H], h_n [B, H]``."""

    def cell(x, state):
        (h,) = state
        xr, xz, xn = F.linear(x, w_ih, b_ih).chunk(3, 1)
        hr, hz, hn = F.linear(h, w_hh, b_hh).chunk(3, 1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h = (1 - z) * n + z * h
        return h, [h]

    output, (h_n,) = _scan(input, batch_sizes, [h0], reverse, cell)
    return output, h_n


def _activated_scan(input, batch_sizes, h0, w_ih, b_ih, recurrent, nonlinearity, reverse):
    """``h_t = act(x W_ih^T + b_ih + recurrent(h_{t-1}))``, ``act`` tanh or relu, the Elman RNN's
    and IndRNN's step. Returns ``output [N, H], h_n [B, H]``."""
    activation = {"tanh": torch.tanh, "relu": torch.relu}[nonlinearity]

    def cell(x, state):
        (h,) = state
        h = activation(F.linear(x, w_ih, b_ih) + recurrent(h))
        return h, [h]

    output, (h_n,) = _scan(input, batch_sizes, [h0], reverse, cell)
    return output, h_n


def rnn_layer(input, batch_sizes, h0, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh",
              reverse=False):
    """Returns ``output [N, H], h_n [B, H]``; ``nonlinearity`` is ``"tanh"`` or ``"relu"``."""
    return _activated_scan(input, batch_sizes, h0, w_ih, b_ih,
                           lambda h: F.linear(h, w_hh, b_hh), nonlinearity, reverse)


def indrnn_layer(input, batch_sizes, h0, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="relu",
                 reverse=False):
    """IndRNN (Li et al. 2018), ``h_t = act(x W_ih^T + b_ih + w_hh * h_{t-1} + b_hh)`` with
    ``w_hh`` ``[H]``, one recurrent weight per unit. Returns ``output [N, H], h_n [B, H]``;
    ``nonlinearity`` is ``"relu"`` or ``"tanh"``."""

    def recurrent(h):
        return w_hh * h if b_hh is None else w_hh * h + b_hh

    return _activated_scan(input, batch_sizes, h0, w_ih, b_ih, recurrent, nonlinearity, reverse)


# ---------------------------------------------------------------------------------------------
# Multi-layer forms, with the arguments and results of rnnkernels.functional's.


def _stack(layer, input, states, weights, bias, num_layers, dropout, training, bidirectional,
           batch_first, batch_sizes, projected=False):
    """Runs ``layer(rows, batch_sizes, states, params, reverse) -> (out, new_states)`` over layers
    and directions as torch.nn does, with dropout between layers; ``states`` are ``[L*D, B, *]``.
    A padded input's step sizes are a list of ints, so that tracing sees no tensor contents."""
    directions = 2 if bidirectional else 1
    per_layer = 2 + (2 if bias else 0) + (1 if projected else 0)
    if batch_sizes is None:
        if batch_first:
            input = input.transpose(0, 1)
        steps, batch = input.shape[0], input.shape[1]
        rows, sizes = input.reshape(steps * batch, input.shape[2]), [batch] * steps
    else:
        rows, sizes = input, batch_sizes
    finals = [[] for _ in states]
    for index in range(num_layers):
        outputs = []
        for direction in range(directions):
            k = index * directions + direction
            params = list(weights[k * per_layer:(k + 1) * per_layer])
            w_ih, w_hh = params[:2]
            b_ih, b_hh = params[2:4] if bias else (None, None)
            w_hr = params[-1] if projected else None
            out, new = layer(rows, sizes, [s[k] for s in states], (w_ih, w_hh, b_ih, b_hh, w_hr),
                             direction == 1)
            outputs.append(out)
            for final, state in zip(finals, new):
                final.append(state)
        rows = torch.cat(outputs, 1)
        if dropout > 0 and training and index + 1 < num_layers:
            rows = F.dropout(rows, dropout)
    if batch_sizes is None:
        rows = rows.view(steps, batch, rows.shape[1])
        if batch_first:
            rows = rows.transpose(0, 1)
    return rows, [torch.stack(final) for final in finals]


def lstm(input, hx, weights, bias=True, num_layers=1, dropout=0.0, training=False,
         bidirectional=False, batch_first=False, batch_sizes=None):
    """Multi-layer LSTM as ``rnnkernels.functional.lstm``. Returns ``(output, (h_n, c_n))``."""
    directions = 2 if bidirectional else 1
    projected = len(weights) == num_layers * directions * (2 + (2 if bias else 0) + 1)

    def layer(rows, sizes, states, params, reverse):
        w_ih, w_hh, b_ih, b_hh, w_hr = params
        out, h_n, c_n = lstm_layer(rows, sizes, states[0], states[1], w_ih, w_hh, b_ih, b_hh,
                                   w_hr, reverse)
        return out, [h_n, c_n]

    output, (h_n, c_n) = _stack(layer, input, list(hx), weights, bias, num_layers, dropout,
                                training, bidirectional, batch_first, batch_sizes, projected)
    return output, (h_n, c_n)


def indrnn(input, hx, weights, nonlinearity="relu", bias=True, num_layers=1, dropout=0.0,
           training=False, bidirectional=False, batch_first=False, batch_sizes=None):
    """Multi-layer IndRNN as ``rnnkernels.functional.indrnn``. Returns ``(output, h_n)``."""

    def layer(rows, sizes, states, params, reverse):
        w_ih, w_hh, b_ih, b_hh, _ = params
        out, h_n = indrnn_layer(rows, sizes, states[0], w_ih, w_hh, b_ih, b_hh, nonlinearity,
                                reverse)
        return out, [h_n]

    output, (h_n,) = _stack(layer, input, [hx], weights, bias, num_layers, dropout, training,
                            bidirectional, batch_first, batch_sizes)
    return output, h_n
