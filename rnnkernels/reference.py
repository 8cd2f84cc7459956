"""Plain PyTorch references of the layer operators (and multi-layer forms of the LSTM, GRU,
IndRNN and the layer-normalised LSTM and GRU): the test oracle, and what ONNX export runs where
ONNX has no operator (an LSTM with a projection, IndRNN, the options of LSTM and GRU, the
layer-normalised LSTM and GRU). Double backward does not come here: it differentiates the layer
recomputed in ATen, in C++ (csrc/layer/differentiable.h).

Same arguments as ``torch.ops.rnnkernels.*_layer`` (less ``train``), same packed layout:

- ``input`` ``[N, I]``: time-major packed rows, step ``t`` owns the ``batch_sizes[t]`` rows
  after those of the steps before it, as in :class:`torch.nn.utils.rnn.PackedSequence`;
- ``batch_sizes`` ``[T]``: int64 on the CPU, non-increasing;
- ``h0`` ``[B, P]``, ``c0`` ``[B, H]``; ``w_ih`` ``[G*H, I]``, ``w_hh`` ``[G*H, P]`` (IndRNN's
  ``[H]``), ``b_ih``/``b_hh`` ``[G*H]`` or None, ``w_hr`` ``[P, H]`` or None, the layer norms'
  ``ln_w_ih``/``ln_w_hh`` ``[G*H]``, ``ln_w_c``/``ln_b_c`` ``[H]``; gate order as torch.nn.

Each returns ``output`` ``[N, P]`` and the final states (``[B, P]``, ``[B, H]``): a sequence's
final state is the one after its own last step. ``reverse`` runs from the last step to the first;
a sequence then starts from the initial state at its own last step.
"""

import functools

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


def _scan(input, batch_sizes, states, reverse, cell, row_inputs=()):
    """Runs ``cell(x_rows, [state[:rows] ...], *row_input_rows) -> (out_rows, [new_state_rows
    ...])`` over the steps; inactive rows keep their state. ``row_inputs``: tensors with a row per
    packed row, as ``input`` (None passes as None). Returns the packed output and the final
    states."""
    outputs = {}
    for offset, rows in _steps(batch_sizes, reverse):
        extra = [None if r is None else r[offset : offset + rows] for r in row_inputs]
        out, new = cell(input[offset : offset + rows], [s[:rows] for s in states], *extra)
        states = [torch.cat([n, s[rows:]]) for n, s in zip(new, states)]
        outputs[offset] = out
    output = torch.cat([outputs[k] for k in sorted(outputs)])
    return output, states


# The options of LSTM and GRU (README, "LSTM and GRU options"), each off by default:
# - w_ch [3H] = (p_i, p_f, p_o), peepholes (LSTM): i = sigmoid(pre_i + p_i c_{t-1}),
#   f = sigmoid(pre_f + p_f c_{t-1}), o = sigmoid(pre_o + p_o c_t);
# - cell_clip (LSTM): c_t clamped to [-cell_clip, cell_clip] before h_t = o tanh(c_t);
# - zoneout, cell_zoneout (LSTM's c): the state keeps its previous value with weight d, the rows
#   of zoneout_mask / cell_zoneout_mask [N, H] (0 or 1: training), or the probability where the
#   mask is None (its expectation: eval), zoneout(d, previous, new) below; for the LSTM the new h
#   is o tanh(c_t) of the new cell before its zoneout, and o's peephole reads that cell;
# - recurrent_mask [B, P] (recurrent dropout): h_{t-1} times the mask's rows enters the
#   recurrent GEMM, the carried state stays as it is.


def _zoneout(mask, probability, previous, new):
    """``d * previous + (1 - d) * new``, ``d`` the mask's rows, else the probability."""
    if mask is None and probability == 0:
        return new
    d = probability if mask is None else mask
    return d * previous + (1 - d) * new


def _recurrent_input(h, recurrent_mask):
    """h_{t-1} as the recurrent GEMM takes it: times the mask's first rows, where there is one."""
    return h if recurrent_mask is None else h * recurrent_mask[: h.shape[0]]


def _lstm_update(gates, c, w_ch=None):
    """The LSTM's new cell from its gates' pre-activations ``[rows, 4H]`` (i, f, g, o) and c_{t-1}:
    ``(o, c_t)``, c_t = f * c_{t-1} + i * g, i and f reading c_{t-1} through the peepholes
    ``w_ch`` where given, o still a pre-activation (its peephole reads the final c_t)."""
    i, f, g, o = gates.chunk(4, 1)
    if w_ch is not None:
        p_i, p_f, _ = w_ch.chunk(3)
        i, f = i + p_i * c, f + p_f * c
    return o, torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)


def lstm_layer(input, batch_sizes, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None,
               reverse=False, *, w_ch=None, cell_clip=None, zoneout=0.0, cell_zoneout=0.0,
               zoneout_mask=None, cell_zoneout_mask=None, recurrent_mask=None):
    """Returns ``output [N, P], h_n [B, P], c_n [B, H]``; the options are described above."""

    def cell(x, state, kept_h, kept_c):
        h, c = state
        gates = (F.linear(x, w_ih, b_ih)
                 + F.linear(_recurrent_input(h, recurrent_mask), w_hh, b_hh))
        o, new_c = _lstm_update(gates, c, w_ch)
        if cell_clip is not None:
            new_c = new_c.clamp(-cell_clip, cell_clip)
        if w_ch is not None:
            o = o + w_ch.chunk(3)[2] * new_c
        new_h = torch.sigmoid(o) * torch.tanh(new_c)
        if w_hr is not None:
            new_h = new_h @ w_hr.t()
        h = _zoneout(kept_h, zoneout, h, new_h)
        return h, [h, _zoneout(kept_c, cell_zoneout, c, new_c)]

    output, (h_n, c_n) = _scan(input, batch_sizes, [h0, c0], reverse, cell,
                               [zoneout_mask, cell_zoneout_mask])
    return output, h_n, c_n


def gru_layer(input, batch_sizes, h0, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False, *,
              zoneout=0.0, zoneout_mask=None, recurrent_mask=None):
    """Returns ``output [N, H], h_n [B, H]``; the options are described above."""

    def cell(x, state, kept):
        (h,) = state
        new_h = _gru_update(F.linear(x, w_ih, b_ih),
                            F.linear(_recurrent_input(h, recurrent_mask), w_hh, b_hh), h)
        h = _zoneout(kept, zoneout, h, new_h)
        return h, [h]

    output, (h_n,) = _scan(input, batch_sizes, [h0], reverse, cell, [zoneout_mask])
    return output, h_n


def _gru_update(input_side, hidden_side, h):
    """The GRU's h_t from its input side (xr, xz, xn) and hidden side (hr, hz, hn), ``[rows, 3H]``
    each, and h_{t-1}."""
    xr, xz, xn = input_side.chunk(3, 1)
    hr, hz, hn = hidden_side.chunk(3, 1)
    r = torch.sigmoid(xr + hr)
    z = torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h


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


def _normalised(x, weight, gain, shift):
    """``LN(x W^T; gain, shift)``, the layer norm over all of a row's values, torch.nn.LayerNorm's
    eps; ``shift`` None adds none (a bias after the norm is a shift)."""
    return F.layer_norm(F.linear(x, weight), (weight.shape[0],), gain, shift, eps=1e-5)


def layernorm_lstm_layer(input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, ln_w_ih, ln_w_hh,
                         ln_w_c, ln_b_c, reverse=False, *, zoneout=0.0, cell_zoneout=0.0,
                         zoneout_mask=None, cell_zoneout_mask=None):
    """Layer-normalised LSTM (Ba et al. 2016): ``gates = LN(x W_ih^T; ln_w_ih) + b_ih +
    LN(h_{t-1} W_hh^T; ln_w_hh) + b_hh`` (each norm over all 4H values of a row), ``c~ = f *
    c_{t-1} + i * g``, ``h~ = o * tanh(LN(c~; ln_w_c, ln_b_c))``, then zoneout as the LSTM's
    (above): ``c_t = zoneout(d_c, c_{t-1}, c~)``, ``h_t = zoneout(d_h, h_{t-1}, h~)``; ``b_ih``,
    ``b_hh`` may be None. Returns ``output [N, H], h_n [B, H], c_n [B, H]``."""

    def cell(x, state, kept_h, kept_c):
        h, c = state
        gates = _normalised(x, w_ih, ln_w_ih, b_ih) + _normalised(h, w_hh, ln_w_hh, b_hh)
        o, new_c = _lstm_update(gates, c)
        new_h = torch.sigmoid(o) * torch.tanh(F.layer_norm(new_c, new_c.shape[1:], ln_w_c, ln_b_c,
                                                           eps=1e-5))
        h = _zoneout(kept_h, zoneout, h, new_h)
        return h, [h, _zoneout(kept_c, cell_zoneout, c, new_c)]

    output, (h_n, c_n) = _scan(input, batch_sizes, [h0, c0], reverse, cell,
                               [zoneout_mask, cell_zoneout_mask])
    return output, h_n, c_n


def layernorm_gru_layer(input, batch_sizes, h0, w_ih, w_hh, b_ih, b_hh, ln_w_ih, ln_w_hh,
                        reverse=False, *, zoneout=0.0, zoneout_mask=None):
    """Layer-normalised GRU: ``(xr, xz, xn) = LN(x W_ih^T; ln_w_ih) + b_ih``, ``(hr, hz, hn) =
    LN(h_{t-1} W_hh^T; ln_w_hh) + b_hh`` (each norm over all 3H values of a row), then the GRU's
    equations for h~ and zoneout as the GRU's (above), ``h_t = zoneout(d_h, h_{t-1}, h~)``;
    ``b_ih``, ``b_hh`` may be None. Returns ``output [N, H], h_n [B, H]``."""

    def cell(x, state, kept):
        (h,) = state
        input_side = _normalised(x, w_ih, ln_w_ih, b_ih)
        new_h = _gru_update(input_side, _normalised(h, w_hh, ln_w_hh, b_hh), h)
        h = _zoneout(kept, zoneout, h, new_h)
        return h, [h]

    output, (h_n,) = _scan(input, batch_sizes, [h0], reverse, cell, [zoneout_mask])
    return output, h_n


# ---------------------------------------------------------------------------------------------
# Multi-layer forms, with the arguments and results of rnnkernels.functional's.


def _stack(layer, input, states, weights, bias, num_layers, dropout, training, bidirectional,
           batch_first, batch_sizes, extras=None, names=(), **options):
    """Runs ``layer(rows, batch_sizes, *states, *params, reverse=..., **options, **extras of k)
    -> (out, *new_states)``, a layer function of this module, over layers and directions as
    torch.nn does, with dropout between layers; ``states`` are ``[L*D, B, *]``, ``params`` a
    layer and direction's ``w_ih, w_hh, b_ih, b_hh`` (None without bias) and the cell's own that
    follow them in ``weights``; ``extras`` (where given) per layer and direction ``k`` keyword
    arguments by ``names``. A padded input's step sizes are a list of ints, so that tracing sees
    no tensor contents."""
    directions = 2 if bidirectional else 1
    per_layer = len(weights) // (num_layers * directions)
    common = 4 if bias else 2
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
            biases = params[2:4] if bias else [None, None]
            out, *new = layer(rows, sizes, *[s[k] for s in states], *params[:2], *biases,
                              *params[common:], reverse=direction == 1, **options,
                              **({} if extras is None else dict(zip(names, extras[k]))))
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
         bidirectional=False, batch_first=False, batch_sizes=None, *, extras=None,
         cell_clip=None, zoneout=0.0, cell_zoneout=0.0):
    """Multi-layer LSTM as ``rnnkernels.functional.lstm``, and with the options above as
    ``functional.lstm_ext``: ``extras`` per layer and direction ``(w_ch, zoneout_mask,
    cell_zoneout_mask, recurrent_mask)``, None where absent. Returns ``(output, (h_n, c_n))``."""
    output, (h_n, c_n) = _stack(lstm_layer, input, list(hx), weights, bias, num_layers, dropout,
                                training, bidirectional, batch_first, batch_sizes, extras,
                                ("w_ch", "zoneout_mask", "cell_zoneout_mask", "recurrent_mask"),
                                cell_clip=cell_clip, zoneout=zoneout, cell_zoneout=cell_zoneout)
    return output, (h_n, c_n)


def gru(input, hx, weights, bias=True, num_layers=1, dropout=0.0, training=False,
        bidirectional=False, batch_first=False, batch_sizes=None, *, extras=None, zoneout=0.0):
    """Multi-layer GRU as ``rnnkernels.functional.gru``, and with the options above as
    ``functional.gru_ext``: ``extras`` per layer and direction ``(zoneout_mask,
    recurrent_mask)``, None where absent. Returns ``(output, h_n)``."""
    output, (h_n,) = _stack(gru_layer, input, [hx], weights, bias, num_layers, dropout, training,
                            bidirectional, batch_first, batch_sizes, extras,
                            ("zoneout_mask", "recurrent_mask"), zoneout=zoneout)
    return output, h_n


def indrnn(input, hx, weights, nonlinearity="relu", bias=True, num_layers=1, dropout=0.0,
           training=False, bidirectional=False, batch_first=False, batch_sizes=None):
    """Multi-layer IndRNN as ``rnnkernels.functional.indrnn``. Returns ``(output, h_n)``."""
    output, (h_n,) = _stack(functools.partial(indrnn_layer, nonlinearity=nonlinearity), input,
                            [hx], weights, bias, num_layers, dropout, training, bidirectional,
                            batch_first, batch_sizes)
    return output, h_n


def layernorm_lstm(input, hx, weights, bias=True, num_layers=1, dropout=0.0, training=False,
                   bidirectional=False, batch_first=False, batch_sizes=None, *, extras=None,
                   zoneout=0.0, cell_zoneout=0.0):
    """Multi-layer layer-normalised LSTM as ``rnnkernels.functional.layernorm_lstm``: ``extras``
    per layer and direction ``(zoneout_mask, cell_zoneout_mask)``, None where absent. Returns
    ``(output, (h_n, c_n))``."""
    output, (h_n, c_n) = _stack(layernorm_lstm_layer, input, list(hx), weights, bias, num_layers,
                                dropout, training, bidirectional, batch_first, batch_sizes,
                                extras, ("zoneout_mask", "cell_zoneout_mask"), zoneout=zoneout,
                                cell_zoneout=cell_zoneout)
    return output, (h_n, c_n)


def layernorm_gru(input, hx, weights, bias=True, num_layers=1, dropout=0.0, training=False,
                  bidirectional=False, batch_first=False, batch_sizes=None, *, extras=None,
                  zoneout=0.0):
    """Multi-layer layer-normalised GRU as ``rnnkernels.functional.layernorm_gru``: ``extras``
    per layer and direction ``(zoneout_mask,)``, None where absent. Returns ``(output, h_n)``."""
    output, (h_n,) = _stack(layernorm_gru_layer, input, [hx], weights, bias, num_layers, dropout,
                            training, bidirectional, batch_first, batch_sizes, extras,
                            ("zoneout_mask",), zoneout=zoneout)
    return output, h_n
