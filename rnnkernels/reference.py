"""Plain PyTorch references of the layer operators: the test oracle, and the differentiable
path for double backward.

Same arguments as ``torch.ops.rnnkernels.*_layer`` (less ``train``), same packed layout:

- ``input`` ``[N, I]``: time-major packed rows, step ``t`` owns the ``batch_sizes[t]`` rows
  after those of the steps before it, as in :class:`torch.nn.utils.rnn.PackedSequence`;
- ``batch_sizes`` ``[T]``: int64 on the CPU, non-increasing;
- ``h0`` ``[B, P]``, ``c0`` ``[B, H]``; ``w_ih`` ``[G*H, I]``, ``w_hh`` ``[G*H, P]``,
  ``b_ih``/``b_hh`` ``[G*H]`` or None, ``w_hr`` ``[P, H]`` or None; gate order as torch.nn.

Each returns ``output`` ``[N, P]`` and the final states (``[B, P]``, ``[B, H]``): a sequence's
final state is the one after its own last step. ``reverse`` runs from the last step to the first;
a sequence then starts from the initial state at its own last step.
"""

import torch
import torch.nn.functional as F


def _steps(batch_sizes, reverse):
    """(offset, rows) of every step, in the order the direction visits them."""
    sizes = [int(s) for s in batch_sizes.tolist()]
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


def rnn_layer(input, batch_sizes, h0, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh",
              reverse=False):
    """Returns ``output [N, H], h_n [B, H]``; ``nonlinearity`` is ``"tanh"`` or ``"relu"``."""
    activation = {"tanh": torch.tanh, "relu": torch.relu}[nonlinearity]

    def cell(x, state):
        (h,) = state
        h = activation(F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh))
        return h, [h]

    output, (h_n,) = _scan(input, batch_sizes, [h0], reverse, cell)
    return output, h_n
